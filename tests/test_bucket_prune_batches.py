"""`prune -r` on a bucket plans from the tree's one listing and deletes in batches across run
directories (issue 26, item 7), against moto's S3 server (its request log is the witness: the
client is never patched) and the GCS emulator. What is deleted is what TensorFlow's own state
files say `--keep-last 2` leaves, every index goes before any data (a pause at that point shows no
index without its data), an interrupted batch is finished by the next run, and TensorFlow loads
every run's latest afterwards."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid

import pytest

from tests.conftest import run_cli
from tests.remote_servers import BUCKET, start_s3, upload_tree
from tests.test_remote import servers  # noqa: F401 - a fixture (the suite's S3 server and GCS emulator)

RUNS = ("run-a", "run-b", "run-c")


@pytest.fixture(scope="module")
def logged_s3(servers):  # noqa: F811
    """An S3 server of this module's own, whose request log the tests read (the suite's servers
    first, so that the environment put back afterwards is theirs)."""
    server = start_s3(count_requests=True)
    saved = dict(os.environ)
    os.environ.update(server.env)
    from ckpttool.storage import remote
    remote.set_storage_options({})  # forget backends made for another endpoint
    yield server
    os.environ.clear()
    os.environ.update(saved)
    remote.set_storage_options({})
    server.stop()


def _requests_of(server, action) -> list[str]:
    """The request lines the server answered while `action()` ran."""
    before = len(server.settled_log())
    action()
    return server.settled_log()[before:]


def _fleet(fixtures_dir, tmp_path, server) -> tuple[str, dict[str, set[str]]]:
    """Three copies of TF's CheckpointManager run (six saves) in a fresh prefix; its URL, and per
    run what TensorFlow's own state file says `--keep-last 2` deletes (every save but the last two)."""
    import tensorflow as tf

    local = tmp_path / "runs"
    for run in RUNS:
        shutil.copytree(fixtures_dir / "tf2_many", local / run)
    url = upload_tree(server, str(local), f"fleet-{uuid.uuid4().hex[:8]}")
    expected = {}
    for run in RUNS:
        saves = tf.train.get_checkpoint_state(str(local / run)).all_model_checkpoint_paths
        expected[run] = {os.path.basename(p) for p in saves[:-2]}
    return url, expected


def _keys(server, url: str) -> set[str]:
    from ckpttool.storage import remote

    fs = remote.filesystem(server.protocol)
    root = remote.split_url(url)[1]
    return {name[len(root) + 1:] for name in fs.find(root, refresh=True) if not name.endswith("/")}


def _expected_keys(fixtures_dir, expected: dict[str, set[str]]) -> set[str]:
    names = sorted(os.listdir(fixtures_dir / "tf2_many"))
    return {f"{run}/{n}" for run in RUNS for n in names
            if not any(n.startswith(prefix + ".") for prefix in expected[run])}


def _assert_tf_loads_latest(server, url: str, tmp_path, tf) -> None:
    """Each run downloaded: TensorFlow finds its newest save and reads the variable's value at it
    (six saves, each adding one)."""
    from ckpttool.storage import remote

    fs = remote.filesystem(server.protocol)
    for run in RUNS:
        local = tmp_path / f"down-{uuid.uuid4().hex[:6]}" / run
        fs.get(remote.split_url(url)[1] + f"/{run}/", str(local) + "/", recursive=True)
        latest = tf.train.latest_checkpoint(str(local))
        assert os.path.basename(latest) == "ckpt-6"
        reader = tf.train.load_checkpoint(latest)
        values = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("module/v/")]
        assert [v.tolist() for v in values] == [[6.0, 6.0, 6.0]]


def _prune_as_tensorflow_says(server, fixtures_dir, url, expected, *args) -> list[str]:
    """`prune ARGS --yes --json`: it succeeds and deletes exactly `expected` (per run, from
    TensorFlow's state files); the request lines the server answered meanwhile."""
    result = {}
    lines = _requests_of(server, lambda: result.update(doc=run_cli("prune", *args, "--yes", "--json")))
    assert result["doc"].exit_code == 0, result["doc"].stderr
    deleted = {d["directory"].rsplit("/", 1)[-1]: {x["name"] for x in d["deleted"]}
               for d in result["doc"].json()["directories"]}
    assert deleted == expected
    assert _keys(server, url) == _expected_keys(fixtures_dir, expected)
    return lines


def test_recursive_prune_deletes_in_batches_what_tensorflow_says(logged_s3, fixtures_dir, tmp_path, tf):
    url, expected = _fleet(fixtures_dir, tmp_path, logged_s3)
    lines = _prune_as_tensorflow_says(logged_s3, fixtures_dir, url, expected, "-r", "--keep-last", "2", url)
    # One tree listing, no run directory listed again; deletions in batches across the three runs:
    # the indexes and the data (the journals are carried in the locks; one by one, it would be 12
    # checkpoints' worth).
    listings = [line for line in lines if "list-type=2" in line]
    assert len([line for line in listings if "delimiter=&" in line or line.endswith("delimiter= HTTP/1.1")]) == 1
    assert not any(f"prefix={url.split('/', 3)[3]}/run-" in line for line in listings), listings
    # The indexes, the data, then the three locks: one DeleteObjects each.
    assert sum("?delete" in line for line in lines) == 3, lines
    assert not any(line.startswith("PUT ") and ".ckpttool-prune.journal" in line for line in lines), lines
    # Each run directory beyond the listing: its state file read (planning), then as it is applied
    # its newest index read (is its data whole?), its lock made and its state file rewritten; no
    # object looked at twice, no HEAD, no lock removed one by one.
    newest = os.path.basename(tf.train.latest_checkpoint(str(fixtures_dir / "tf2_many")))
    for run in RUNS:
        run_path = f"/{url.split('://', 1)[1]}/{run}/"
        mine = sorted(f"{method} {target.removeprefix(run_path)}" for method, target, *_ in
                      (line.split(" ") for line in lines) if target.startswith(run_path))
        assert mine == sorted(["GET checkpoint", f"GET {newest}.index", "PUT .ckpttool.lock", "PUT checkpoint"]), mine
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)


def test_a_batch_interrupted_after_its_indexes_shows_no_half_checkpoint(logged_s3, fixtures_dir, tmp_path, tf):
    """Killed right after the batch of indexes: every planned index is gone and every data file is
    still there (no index without its data), TensorFlow restores each run's latest, and the next
    run finishes from the journals (the dead run's locks are broken: same host, process gone)."""
    url, expected = _fleet(fixtures_dir, tmp_path, logged_s3)
    env = {**os.environ, "CKPTTOOL_TEST_PAUSE": "prune: removed the indexes"}
    proc = subprocess.Popen([sys.executable, "-m", "ckpttool", "prune", "-r", "--yes", "--keep-last", "2", url],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stderr.readline()
        assert line == "paused: prune: removed the indexes\n", line + proc.stderr.read()
        keys = _keys(logged_s3, url)
        for run in RUNS:
            for name in expected[run]:
                assert f"{run}/{name}.index" not in keys
                assert f"{run}/{name}.data-00000-of-00001" in keys
            indexes = {k[:-len(".index")] for k in keys if k.startswith(run + "/") and k.endswith(".index")}
            assert all(f"{prefix}.data-00000-of-00001" in keys for prefix in indexes)
            assert f"{run}/.ckpttool.lock" in keys  # carrying the run's journal (no journal object of its own)
            assert f"{run}/.ckpttool-prune.journal" not in keys
        _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
        proc.stderr.close()
    again = run_cli("prune", "-r", "--yes", "--json", "--keep-last", "2", url)
    assert again.exit_code == 0, again.stderr
    assert _keys(logged_s3, url) == _expected_keys(fixtures_dir, expected)
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)


def test_a_state_file_changed_since_planned_is_scanned_again(logged_s3, fixtures_dir, tmp_path):
    """A writer saved between plan and apply (its state file now lists ckpt-7): the conditional
    rewrite is refused, that run directory is scanned again under its lock, and the writer's entry
    survives; the others are batched as planned."""
    from ckpttool.formats.tf.state import format_state, read_state
    from ckpttool.ops.retention.batches import apply_prunes
    from ckpttool.ops.retention.prune import plan_prune
    from ckpttool.ops.retention.rules import RetentionRules
    from ckpttool.storage import remote

    url, expected = _fleet(fixtures_dir, tmp_path, logged_s3)
    rules = RetentionRules(2, None, None, (), None, None, False)
    plans = [plan_prune(f"{url}/{run}", rules) for run in RUNS]
    assert all(p.batchable for p in plans)
    fs = remote.filesystem("s3")
    root = remote.split_url(url)[1]
    for suffix in (".index", ".data-00000-of-00001"):
        fs.pipe_file(f"{root}/run-b/ckpt-7{suffix}", fs.cat_file(f"{root}/run-b/ckpt-6{suffix}"))
    state = read_state(f"{url}/run-b")
    from dataclasses import replace
    state = replace(state, model_checkpoint_path="ckpt-7",
                    all_model_checkpoint_paths=(*state.all_model_checkpoint_paths, "ckpt-7"),
                    all_model_checkpoint_timestamps=(*state.all_model_checkpoint_timestamps,
                                                     state.all_model_checkpoint_timestamps[-1] + 1))
    fs.pipe_file(f"{root}/run-b/checkpoint", format_state(state).encode())
    results = apply_prunes(plans)
    assert not any(isinstance(r, Exception) for r in results), results
    assert [{d.name for d in r.deleted} for r in results] == [expected[run] for run in RUNS]
    after = read_state(f"{url}/run-b")
    assert after.model_checkpoint_path.endswith("ckpt-7")
    assert [os.path.basename(p) for p in after.all_model_checkpoint_paths] == ["ckpt-5", "ckpt-6", "ckpt-7"]


def test_recursive_prune_on_the_gcs_emulator(servers, fixtures_dir, tmp_path, tf):  # noqa: F811
    """GCS: gcsfs deletes a list through the JSON batch API (one run directory's keys at a time:
    its state file cannot be rewritten on a condition gcsfs passes, so each run is scanned again
    under its lock); the result is the same as on S3."""
    gcs = servers["gs"]
    url, expected = _fleet(fixtures_dir, tmp_path, gcs)
    doc = run_cli("prune", "-r", "--yes", "--json", "--keep-last", "2", url)
    assert doc.exit_code == 0, doc.stderr
    assert {d["directory"].rsplit("/", 1)[-1]: {x["name"] for x in d["deleted"]}
            for d in doc.json()["directories"]} == expected
    assert _keys(gcs, url) == _expected_keys(fixtures_dir, expected)
    _assert_tf_loads_latest(gcs, url, tmp_path, tf)


def _checkpoint_bytes(local_run, names) -> int:
    """Bytes of checkpoints `names` of a local run directory, by os.stat (index, data shards)."""
    return sum(os.stat(os.path.join(local_run, f)).st_size for f in os.listdir(local_run)
               if any(f.startswith(name + ".") for name in names) and not f.endswith(".meta"))


def test_budget_weighs_each_run_by_its_plan_with_no_second_listing(logged_s3, fixtures_dir, tmp_path):
    """`prune -r --budget` on a bucket: the one tree listing serves the plans and the budget (no
    run directory listed on its own), and the budget takes the oldest of what the rules keep, across
    runs, until the bytes (os.stat of the copies uploaded) fit."""
    url, expected = _fleet(fixtures_dir, tmp_path, logged_s3)
    local = tmp_path / "runs"
    kept = {run: {f"ckpt-{step}" for step in (5, 6)} for run in RUNS}  # what --keep-last 2 leaves (TF's state)
    assert all(expected[run] | kept[run] == {f"ckpt-{s}" for s in range(1, 7)} for run in RUNS)
    before = sum(_checkpoint_bytes(local / run, kept[run]) for run in RUNS)
    one = _checkpoint_bytes(local / RUNS[0], {"ckpt-5"})  # every run a copy: the same bytes
    result = {}
    lines = _requests_of(logged_s3, lambda: result.update(doc=run_cli(
        "prune", "-r", "--dry-run", "--json", "--keep-last", "2", "--budget", str(before - one), url)))
    doc = result["doc"]
    assert doc.exit_code == 0, doc.stderr
    budget = doc.json()["budget"]
    assert (budget["bytes_before"], budget["bytes_after"], budget["deleted_count"]) == (before, before - one, 1)
    listings = [line for line in lines if "list-type=2" in line]
    assert not any(f"prefix={url.split('/', 3)[3]}/run-" in line for line in listings), listings
    # (a listing with `delimiter=/` is the check that the root is a directory, as `prune DIR` makes)
    assert len([line for line in listings if "delimiter=&" in line or line.endswith("delimiter= HTTP/1.1")]) == 1


def test_a_policy_over_a_bucket_is_planned_from_one_listing_and_deleted_in_batches(logged_s3, fixtures_dir,
                                                                                   tmp_path, tf):
    """`prune --policy` applies as `prune -r` does: a rule naming the directory that holds the runs
    lists it once (no run directory listed again), and the deletions are batched across the runs."""
    url, expected = _fleet(fixtures_dir, tmp_path, logged_s3)
    policy = tmp_path / "retention.toml"
    policy.write_text(f'[[rule]]\npaths = ["{url}"]\nkeep_last = 2\n')
    result = {}
    lines = _requests_of(logged_s3, lambda: result.update(doc=run_cli("prune", "--policy", policy, "--yes", "--json")))
    assert result["doc"].exit_code == 0, result["doc"].stderr
    assert {d["directory"].rsplit("/", 1)[-1]: {x["name"] for x in d["deleted"]}
            for d in result["doc"].json()["directories"]} == expected
    assert _keys(logged_s3, url) == _expected_keys(fixtures_dir, expected)
    listings = [line for line in lines if "list-type=2" in line]
    assert not any(f"prefix={url.split('/', 3)[3]}/run-" in line for line in listings), listings
    assert sum("?delete" in line for line in lines) == 3, lines  # indexes, data, locks: one request each
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)


def test_a_policy_glob_over_runs_lists_their_parent_once(logged_s3, fixtures_dir, tmp_path, tf):
    """A rule whose `paths` names each run directory (`URL/*`) plans them from one recursive listing
    of the directory holding them, not a listing each, and deletes what TensorFlow's state files say."""
    url, expected = _fleet(fixtures_dir, tmp_path, logged_s3)
    policy = tmp_path / "retention.toml"
    policy.write_text(f'[[rule]]\npaths = ["{url}/*"]\nkeep_last = 2\n')
    lines = _prune_as_tensorflow_says(logged_s3, fixtures_dir, url, expected, "--policy", policy)
    listings = [line for line in lines if "list-type=2" in line]
    # the glob's own look at URL (is it a directory, its subdirectories) and one recursive listing
    # of it: none per run
    assert len(listings) == 3 and sum(line.endswith("delimiter=&encoding-type=url HTTP/1.1")
                                      for line in listings) == 1, listings
    assert not any(f"prefix={url.split('/', 3)[3]}/run-" in line for line in listings), listings
    _assert_tf_loads_latest(logged_s3, url, tmp_path, tf)
