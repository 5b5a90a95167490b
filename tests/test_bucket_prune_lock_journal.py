"""A batched bucket prune carries its journal in its lock object's body (one conditional PUT, not a
lock and a journal: issue 26, item 7), against moto's S3 server and TensorFlow's own checkpoints.
Killed at each step of the batched apply, with its locks then left to go stale (their time made
old, their host another), a second prune as if on another host (another host lock directory)
breaks each lock only after writing its journal out, finishes exactly the journal's deletions and
nothing else (a user's file stays), and TensorFlow restores every run's latest; two breakers at
once lose nothing, and a late one never removes the lock the first took."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli
from tests.test_bucket_prune_batches import (RUNS, _assert_tf_loads_latest, _expected_keys, _fleet, _keys,  # noqa: F401
                                             _requests_of, logged_s3)
from tests.test_remote import servers  # noqa: F401 - a fixture (the suite's S3 server and GCS emulator)

STEPS = ("journal written", "state file rewritten", "removed the indexes", "removed the data", "journal removed")
USER_FILES = ("notes.txt", "eval/scores.csv")


def _fs(server):
    from ckpttool.storage import remote

    return remote.filesystem(server.protocol), remote.split_url


def _fleet_with_user_files(fixtures_dir, tmp_path, server) -> tuple[str, dict[str, set[str]], set[str]]:
    """_fleet's three runs, each with files of the user's beside its checkpoints; (URL, what
    TensorFlow's state says --keep-last 2 deletes, the keys that must be left)."""
    url, expected = _fleet(fixtures_dir, tmp_path, server)
    fs, split = _fs(server)
    root = split(url)[1]
    for run in RUNS:
        for name in USER_FILES:
            fs.pipe_file(f"{root}/{run}/{name}", b"the user's\n")
    left = _expected_keys(fixtures_dir, expected) | {f"{run}/{name}" for run in RUNS for name in USER_FILES}
    return url, expected, left


@contextlib.contextmanager
def _paused_at(step: str, *args: str, env: dict[str, str] | None = None):
    """`ckpttool ARGS` stopped by SIGKILL when the block ends, run once it reaches `step` of a prune
    (a pause the CLI offers tests: the process says so and waits), never by a race."""
    env = {**(os.environ if env is None else env), "CKPTTOOL_TEST_PAUSE": f"prune: {step}"}
    proc = subprocess.Popen([sys.executable, "-m", "ckpttool", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert line == f"paused: prune: {step}\n", line + proc.stderr.read()
        yield
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
        proc.stderr.close()


def _killed_at(url: str, step: str) -> None:
    """`prune -r --yes --keep-last 2` stopped by SIGKILL once it reaches `step`."""
    with _paused_at(step, "prune", "-r", "--yes", "--keep-last", "2", url):
        pass


def _make_locks_stale(server, url: str) -> dict[str, set[str]]:
    """Each lock left behind made another host's and older than STALE_REMOTE_LOCK_SECONDS (its
    body otherwise as written); the checkpoint names each one's journal lists, by run."""
    from ckpttool.ops.runs.lock import STALE_REMOTE_LOCK_SECONDS

    fs, split = _fs(server)
    root = split(url)[1]
    journals = {}
    for run in RUNS:
        key = f"{root}/{run}/.ckpttool.lock"
        try:
            holder = json.loads(fs.cat_file(key))
        except FileNotFoundError:
            continue
        holder.update(host="another-host", pid=1, time=time.time() - 2 * STALE_REMOTE_LOCK_SECONDS)
        fs.pipe_file(key, json.dumps(holder).encode())
        journals[run] = {e["name"] for e in holder.get("journal", {}).get("deletions", [])}
    return journals


def _other_host(tmp_path, name: str) -> dict[str, str]:
    """The environment of a run on another host: its own host lock directory."""
    place = tmp_path / name
    place.mkdir()
    return {**os.environ, "TMPDIR": str(place)}


def _prune_elsewhere(tmp_path, name: str, url: str, keep: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ckpttool", "prune", "-r", "--yes", "--json", "--keep-last", keep,
                             url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_other_host(tmp_path, name))


def _assert_nothing_pending(server, url: str) -> None:
    keys = _keys(server, url)
    assert not [k for k in keys if k.endswith((".ckpttool.lock", ".ckpttool-prune.journal"))], keys


def _finished_elsewhere(server, tmp_path, url: str, keep: str, left: set[str], tf) -> str:
    """`prune -r --keep-last KEEP` from another host: it succeeds, exactly `left` stays, no lock or
    journal is left, and TensorFlow restores every run's latest. Its JSON."""
    again = _prune_elsewhere(tmp_path, "host-b", url, keep)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert _keys(server, url) == left
    _assert_nothing_pending(server, url)
    _assert_tf_loads_latest(server, url, tmp_path, tf)
    return out


def test_a_batched_prune_writes_no_journal_object(logged_s3, fixtures_dir, tmp_path, tf):  # noqa: F811
    """Per run directory: the lock (carrying the journal), the state file; the deletions batched,
    then the locks removed together (no lock left, none removed one by one). What goes is what
    TensorFlow's state files say --keep-last 2 leaves."""
    url, expected, left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    result = {}
    lines = _requests_of(logged_s3, lambda: result.update(
        doc=run_cli("prune", "-r", "--yes", "--json", "--keep-last", "2", url)))
    assert result["doc"].exit_code == 0, result["doc"].stderr
    assert _keys(logged_s3, url) == left
    puts = [line for line in lines if line.startswith("PUT ")]
    assert len([p for p in puts if ".ckpttool.lock" in p]) == len(RUNS), puts
    assert not [p for p in puts if ".ckpttool-prune.journal" in p], puts
    assert not [line for line in lines if line.startswith("DELETE ")], lines
    assert sum("?delete" in line for line in lines) == 3, lines  # the indexes, the data, the locks
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_each_step_then_finished_from_another_host(logged_s3, fixtures_dir, tmp_path, tf, step):  # noqa: F811
    url, expected, left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    _killed_at(url, step)
    journals = _make_locks_stale(logged_s3, url)
    assert journals, "the killed prune left no lock"
    assert all(journals[run] == expected[run] for run in journals), journals
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)  # at the instant of the kill too
    _finished_elsewhere(logged_s3, tmp_path, url, "2", left, tf)


def test_the_journal_is_finished_even_where_the_rules_would_keep_all(logged_s3, fixtures_dir, tmp_path, tf):  # noqa: F811
    """Killed with the indexes gone: a prune from another host whose rules keep every checkpoint
    (--keep-last 6) still finishes the journal's half-deleted checkpoints (their data, nothing
    else), and keeps what its rules keep."""
    url, expected, left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    _killed_at(url, "removed the indexes")
    journals = _make_locks_stale(logged_s3, url)
    assert journals == expected
    out = _finished_elsewhere(logged_s3, tmp_path, url, "6", left, tf)
    resumed = {d["directory"].rsplit("/", 1)[-1]: {x["name"] for x in d["deleted"] if x["kind"] == "resumed"}
               for d in json.loads(out)["directories"]}
    assert resumed == expected


def test_two_breakers_at_once_lose_nothing(logged_s3, fixtures_dir, tmp_path, tf):  # noqa: F811
    url, expected, left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    _killed_at(url, "removed the indexes")
    assert _make_locks_stale(logged_s3, url) == expected
    first, second = (_prune_elsewhere(tmp_path, name, url, "2") for name in ("host-b", "host-c"))
    for proc in (first, second):
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert _keys(logged_s3, url) == left
    _assert_nothing_pending(logged_s3, url)
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)


def test_a_late_breaker_never_removes_the_lock_the_first_took(logged_s3, fixtures_dir, tmp_path):  # noqa: F811
    """Two runs read the same stale lock; the first breaks it (its journal written out first) and
    takes the lock anew; the second, breaking the version it read, removes nothing (S3 If-Match),
    and the journal is written out once, whole."""
    from ckpttool.ops.runs import lock
    from ckpttool.storage import remote

    url, expected, _left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    _killed_at(url, "removed the indexes")
    _make_locks_stale(logged_s3, url)
    run_url = f"{url}/{RUNS[0]}"
    lock_url = f"{run_url}/.ckpttool.lock"
    first = lock._read_holder(remote, lock_url)
    second = lock._read_holder(remote, lock_url)
    assert first == second and first[1] is not None
    lock._break(remote, run_url, lock_url, *first)
    taken = remote.write_whole(lock_url, b'{"host": "first", "token": "x"}', create_only=True)
    lock._break(remote, run_url, lock_url, *second)
    assert remote.read_tagged(lock_url, 1 << 16, "lock object") == (b'{"host": "first", "token": "x"}', taken)
    fs, split = _fs(logged_s3)
    journal = json.loads(fs.cat_file(split(run_url)[1] + "/.ckpttool-prune.journal"))
    assert sorted(e["name"] for e in journal["deletions"]) == sorted(expected[RUNS[0]])


def test_a_lock_broken_by_a_run_that_does_not_prune_keeps_its_journal(logged_s3, fixtures_dir, tmp_path, tf):  # noqa: F811
    """Any run may break a stale lock (repair and --drop-failed-runs take the same one), with no
    plan that read its journal: the journal is written out as the journal object before the lock
    goes, and the next prune (whose rules keep every checkpoint) finishes exactly it."""
    from ckpttool.ops.runs.lock import directory_lock

    url, expected, left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    _killed_at(url, "removed the indexes")
    assert _make_locks_stale(logged_s3, url) == expected
    for run in RUNS:
        with directory_lock(f"{url}/{run}", timeout=60):
            pass
    fs, split = _fs(logged_s3)
    root = split(url)[1]
    for run in RUNS:
        journal = json.loads(fs.cat_file(f"{root}/{run}/.ckpttool-prune.journal"))
        assert {e["name"] for e in journal["deletions"]} == expected[run]
    _finished_elsewhere(logged_s3, tmp_path, url, "6", left, tf)


def test_a_journal_that_appeared_since_planned_is_never_replaced(logged_s3, fixtures_dir, tmp_path, tf):  # noqa: F811
    """A run killed between our plan and our apply left a journal (written out of the stale lock we
    break, or its own): applying our plan would replace it with ours, so it is refused (nothing
    deleted, that journal as it was); the next prune finishes it first."""
    from ckpttool.errors import Refused
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules

    url, expected, left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    run_url = f"{url}/{RUNS[0]}"
    plan = plan_prune(run_url, RetentionRules(2, None, None, (), None, None, False))
    fs, split = _fs(logged_s3)
    journal = json.dumps({"deletions": [{"name": "ckpt-1", "step": 1, "paths": ["ckpt-1.index"]}]}).encode()
    fs.pipe_file(split(run_url)[1] + "/.ckpttool-prune.journal", journal)
    before = _keys(logged_s3, url)
    with pytest.raises(Refused, match="appeared"):
        apply_prune(plan)
    assert _keys(logged_s3, url) == before
    assert fs.cat_file(split(run_url)[1] + "/.ckpttool-prune.journal") == journal
    _finished_elsewhere(logged_s3, tmp_path, url, "2", left, tf)


def test_a_journal_left_under_a_lock_listed_when_planned_is_never_replaced(logged_s3, fixtures_dir, tmp_path,
                                                                          tf):  # noqa: F811
    """Our plan lists a stale lock of an earlier version (no journal in it). Before we apply, another
    prune (--keep-last 1) breaks it, journals and removes ckpt indexes, and is killed: its journal
    object names more than our plan (--keep-last 2). Applying ours must not replace that journal
    (the killed run's half-deleted checkpoint, its index gone, would stay for ever): refused,
    nothing deleted; the next prune finishes it, and exactly the killed run's deletions go."""
    import tensorflow as tf_module

    from ckpttool.errors import Refused
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules

    url, expected, _left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    run_url = f"{url}/{RUNS[0]}"
    fs, split = _fs(logged_s3)
    lock_key = split(run_url)[1] + "/.ckpttool.lock"
    fs.pipe_file(lock_key, json.dumps({"host": "another-host", "pid": 1, "time": 0, "token": "old"}).encode())
    plan = plan_prune(run_url, RetentionRules(2, None, None, (), None, None, False))
    assert {d.name for d in plan.deleted} == expected[RUNS[0]]
    with _paused_at("removed the indexes", "prune", "--yes", "--keep-last", "1", run_url,
                    env=_other_host(tmp_path, "host-c")):
        pass
    _make_locks_stale(logged_s3, url)
    saves = [os.path.basename(p) for p in
             tf_module.train.get_checkpoint_state(str(fixtures_dir / "tf2_many")).all_model_checkpoint_paths]
    journal_key = split(run_url)[1] + "/.ckpttool-prune.journal"
    journal = fs.cat_file(journal_key)
    assert {e["name"] for e in json.loads(journal)["deletions"]} == set(saves[:-1])
    with pytest.raises(Refused, match="appeared"):
        apply_prune(plan)
    assert fs.cat_file(journal_key) == journal
    left = (_expected_keys(fixtures_dir, {**expected, RUNS[0]: set(saves[:-1])})
            | {f"{run}/{name}" for run in RUNS for name in USER_FILES})
    _finished_elsewhere(logged_s3, tmp_path, url, "2", left, tf)


HOSTILE_JOURNALS = {
    "not a journal": "x",
    "a list": [],
    "another run's file": {"deletions": [{"name": "ckpt-1", "paths": ["../run-b/ckpt-1.index"]}]},
    "a URL elsewhere": {"deletions": [{"name": "ckpt-1", "paths": ["s3://ckpt-bucket/elsewhere/ckpt-1.index"]}]},
    "the state file": {"deletions": [{"name": "checkpoint", "paths": ["checkpoint"]}]},
    "a user's file": {"deletions": [{"name": "notes.txt", "paths": ["notes.txt"]}]},
    "a user's directory": {"deletions": [{"name": "eval", "paths": ["eval"]}]},
    "the latest": {"deletions": [{"name": "ckpt-6", "paths": ["ckpt-6.index"]}]},
    "dot-dot": {"deletions": [{"name": "..", "paths": [".."]}]},
    "the lock": {"deletions": [{"name": ".ckpttool.lock", "paths": [".ckpttool.lock"]}]},
}


@pytest.mark.parametrize("what", sorted(HOSTILE_JOURNALS))
def test_a_stale_lock_carrying_a_hostile_journal_deletes_nothing_of_its_run(logged_s3, fixtures_dir, tmp_path, tf,
                                                                            what):  # noqa: F811
    """A stale lock whose body carries a journal naming what no prune deletes (outside the run
    directory, the state file, a user's files, the latest, the lock itself) or no journal at all:
    that run directory is skipped with one line (exit 3), nothing of it deleted, the others pruned
    as TensorFlow's state files say, and TensorFlow restores every run's latest."""
    url, expected, left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    fs, split = _fs(logged_s3)
    root = split(url)[1]
    holder = {"host": "another-host", "pid": 1, "time": 0, "token": "t", "journal": HOSTILE_JOURNALS[what]}
    fs.pipe_file(f"{root}/{RUNS[0]}/.ckpttool.lock", json.dumps(holder).encode())
    before = {k for k in _keys(logged_s3, url) if k.startswith(f"{RUNS[0]}/")}
    doc = run_cli("prune", "-r", "--yes", "--json", "--keep-last", "2", url)
    assert doc.exit_code == 3, doc.stderr
    assert "refusing to resume it (nothing deleted)" in doc.stderr and "Traceback" not in doc.stderr, doc.stderr
    assert _keys(logged_s3, url) == (left - {k for k in left if k.startswith(f"{RUNS[0]}/")}) | before
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)


def test_a_lock_stays_readable_to_earlier_versions(logged_s3, tmp_path, tf):  # noqa: F811
    """Versions before the journal in the lock read at most 64 KiB of a lock object and break a
    larger one at once, live or not (a second prune acting on the run directory meanwhile). A
    batched prune whose journal is larger (108 deletions of 200-character names, TensorFlow's
    CheckpointManager's saves) keeps its lock within that, the journal an object of its own;
    killed there, it is finished from another host to what TensorFlow's state file keeps."""
    import uuid

    import numpy as np

    from ckpttool.ops.runs.lock import LOCK_MAX_BYTES
    from tests.remote_servers import upload_tree

    variable = tf.Variable(np.zeros(3, np.float32))
    local = tmp_path / "runs" / RUNS[0]
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(local), max_to_keep=None,
                                         checkpoint_name="x" * 200)
    for step in range(1, 111):
        variable.assign(np.full(3, step, np.float32))
        manager.save(checkpoint_number=step)
    url = upload_tree(logged_s3, str(tmp_path / "runs"), f"earlier-{uuid.uuid4().hex[:8]}")
    kept = [os.path.basename(p) for p in tf.train.get_checkpoint_state(str(local)).all_model_checkpoint_paths[-2:]]
    fs, split = _fs(logged_s3)
    run_key = f"{split(url)[1]}/{RUNS[0]}"
    with _paused_at("journal written", "prune", "-r", "--yes", "--keep-last", "2", url):
        lock = fs.cat_file(f"{run_key}/.ckpttool.lock")
        journal = json.loads(fs.cat_file(f"{run_key}/.ckpttool-prune.journal"))
    assert len(lock) <= LOCK_MAX_BYTES and "journal" not in json.loads(lock)
    assert len(journal["deletions"]) == 108 and len(json.dumps(journal)) > LOCK_MAX_BYTES
    _make_locks_stale(logged_s3, url)
    again = _prune_elsewhere(tmp_path, "host-b", url, "2")
    _out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    left = {k.rsplit("/", 1)[-1] for k in _keys(logged_s3, url)}
    assert left == {"checkpoint"} | {f"{name}{suffix}" for name in kept
                                     for suffix in (".index", ".data-00000-of-00001")}
    down = tmp_path / "down"
    fs.get(run_key + "/", str(down) + "/", recursive=True)
    restored = tf.Variable(np.zeros(3, np.float32))
    tf.train.Checkpoint(v=restored).read(tf.train.latest_checkpoint(str(down))).assert_existing_objects_matched()
    assert (restored.numpy() == 110).all()


def _journal_names(server, url: str, key: str, journal_of) -> dict[str, set[str]]:
    """The checkpoint names a journal lists in each run directory's object `key` (where there is
    one), by run; `journal_of(document)` is the journal in that object's JSON."""
    fs, split = _fs(server)
    found = {}
    for run in RUNS:
        try:
            document = json.loads(fs.cat_file(f"{split(url)[1]}/{run}/{key}"))
        except FileNotFoundError:
            continue
        found[run] = {e["name"] for e in journal_of(document).get("deletions", [])}
    return found


def _carried_journals(server, url: str) -> dict[str, set[str]]:
    """What the lock object of each run directory carries in its journal, by run."""
    return _journal_names(server, url, ".ckpttool.lock", lambda holder: holder.get("journal", {}))


def _journal_objects(server, url: str) -> dict[str, set[str]]:
    return _journal_names(server, url, ".ckpttool-prune.journal", lambda journal: journal)


def test_a_failed_request_in_a_batch_writes_each_journal_out_before_its_lock_goes(logged_s3, fixtures_dir,  # noqa: F811
                                                                                  tmp_path, tf):
    """A request failing after the batch's indexes went (a fault raised there: the data were never
    deleted): each run's journal is written out as its journal object before its lock is removed
    (removing the lock alone would lose the only record of the half-deleted checkpoints); the next
    prune, from another host, finishes them and nothing else."""
    from ckpttool.ops.retention.batches import apply_prunes
    from ckpttool.ops.retention.prune import plan_prune
    from ckpttool.ops.retention.rules import RetentionRules

    url, expected, left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    rules = RetentionRules(2, None, None, (), None, None, False)
    plans = [plan_prune(f"{url}/{run}", rules, whole_check_at_apply=True) for run in RUNS]
    assert all(p.batchable and p.whole_unchecked for p in plans)

    def fail(step: str) -> None:
        if step == "removed the indexes":
            raise OSError("the network went away")

    results = apply_prunes(plans, fail)
    assert all(isinstance(r, OSError) for r in results), results
    assert _carried_journals(logged_s3, url) == {}  # every lock removed
    assert _journal_objects(logged_s3, url) == expected
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)
    _finished_elsewhere(logged_s3, tmp_path, url, "2", left, tf)


def test_an_interrupt_in_a_batch_leaves_each_lock_with_its_journal(logged_s3, fixtures_dir, tmp_path, tf):  # noqa: F811
    """SIGINT once the batch's indexes are gone: the run unwinds (exit 130) but leaves each lock,
    with the journal it carries (no request more on the way out); once stale, a prune from another
    host finishes exactly those deletions."""
    url, expected, left = _fleet_with_user_files(fixtures_dir, tmp_path, logged_s3)
    env = {**os.environ, "CKPTTOOL_TEST_PAUSE": "prune: removed the indexes"}
    proc = subprocess.Popen([sys.executable, "-m", "ckpttool", "prune", "-r", "--yes", "--keep-last", "2", url],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    line = proc.stderr.readline()
    assert line == "paused: prune: removed the indexes\n", line + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    proc.stdin.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, err
    proc.stderr.close()
    assert _carried_journals(logged_s3, url) == expected
    assert _journal_objects(logged_s3, url) == {}
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)
    assert _make_locks_stale(logged_s3, url) == expected
    _finished_elsewhere(logged_s3, tmp_path, url, "2", left, tf)


def test_locks_are_removed_together_only_while_young_and_never_anothers(logged_s3, tmp_path):  # noqa: F811
    """release_locks: young locks of ours go in one DeleteObjects; one held longer than
    BATCH_RELEASE_SECONDS goes by a DELETE conditional on the ETag our create returned, so that a
    lock another run took since (ours broken as stale) stays."""
    import dataclasses
    import uuid

    from ckpttool.ops.runs import lock
    from tests.test_bucket_prune_batches import _requests_of

    fs, split = _fs(logged_s3)
    root = f"locks-{uuid.uuid4().hex[:8]}"
    urls = [logged_s3.url(root, run) for run in RUNS]
    for url in urls:
        fs.pipe_file(f"{split(url)[1]}/notes.txt", b"the user's\n")
    held: list = []
    for url in urls:
        with lock.directory_lock(url, timeout=0, held=held):
            pass
    assert [h.directory for h in held] == urls
    assert all(fs.exists(f"{split(url)[1]}/.ckpttool.lock") for url in urls)  # left for release_locks
    lines = [line for line in _requests_of(logged_s3, lambda: lock.release_locks(held[:2])) if "/settle-" not in line]
    assert [line.split(" ")[0] for line in lines] == ["POST"] and "?delete" in lines[0], lines
    fs.invalidate_cache()
    assert [fs.exists(f"{split(url)[1]}/.ckpttool.lock") for url in urls] == [False, False, True]
    # The third, held "long": another run broke it and took the lock anew meanwhile.
    another = b'{"host": "another", "pid": 1, "token": "theirs"}'
    fs.pipe_file(f"{split(urls[2])[1]}/.ckpttool.lock", another)
    old = dataclasses.replace(held[2], taken=held[2].taken - lock.BATCH_RELEASE_SECONDS)
    lines = [line for line in _requests_of(logged_s3, lambda: lock.release_locks([old])) if "/settle-" not in line]
    assert [line.split(" ")[0] for line in lines] == ["DELETE"], lines
    assert fs.cat_file(f"{split(urls[2])[1]}/.ckpttool.lock") == another
    assert all(fs.cat_file(f"{split(url)[1]}/notes.txt") == b"the user's\n" for url in urls)
