"""prune and repair on directories written by TensorFlow: exact retention,
TensorFlow restores the latest afterwards, crash and concurrency safety."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from ckpttool.formats.tf.state import CheckpointState, read_state, write_state
from tests.conftest import assert_one_line_error, run_cli

STEPS = list(range(100, 1001, 100))
HOUR = 3600.0


def names(steps, family="model.ckpt"):
    return {f"{family}-{s}" for s in steps}


def on_disk(directory) -> set[str]:
    return {p[: -len(".index")] for p in os.listdir(directory) if p.endswith(".index")}


def set_times(directory, start: float, spacing: float):
    """Give the state file's checkpoints save times start, start+spacing, ..."""
    state = read_state(str(directory))
    stamps = tuple(start + i * spacing for i in range(len(state.all_model_checkpoint_paths)))
    write_state(str(directory), CheckpointState(state.model_checkpoint_path, state.all_model_checkpoint_paths,
                                                stamps, state.last_preserved_timestamp))


def assert_tf_restores_latest(tf, directory, expected_name):
    latest = tf.train.latest_checkpoint(str(directory))
    assert latest is not None and os.path.basename(latest) == expected_name
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
    return latest


def restore_with_saver(tf, prefix):
    """A TF1 Saver restores the checkpoint into a fresh graph."""
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        v1.train.import_meta_graph(prefix + ".meta").restore(v1.Session(), prefix)


def prune(directory, *args):
    return run_cli("prune", "--yes", "--json", directory, *args)


@pytest.mark.parametrize("args,kept_steps", [
    (["--keep-last", "3"], [800, 900, 1000]),
    (["--keep-every-steps", "300"], [300, 600, 900, 1000]),
    (["--keep-step", "200", "--keep-step", "500"], [200, 500, 1000]),
    (["--keep-every-hours", "1.5"], [100, 400, 700, 1000]),
    (["--min-age", "2h"], [700, 800, 900, 1000]),
    (["--keep-last", "2", "--keep-every-steps", "500"], [500, 900, 1000]),
    (["--keep-last", "0"], [1000]),
])
def test_rules_keep_exactly(copy_fixture, tf, args, kept_steps):
    run = copy_fixture("prune_run")
    now = time.time()
    set_times(run, now - 9 * 0.5 * HOUR - 0.25 * HOUR, 0.5 * HOUR)  # every 30 min; newest 15 min old
    result = prune(run, *args)
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    expected_model = names(kept_steps)
    model_on_disk = {n for n in on_disk(run) if n.startswith("model.")}
    assert model_on_disk == expected_model
    assert {d["name"] for d in doc["deleted"] if d["name"].startswith("model.")} == names(STEPS) - expected_model
    latest = assert_tf_restores_latest(tf, run, "model.ckpt-1000")
    restore_with_saver(tf, latest)
    state = read_state(str(run))
    assert state.all_model_checkpoint_paths == tuple(sorted(expected_model & set(state.all_model_checkpoint_paths),
                                                            key=lambda n: int(n.rsplit("-", 1)[1])))
    assert all(not os.path.isabs(p) for p in state.all_model_checkpoint_paths)
    assert len(state.all_model_checkpoint_timestamps) == len(state.all_model_checkpoint_paths)
    assert doc["freed_bytes"] == sum(d["size_bytes"] for d in doc["deleted"])


def test_families_judged_on_their_own(copy_fixture):
    run = copy_fixture("prune_run")
    doc = prune(run, "--keep-last", "1").json()
    assert on_disk(run) == {"model.ckpt-1000", "best.ckpt-700"}
    assert "best.ckpt-300" in {d["name"] for d in doc["deleted"]}


def test_latest_of_another_state_file_is_kept(copy_fixture, tf):
    """best_checkpoint (Saver(latest_filename=...)) names best.ckpt-700: no rule may delete it."""
    run = copy_fixture("prune_run")
    doc = prune(run, "--keep-every-steps", "1000").json()
    assert on_disk(run) == {"model.ckpt-1000", "best.ckpt-700"}
    assert ["latest in best_checkpoint"] == next(k["reasons"] for k in doc["kept"] if k["name"] == "best.ckpt-700")
    assert os.path.basename(tf.train.latest_checkpoint(str(run), latest_filename="best_checkpoint")) == "best.ckpt-700"


def test_no_rule_is_usage_error(copy_fixture):
    run = copy_fixture("prune_run")
    result = run_cli("prune", "--yes", run)
    assert_one_line_error(result, 2)
    assert on_disk(run) == names(STEPS) | {"best.ckpt-300", "best.ckpt-700"}


def test_orphans_judged_by_the_same_rules(copy_fixture, tf):
    run = copy_fixture("prune_run")
    state = read_state(str(run))
    # A restarted job: the state file lists only the last two.
    write_state(str(run), CheckpointState("model.ckpt-1000", ("model.ckpt-900", "model.ckpt-1000")))
    prune(run, "--keep-last", "4", "--keep-step", "100")
    assert {n for n in on_disk(run) if n.startswith("model.")} == names([100, 700, 800, 900, 1000])
    assert state is not None
    assert_tf_restores_latest(tf, run, "model.ckpt-1000")


def test_entries_outside_are_reported_never_followed(copy_fixture, tmp_path, tf):
    run = copy_fixture("prune_run")
    outside = tmp_path / "outside"
    outside.mkdir()
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(run / f"model.ckpt-100{suffix}", outside / f"x{suffix}")
    # A symlinked checkpoint file pointing outside is never followed nor deleted through.
    os.symlink(outside / "x.index", run / "model.ckpt-50.index")
    state = read_state(str(run))
    write_state(str(run), CheckpointState(state.model_checkpoint_path,
                                          ("../outside/x", str(outside / "x")) + state.all_model_checkpoint_paths))
    doc = prune(run, "--keep-last", "1").json()
    assert (outside / "x.index").exists() and (outside / "x.data-00000-of-00001").exists()
    assert os.path.islink(run / "model.ckpt-50.index")
    assert {p["kind"] for p in doc["problems"]} >= {"outside"}
    assert_tf_restores_latest(tf, run, "model.ckpt-1000")


def test_dry_run_deletes_nothing(copy_fixture):
    run = copy_fixture("prune_run")
    before = sorted(os.listdir(run))
    result = run_cli("prune", "--dry-run", "--keep-last", "2", "--json", run)
    assert result.exit_code == 0 and result.json()["dry_run"] is True
    assert len(result.json()["deleted"]) == 8  # best.ckpt has only two: both kept
    assert sorted(os.listdir(run)) == before
    human = run_cli("prune", "--dry-run", "--keep-last", "2", run)
    assert "would delete" in human.stdout


def test_not_interactive_without_yes_refuses(copy_fixture):
    run = copy_fixture("prune_run")
    before = sorted(os.listdir(run))
    result = run_cli("prune", "--keep-last", "2", run)
    assert_one_line_error(result, 4)
    assert sorted(os.listdir(run)) == before


def _reading_its_terminal(pid: int) -> bool:
    """Whether process `pid` is blocked in read(0, ...): Linux's /proc/PID/syscall gives the system
    call's number (read: 0 on x86-64, 63 on arm64) and its arguments; without it, the prompt's text
    is all there is to go by."""
    try:
        with open(f"/proc/{pid}/syscall") as handle:
            fields = handle.read().split()
    except OSError:
        return True
    return len(fields) > 1 and fields[0] in ("0", "63") and fields[1] == "0x0"


def _answer_prompt(run, answer: bytes) -> tuple[bytes, int]:
    """Run an interactive prune on a real pty, wait for its prompt, type `answer`; (output, exit code)."""
    output, code = on_a_terminal(["prune", "--keep-last", "1", str(run)], answer)
    assert b"[y/N]" in output, output
    return output, code


def on_a_terminal(argv: list[str], answer: bytes | None = None, env: dict | None = None) -> tuple[bytes, int]:
    """Run `ckpttool ARGV` on a real pty (stdin, stdout and stderr a terminal); with `answer`, wait
    for its prompt and type it. (everything it wrote, exit code)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: stdin/stdout/stderr are the pty, as in a terminal
        os.execve(sys.executable, [sys.executable, "-m", "ckpttool", *argv], {**os.environ, **(env or {})})
    output = b""
    deadline = time.time() + 60
    while answer is not None and b"[y/N]: " not in output and time.time() < deadline:
        try:
            output += os.read(fd, 4096)
        except OSError:
            break
    # The key is typed once the prompt is blocked reading the terminal: a Ctrl-C landing while the
    # prompt's text is still being written only trips Python's handler, which runs at the next
    # bytecode, and input()'s read then waits for a key that never comes (the test hung once).
    while answer is not None and time.time() < deadline and not _reading_its_terminal(pid):
        time.sleep(0.005)
    if answer is not None:
        os.write(fd, answer)
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _pid, status = os.waitpid(pid, 0)
    os.close(fd)
    return output, os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("answer,deleted", [("y", True), ("n", False)])
def test_interactive_confirmation(copy_fixture, answer, deleted):
    run = copy_fixture("prune_run")
    _output, code = _answer_prompt(run, f"{answer}\n".encode())
    assert (on_disk(run) == {"model.ckpt-1000", "best.ckpt-700"}) == deleted
    assert code == (0 if deleted else 1)


@pytest.mark.parametrize("key,code", [(b"\x03", 130), (b"\x04", 1)], ids=["ctrl-c", "ctrl-d"])
def test_ctrl_c_or_ctrl_d_at_the_prompt_does_nothing(copy_fixture, sigint_reaches_children, key, code):
    """Ctrl-C at the prompt is an interrupt (exit 130), Ctrl-D an answer of no (exit 1); neither is a bug."""
    run = copy_fixture("prune_run")
    before = sorted(os.listdir(run))
    output, exit_code = _answer_prompt(run, key)
    assert exit_code == code, output
    assert b"nothing done" in output and b"Traceback" not in output and b"internal error" not in output, output
    assert sorted(os.listdir(run)) == before


def _stems(directory) -> set[str]:
    import re

    bookkeeping = {"checkpoint", "best_checkpoint", ".ckpttool.lock"}
    return {re.sub(r"\.(index|meta|data-\d{5}-of-\d{5})$", "", p) for p in os.listdir(directory)} - bookkeeping


def _expected_after_keep_last_2():
    return names([900, 1000]) | {"best.ckpt-300", "best.ckpt-700"}


def test_injected_failure_after_every_file_operation(fixtures_dir, tmp_path, tf):
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules

    rules = RetentionRules(keep_last=2)
    operations = []
    probe = tmp_path / "probe"
    shutil.copytree(fixtures_dir / "prune_run", probe)
    apply_prune(plan_prune(str(probe), rules), fault=operations.append)
    assert len(operations) > 20

    class Crash(Exception):
        pass

    for k in range(len(operations)):
        run = tmp_path / f"crash{k}"
        shutil.copytree(fixtures_dir / "prune_run", run)
        seen = []

        def fault(step):
            seen.append(step)
            if len(seen) == k + 1:
                raise Crash(step)

        with pytest.raises(Crash):
            apply_prune(plan_prune(str(run), rules), fault=fault)
        assert_tf_restores_latest(tf, run, "model.ckpt-1000")
        result = prune(run, "--keep-last", "2")
        assert result.exit_code == 0, result.stderr
        assert on_disk(run) == _expected_after_keep_last_2(), (k, seen[-1])
        assert not (run / ".ckpttool-prune.journal").exists()
        assert _stems(run) == _expected_after_keep_last_2()  # no stray .meta or data file of a pruned one
        assert_tf_restores_latest(tf, run, "model.ckpt-1000")


def _many_checkpoint_dir(fixtures_dir, directory, count):
    """`count` copies of one TF checkpoint with a state file listing them (CheckpointManager style)."""
    directory.mkdir()
    source = fixtures_dir / "prune_run" / "model.ckpt-1000"
    for step in range(1, count + 1):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(f"{source}{suffix}", directory / f"ckpt-{step}{suffix}")
    now = time.time()
    write_state(str(directory), CheckpointState(f"ckpt-{count}", tuple(f"ckpt-{i}" for i in range(1, count + 1)),
                                                tuple(now - count + i for i in range(1, count + 1)), now - count))


def test_sigkill_at_random_moments(fixtures_dir, tmp_path, tf):
    rng = random.Random(7)
    for attempt in range(24):
        run = tmp_path / f"kill{attempt}"
        _many_checkpoint_dir(fixtures_dir, run, 150)
        proc = subprocess.Popen([sys.executable, "-m", "ckpttool", "prune", "--yes", "--keep-last", "5", str(run)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.45))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_tf_restores_latest(tf, run, "ckpt-150")
        assert prune(run, "--keep-last", "5").exit_code == 0
        assert on_disk(run) == {f"ckpt-{i}" for i in range(146, 151)}
        assert_tf_restores_latest(tf, run, "ckpt-150")


def test_two_prunes_at_once_are_serialised(fixtures_dir, tmp_path):
    run = tmp_path / "twice"
    _many_checkpoint_dir(fixtures_dir, run, 120)
    cmd = [sys.executable, "-m", "ckpttool", "prune", "--yes", "--keep-last", "3", str(run)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert on_disk(run) == {"ckpt-118", "ckpt-119", "ckpt-120"}
    assert read_state(str(run)).all_model_checkpoint_paths == ("ckpt-118", "ckpt-119", "ckpt-120")



@pytest.mark.parametrize("vanishes_after_look", [1, 2])
def test_plan_beside_a_running_prune_whose_files_vanish(fixtures_dir, tmp_path, monkeypatch, vanishes_after_look):
    """A second prune plans without the lock while the first deletes what its journal lists, so a
    file the plan has just seen can be gone a moment later (test_two_prunes_at_once_are_serialised
    met this in 1 run of 5: exit 3 "No such file or directory"). Reproduced exactly: each journal
    file vanishes right after the plan's first or second lstat of it."""
    import json
    import types

    from ckpttool.ops.retention import prune
    from ckpttool.ops.retention.rules import RetentionRules

    run = tmp_path / "busy"
    _many_checkpoint_dir(fixtures_dir, run, 6)
    journal = {"deletions": [{"name": "ckpt-1", "step": 1,
                              "paths": ["ckpt-1.index", "ckpt-1.data-00000-of-00001"]}]}
    (run / ".ckpttool-prune.journal").write_text(json.dumps(journal))  # the running prune's
    looks: dict[str, int] = {}
    seen_then_deleted: list[str] = []

    def lstat_then_deleted_by_the_other_prune(path, *args, **kwargs):
        result = os.lstat(path, *args, **kwargs)
        base = os.path.basename(path)
        if base.startswith("ckpt-1."):
            looks[base] = looks.get(base, 0) + 1
            if looks[base] == vanishes_after_look:
                os.remove(path)
                seen_then_deleted.append(base)
        return result

    planning_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    planning_os.lstat = lstat_then_deleted_by_the_other_prune
    monkeypatch.setattr(prune, "os", planning_os)
    plan = prune.plan_prune(str(run), RetentionRules(keep_last=3))
    assert "ckpt-1.index" in seen_then_deleted and not (run / "ckpt-1.index").exists()  # the race happened
    monkeypatch.setattr(prune, "os", os)
    prune.apply_prune(plan)
    assert on_disk(run) == {"ckpt-4", "ckpt-5", "ckpt-6"}
    assert read_state(str(run)).all_model_checkpoint_paths == ("ckpt-4", "ckpt-5", "ckpt-6")


WRITER = textwrap.dedent("""
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    v1 = tf.compat.v1
    directory, count = sys.argv[1], int(sys.argv[2])
    with tf.Graph().as_default(), v1.Session() as sess:
        step = v1.train.get_or_create_global_step()
        w = v1.get_variable("w", initializer=np.zeros(1000, np.float32))
        bump = [v1.assign_add(step, 1), v1.assign_add(w, tf.ones_like(w))]
        saver = v1.train.Saver(max_to_keep=10000, save_relative_paths=True)
        sess.run(v1.global_variables_initializer())
        for _ in range(count):
            sess.run(bump)
            saver.save(sess, os.path.join(directory, "model.ckpt"), global_step=step, write_meta_graph=False)
            time.sleep(0.01)
    print("WRITER DONE")
""")


def test_prune_while_tensorflow_keeps_writing(tmp_path, tf):
    run = tmp_path / "live"
    run.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run), "120"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    prunes = 0
    try:
        while writer.poll() is None:
            result = run_cli("prune", "--yes", "--keep-last", "2", run)
            assert result.exit_code == 0, result.stderr
            prunes += 1
            latest = tf.train.latest_checkpoint(str(run))
            if latest:
                # the writer's newest checkpoint restores: its files are all there
                tf.train.load_checkpoint(latest).get_tensor("w")
    finally:
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0 and "WRITER DONE" in out, err[-2000:]
    assert prunes >= 3
    assert_tf_restores_latest(tf, run, "model.ckpt-120")
    assert prune(run, "--keep-last", "2").exit_code == 0
    assert on_disk(run) == {"model.ckpt-119", "model.ckpt-120"}


def test_checkpoint_manager_keeps_working_after_prune(copy_fixture, tf):
    run = copy_fixture("tf2_many")
    doc = prune(run, "--keep-last", "2").json()
    assert {d["name"] for d in doc["deleted"]} == {"ckpt-1", "ckpt-2", "ckpt-3", "ckpt-4"}
    state = read_state(str(run))
    assert state.all_model_checkpoint_paths == ("ckpt-5", "ckpt-6")
    assert len(state.all_model_checkpoint_timestamps) == 2
    module = tf.Module()
    module.v = tf.Variable(np.zeros(3, np.float32))
    ckpt = tf.train.Checkpoint(module=module)
    manager = tf.train.CheckpointManager(ckpt, str(run), max_to_keep=2)
    ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    np.testing.assert_array_equal(module.v.numpy(), np.full(3, 6.0))
    manager.save()
    manager.save()
    assert [os.path.basename(p) for p in manager.checkpoints] == ["ckpt-7", "ckpt-8"]
    assert on_disk(run) == {"ckpt-7", "ckpt-8"}  # the manager swept ckpt-5 and ckpt-6 itself


def test_clean_removes_old_debris_only(copy_fixture):
    run = copy_fixture("prune_run")
    old = time.time() - 3 * HOUR
    shutil.copy(run / "model.ckpt-100.data-00000-of-00001", run / "model.ckpt-1100.data-00000-of-00001")
    shutil.copy(run / "model.ckpt-100.data-00000-of-00001", run / "model.ckpt-1200.data-00000-of-00001")
    # Interrupted in TensorFlow's merge window: data shards and a half-written index (its head only).
    (run / "model.ckpt-1100.index").write_bytes((run / "model.ckpt-100.index").read_bytes()[:40])
    (run / "model.ckpt-1200.index").write_bytes((run / "model.ckpt-100.index").read_bytes()[:40])
    for name in ("model.ckpt-1100.data-00000-of-00001", "model.ckpt-1100.index"):
        os.utime(run / name, (old, old))
    for name, mtime in (("model.ckpt-1300_temp", old), ("model.ckpt-1400_temp", None)):
        (run / name).mkdir()
        (run / name / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
        if mtime:
            os.utime(run / name / "part-00000-of-00001.data-00000-of-00001", (mtime, mtime))
            os.utime(run / name, (mtime, mtime))
    doc = prune(run, "--keep-last", "20", "--clean", "--min-age", "1h").json()
    assert {d["name"] for d in doc["deleted"]} == {"model.ckpt-1100", "model.ckpt-1300_temp"}
    assert not (run / "model.ckpt-1100.data-00000-of-00001").exists() and not (run / "model.ckpt-1300_temp").exists()
    assert not (run / "model.ckpt-1100.index").exists()
    assert (run / "model.ckpt-1200.data-00000-of-00001").exists() and (run / "model.ckpt-1400_temp").exists()
    without_clean = prune(run, "--keep-last", "20").json()
    assert without_clean["deleted"] == []


def test_recursive(fixtures_dir, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(fixtures_dir / "prune_run", root / "a" / "run1")
    shutil.copytree(fixtures_dir / "tf2_many", root / "b")
    shutil.copytree(fixtures_dir / "tf2_saved_model", root / "sm")
    doc = run_cli("prune", "--yes", "--json", "--recursive", "--keep-last", "1", root).json()
    assert len(doc["directories"]) == 2
    assert on_disk(root / "b") == {"ckpt-6"}
    assert {n for n in on_disk(root / "a" / "run1")} == {"model.ckpt-1000", "best.ckpt-700"}
    assert (root / "sm" / "model" / "variables" / "variables.index").exists()


def test_repair_after_move_makes_tensorflow_work(copy_fixture, tmp_path, tf):
    run = copy_fixture("saver_run")
    state = read_state(str(run))
    old_home = tmp_path / "old-home"
    write_state(str(run), CheckpointState(str(old_home / "model.ckpt-50"),
                                          tuple(str(old_home / os.path.basename(p))
                                                for p in state.all_model_checkpoint_paths)))
    moved = tmp_path / "moved"
    shutil.move(str(run), moved)
    assert tf.train.latest_checkpoint(str(moved)) is None
    # an orphan from a restarted job, and an entry whose files are gone
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(moved / f"model.ckpt-30{suffix}", moved / f"model.ckpt-35{suffix}")
    os.remove(moved / "model.ckpt-40.index")
    os.remove(moved / "model.ckpt-40.data-00000-of-00001")
    old_text = (moved / "checkpoint").read_text()
    dry = run_cli("repair", "--dry-run", moved)
    assert dry.exit_code == 0 and 'model_checkpoint_path: "model.ckpt-50"' in dry.stdout
    assert (moved / "checkpoint").read_text() == old_text
    doc = run_cli("repair", "--json", moved).json()
    assert doc["changed"] and (moved / "checkpoint.bak").read_text() == old_text
    new_state = read_state(str(moved))
    assert new_state.all_model_checkpoint_paths == ("model.ckpt-30", "model.ckpt-35", "model.ckpt-50")
    latest = assert_tf_restores_latest(tf, moved, "model.ckpt-50")
    restore_with_saver(tf, latest)
    again = run_cli("repair", "--json", moved).json()
    assert again["changed"] is False


def test_repair_sets_latest_when_recorded_one_is_gone(copy_fixture, tf):
    run = copy_fixture("tf2_manager")
    for name in os.listdir(run):
        if name.startswith("ckpt-3."):
            os.remove(run / name)
    assert run_cli("repair", run).exit_code == 0
    assert_tf_restores_latest(tf, run, "ckpt-2")
    state = read_state(str(run))
    assert state.all_model_checkpoint_paths == ("ckpt-2",) and len(state.all_model_checkpoint_timestamps) == 1


def test_repair_without_state_file(copy_fixture, tf):
    run = copy_fixture("prune_run")
    os.remove(run / "checkpoint")
    assert run_cli("repair", run).exit_code == 0
    latest = tf.train.latest_checkpoint(str(run))
    assert latest is not None
