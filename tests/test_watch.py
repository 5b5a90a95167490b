"""`ckpttool watch` (issue 27 items 1-4) against real writers: tf.train.CheckpointManager and Keras'
ModelCheckpoint write checkpoints in a subprocess (tests/watch_writer.py, paced by the test) while
watch runs; the --exec command restores each checkpoint with TensorFlow or Keras (through the
restorer below, which lives in this process so that TensorFlow is imported once) and the test holds
what it restored against what the writer wrote. Killed with SIGKILL and restarted, watch repeats
nothing and skips nothing. Buckets on moto's S3 server. Every wait is on a readiness condition:
a line read from a pipe, a request that arrives."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.test_remote import servers  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parent.parent


def environment(**extra: str) -> dict[str, str]:
    """For the processes a test starts: this process's (the bucket servers' settings are made at run
    time), with this worktree first on the import path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}
    if "CKPTTOOL_TEST_PAUSE" not in extra:
        env.pop("CKPTTOOL_TEST_PAUSE", None)
    return env

# The command given to --exec: hands the checkpoint to the restorer and exits with its verdict.
CLIENT = """\
import json, os, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sock.sendall(json.dumps({"path": sys.argv[2], "step": int(sys.argv[3]),
                         "env": [os.environ["CKPTTOOL_CHECKPOINT"], os.environ["CKPTTOOL_STEP"]]}).encode() + b"\\n")
answer = json.loads(sock.makefile().readline())
print("restored", sys.argv[3], answer["ok"], flush=True)
sys.exit(0 if answer["ok"] else 1)
"""


class Restorer:
    """Restores each checkpoint a client names, with TensorFlow (`tf`) or Keras (`keras`), while the
    client (the watched command) waits; keeps (step, path, digest or error) per request, in order."""

    def __init__(self, tmp_path: Path, kind: str):
        self.kind = kind
        self.address = str(tmp_path / "restorer.sock")
        self.records: list[dict] = []
        self.arrived = threading.Condition()
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.address)
        self.server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def command(self, tmp_path: Path) -> str:
        client = tmp_path / "client.py"
        client.write_text(CLIENT)
        return f"{sys.executable} {client} {self.address} {{path}} {{step}}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                request = json.loads(connection.makefile().readline())
                record = {"step": request["step"], "path": request["path"], "env": request["env"]}
                try:
                    record["digest"] = self._restore(request["path"])
                except Exception as exc:  # noqa: BLE001 - what failed is the test's finding
                    record["error"] = f"{type(exc).__name__}: {exc}"
                connection.sendall(json.dumps({"ok": "error" not in record}).encode() + b"\n")
            with self.arrived:
                self.records.append(record)
                self.arrived.notify_all()

    def _restore(self, path: str) -> str:
        from tests.watch_writer import ELEMENTS, build_keras_model, weights_digest

        if self.kind == "keras":
            model = build_keras_model()
            model.load_weights(path)
            return weights_digest(model.get_weights())
        import tensorflow as tf

        variable = tf.Variable(tf.zeros([ELEMENTS]))
        tf.train.Checkpoint(v=variable).read(path).assert_existing_objects_matched()
        return weights_digest([variable.numpy()])

    def wait_for(self, count: int) -> list[dict]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.records) >= count, timeout=120), self.records
            return list(self.records)

    def close(self) -> None:
        self.server.close()


class Writer:
    def __init__(self, kind: str, out: Path):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "watch_writer.py"), kind, str(out)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment())
        assert self.proc.stdout.readline() == "ready\n"
        self.digests: dict[int, str] = {}

    def save(self, times: int = 1) -> None:
        self.proc.stdin.write("save\n" * times)
        self.proc.stdin.flush()

    def wait_saved(self, step: int) -> None:
        while step not in self.digests:
            line = self.proc.stdout.readline()
            assert line.startswith("saved "), line
            _, saved, digest = line.split()
            self.digests[int(saved)] = digest

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def start_watch(*args: str, pause: str | None = None) -> subprocess.Popen:
    env = environment(CKPTTOOL_TEST_PAUSE=pause) if pause else environment()
    return subprocess.Popen([sys.executable, "-m", "ckpttool", "watch", *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def read_until(stream, wanted: str) -> list[str]:
    lines = []
    while True:
        line = stream.readline()
        assert line, "".join(lines)  # the process ended before saying it
        lines.append(line)
        if line.startswith(wanted):
            return lines


def read_events(stream, until_step: int) -> list[dict]:
    events = []
    while not events or events[-1]["step"] != until_step:
        line = stream.readline()
        assert line, events
        events.append(json.loads(line))
    return events


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def state_of(path: Path) -> dict:
    return json.loads(path.read_text())


# -- real writers ---------------------------------------------------------------------------------

def test_checkpoint_manager_killed_and_restarted_acts_on_each_once_in_order(tmp_path, tf):
    """CheckpointManager saves 8 MiB checkpoints while watch runs; watch is SIGKILLed just after it
    recorded step 1, checkpoints are written while it is dead, and a restart goes on from step 2:
    every step is restored once, in order, each one what the writer wrote."""
    run, state = tmp_path / "run", tmp_path / "state.json"
    run.mkdir()
    restorer, writer = Restorer(tmp_path, "tf"), Writer("tf", run)
    command = restorer.command(tmp_path)
    try:
        watch = start_watch(run, "--exec", command, "--state", state, "--interval", "0.2", pause="watch-recorded")
        writer.save(2)  # written while watch runs
        read_until(watch.stderr, "paused: watch-recorded")
        watch.kill()  # SIGKILL: no cleanup of any kind
        watch.communicate(timeout=60)
        first = state_of(state)
        assert first["series"]["ckpt"] == {"step": 1, "name": "ckpt-1", "done": 1, "skipped": 0}
        assert first["running"] is None
        writer.save(2)  # steps 3 and 4, while no watch runs
        writer.wait_saved(4)
        watch = start_watch(run, "--exec", command, "--state", state, "--interval", "0.2")
        restorer.wait_for(2)
        writer.save(2)  # steps 5 and 6 while it works through 2..4
        writer.wait_saved(6)
        records = restorer.wait_for(6)
        code, _out, err = stop(watch)
    finally:
        writer.close()
        restorer.close()
    assert code == 143, err
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all("error" not in r for r in records), records
    assert [r["digest"] for r in records] == [writer.digests[s] for s in range(1, 7)]
    assert all(r["path"] == str(run / f"ckpt-{r['step']}") for r in records)
    assert all(r["env"] == [r["path"], str(r["step"])] for r in records)
    final = state_of(state)
    assert final["series"]["ckpt"] == {"step": 6, "name": "ckpt-6", "done": 6, "skipped": 0}


def test_keras_model_checkpoint_files_are_each_restored_once_in_order(tmp_path, tf):
    """ModelCheckpoint writes each epoch's `.weights.h5` in place, while watch runs: Keras loads
    every one watch hands over, and its weights are the writer's after that epoch."""
    run = tmp_path / "run"
    run.mkdir()
    restorer, writer = Restorer(tmp_path, "keras"), Writer("keras", run)
    try:
        watch = start_watch(run, "--exec", restorer.command(tmp_path), "--interval", "0.2", "--json")
        writer.save(2)
        restorer.wait_for(1)
        writer.save(2)
        writer.wait_saved(4)
        records = restorer.wait_for(4)
        events = read_events(watch.stdout, until_step=4)
        code, _out, err = stop(watch, signal.SIGINT)
    finally:
        writer.close()
        restorer.close()
    assert code == 130, err
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all("error" not in r for r in records), records
    assert [r["digest"] for r in records] == [writer.digests[s] for s in range(1, 5)]
    assert [(e["event"], e["step"], e["series"], e["format"]) for e in events] == [
        ("done", s, "w.#.weights.h5", "keras") for s in range(1, 5)]
    assert state_of(run / ".ckpttool-watch.json")["series"]["w.#.weights.h5"]["done"] == 4


# -- buckets ----------------------------------------------------------------------------------------

def _put(servers, url: str, local: Path, *names: str) -> None:
    from ckpttool.storage import remote

    store = remote.filesystem("s3")
    for name in names:
        store.pipe_file(url[len("s3://"):] + "/" + name, (local / name).read_bytes())


def test_a_bucket_is_watched_with_one_listing_per_poll(servers, fixtures_dir, tmp_path, monkeypatch):  # noqa: F811
    from ckpttool.ops.runs.scan import scan_directory
    from ckpttool.ops.runs.watch import WatchState, plan_watch
    from ckpttool.storage import changes, remote
    from tests.test_remote import fresh_prefix

    local = fixtures_dir / "tf2_many"
    url = servers["s3"].url(fresh_prefix("watch"))
    data = lambda n: f"ckpt-{n}.data-00000-of-00001"  # noqa: E731
    _put(servers, url, local, data(1), "ckpt-1.index", data(2))
    # ckpt-2 has its data but not yet its index: not acted on, and nothing after it is either.
    plan = plan_watch(scan_directory(url, changes.bucket_listing(url)[1]), WatchState(url))
    assert [i.name for i in plan.ready] == ["ckpt-1"] and plan.waiting == ("ckpt-2",)

    listings = []
    for name in ("list_tree", "list_directory"):
        original = getattr(remote, name)
        monkeypatch.setattr(remote, name, lambda *a, _o=original, _n=name, **k: listings.append(_n) or _o(*a, **k))
    state = tmp_path / "state.json"
    result = run_cli("watch", url, "--once", "--state", state)
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == ["ckpt-1"]
    assert set(listings) == {"list_tree"}  # the scan reuses the poll's listing
    listings.clear()
    again = run_cli("watch", url, "--once", "--state", state)  # nothing to act on: one poll
    assert (again.exit_code, again.stdout, listings) == (0, "", ["list_tree"])

    # --verify reads every tensor of each checkpoint before acting on it: one acted on too early fails.
    watch = start_watch(url, "--state", state, "--interval", "0.05", "--json", "--verify")
    _put(servers, url, local, "ckpt-2.index")
    first = json.loads(read_until(watch.stdout, '{"schema_version"')[-1])
    _put(servers, url, local, data(3), "ckpt-3.index")
    assert first.get("event") == "checkpoint", (first, watch.stderr.read())
    second = json.loads(read_until(watch.stdout, '{"schema_version"')[-1])
    code, _out, err = stop(watch)
    assert code == 143, err
    assert [(first["event"], first["name"]), (second["event"], second["name"])] == [("checkpoint", "ckpt-2"),
                                                                                    ("checkpoint", "ckpt-3")]
    assert first["path"] == f"{url}/ckpt-2"
    assert state_of(state)["series"]["ckpt"]["step"] == 3


# -- the command line, on copies of TensorFlow's checkpoints ----------------------------------------

@pytest.fixture
def run_dir(copy_fixture):
    return copy_fixture("saver_run")


def _steps(run: Path) -> list[int]:
    from ckpttool.ops.runs.scan import scan_directory

    return [c.step for c in scan_directory(str(run)).checkpoints]


def test_once_prints_one_line_per_checkpoint_then_nothing_more(run_dir, tmp_path):
    steps = _steps(run_dir)
    first = run_cli("watch", run_dir, "--once")
    assert first.exit_code == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert [line["step"] for line in lines] == steps and len(steps) >= 3
    assert all(line["event"] == "checkpoint" and Path(line["path"]).name == line["name"] for line in lines)
    again = run_cli("watch", run_dir, "--once")
    assert again.exit_code == 0 and again.stdout == ""
    since = run_cli("watch", run_dir, "--once", "--since", steps[-1], "--state", tmp_path / "other.json")
    assert [json.loads(line)["step"] for line in since.stdout.splitlines()] == steps[-1:]


def test_placeholders_are_whole_arguments_and_the_shell_only_when_asked(run_dir, tmp_path):
    for path in run_dir.iterdir():  # a name with a space and a quote
        if path.name.startswith("model.ckpt-"):
            path.rename(run_dir / path.name.replace("model.ckpt", "it's a model"))
    (run_dir / "checkpoint").unlink()
    show = f"{sys.executable} -c 'import sys, os; print(sys.argv[1:], os.environ[\"CKPTTOOL_STEP\"])'"
    plain = run_cli("watch", run_dir, "--once", "--state", tmp_path / "a.json", "--exec", show + " {path} {name}x")
    assert plain.exit_code == 0, plain.stderr
    step = _steps(run_dir)[0]
    name = f"it's a model-{step}"
    assert plain.stdout.splitlines()[0] == str([str(run_dir / name), name + "x"]) + f" {step}"
    shelled = run_cli("watch", run_dir, "--once", "--state", tmp_path / "b.json", "--shell",
                      "--exec", show + " {name} | tr a-z A-Z")
    assert shelled.stdout.splitlines()[0] == str([name]).upper() + f" {step}"


def test_failures_stop_skip_or_retry(run_dir, tmp_path):
    steps = _steps(run_dir)
    counter = tmp_path / "calls"
    script = tmp_path / "flaky.py"  # fails on the second checkpoint the first two times it runs on it
    script.write_text("import pathlib, sys\n"
                      f"calls = pathlib.Path({str(counter)!r})\n"
                      "calls.open('a').write(sys.argv[1] + '\\n')\n"
                      "n = calls.read_text().split().count(sys.argv[1])\n"
                      "print('out', n)\n"
                      f"sys.exit(3 if sys.argv[1] == '{steps[1]}' and n <= 2 else 0)\n")
    fail = f"{sys.executable} {script} {{step}}"
    state = tmp_path / "state.json"
    stopped = run_cli("watch", run_dir, "--once", "--state", state, "--exec", fail, "--json")
    assert stopped.exit_code == 1
    events = [json.loads(line) for line in stopped.stdout.splitlines() if line.startswith("{")]
    assert [(e["event"], e["step"]) for e in events] == [("done", steps[0]), ("failed", steps[1])]
    assert events[1]["exit_status"] == 3 and events[1]["output_tail"] == "out 1"
    assert state_of(state)["series"]["model.ckpt"]["step"] == steps[0]  # tried again by the next run
    retried = run_cli("watch", run_dir, "--once", "--state", state, "--exec", fail, "--on-failure", "retry:1",
                      "--interval", "0.01")
    assert retried.exit_code == 0, retried.stderr
    assert counter.read_text().split() == [str(s) for s in [steps[0], steps[1], steps[1], *steps[1:]]]
    assert state_of(state)["series"]["model.ckpt"] == {"step": steps[-1], "name": f"model.ckpt-{steps[-1]}",
                                                       "done": len(steps), "skipped": 0}
    counter.unlink()
    skipped = run_cli("watch", run_dir, "--once", "--state", tmp_path / "skip.json", "--exec", fail,
                      "--on-failure", "skip")
    assert skipped.exit_code == 1
    assert counter.read_text().split() == [str(s) for s in steps]
    mark = state_of(tmp_path / "skip.json")["series"]["model.ckpt"]
    assert (mark["done"], mark["skipped"]) == (len(steps) - 1, 1)


def test_a_checkpoint_pruned_before_its_turn_is_skipped_with_a_warning(run_dir, tmp_path):
    steps = _steps(run_dir)
    prune_next = (f"{sys.executable} -c 'import glob, os, sys; [os.remove(f) for f in "
                  f"glob.glob(sys.argv[1] + \"/model.ckpt-{steps[1]}.*\")]' {{directory}}")
    result = run_cli("watch", run_dir, "--once", "--state", tmp_path / "s.json", "--exec", prune_next)
    assert result.exit_code == 1
    assert f"model.ckpt-{steps[1]} was removed before its turn" in result.stderr
    mark = state_of(tmp_path / "s.json")["series"]["model.ckpt"]
    assert (mark["step"], mark["done"], mark["skipped"]) == (steps[-1], len(steps) - 1, 1)


def test_an_incomplete_checkpoint_waits_and_is_passed_over_once_a_later_one_is_complete(run_dir, tmp_path):
    steps = _steps(run_dir)
    (run_dir / f"model.ckpt-{steps[-1]}.index").unlink()  # the newest being written: data, no index yet
    result = run_cli("watch", run_dir, "--once", "--state", tmp_path / "s.json")
    assert [json.loads(line)["step"] for line in result.stdout.splitlines()] == steps[:-1]
    assert result.exit_code == 0
    for suffix in (".index", ".data-00000-of-00001"):  # put the newest back, and cut the one before short
        os.replace(run_dir / f"model.ckpt-{steps[-2]}{suffix}", tmp_path / f"keep{suffix}")
    shutil.copy(tmp_path / "keep.data-00000-of-00001", run_dir / f"model.ckpt-{steps[-1]}.data-00000-of-00001")
    shutil.copy(tmp_path / "keep.data-00000-of-00001", run_dir / f"model.ckpt-{steps[-2]}.data-00000-of-00001")
    os.replace(tmp_path / "keep.index", run_dir / f"model.ckpt-{steps[-1]}.index")
    result = run_cli("watch", run_dir, "--once", "--state", tmp_path / "t.json")
    assert [json.loads(line)["step"] for line in result.stdout.splitlines()] == steps[:-2] + steps[-1:]
    assert result.exit_code == 1 and f"model.ckpt-{steps[-2]} is passed over" in result.stderr


def test_verify_keeps_a_damaged_checkpoint_from_the_command(run_dir, tmp_path, tf):
    steps = _steps(run_dir)
    data = run_dir / f"model.ckpt-{steps[1]}.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(raw)
    result = run_cli("watch", run_dir, "--once", "--verify", "--on-failure", "skip", "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1
    assert [(e["event"], e["step"]) for e in events] == [("checkpoint", steps[0]), ("failed", steps[1])] + [
        ("checkpoint", s) for s in steps[2:]]
    assert "damaged" in events[1]["message"] and events[1]["exit_status"] is None
    prefix = str(run_dir / f"model.ckpt-{steps[1]}")
    reader, damaged = tf.train.load_checkpoint(prefix), []
    for name, _shape in tf.train.list_variables(prefix):
        try:
            reader.get_tensor(name)
        except tf.errors.OpError as exc:
            assert "Checksum does not match" in str(exc)
            damaged.append(name)
    assert damaged and damaged[0] in events[1]["message"]  # TensorFlow finds the damage watch named


def test_a_checkpoint_whose_data_is_cut_short_is_damage_without_verify(run_dir, tmp_path, tf):
    """A data shard shorter than its index says (TensorFlow cannot read it) is damage even without
    --verify, as for `latest --complete`: the command never runs on it."""
    steps = _steps(run_dir)
    data = run_dir / f"model.ckpt-{steps[1]}.data-00000-of-00001"
    os.truncate(data, data.stat().st_size - 1)
    prefix = str(run_dir / f"model.ckpt-{steps[1]}")
    reader = tf.train.load_checkpoint(prefix)
    with pytest.raises(Exception):
        for name, _shape in tf.train.list_variables(prefix):
            reader.get_tensor(name)
    result = run_cli("watch", run_dir, "--once", "--on-failure", "skip", "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1
    assert [(e["event"], e["step"]) for e in events] == [("checkpoint", steps[0]), ("failed", steps[1])] + [
        ("checkpoint", s) for s in steps[2:]]
    assert "damaged" in events[1]["message"] and "its index says" in events[1]["message"]
    stopped = run_cli("watch", run_dir, "--once", "--state", tmp_path / "s.json")
    assert stopped.exit_code == 1 and [json.loads(line)["step"] for line in stopped.stdout.splitlines()] == steps[:1]


def test_sigterm_lets_the_running_command_finish_records_it_and_starts_no_other(run_dir, tmp_path):
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    wait_for_go = f"{sys.executable} -c 'print(\"running\", flush=True); open(\"{fifo}\").read()'"
    state = tmp_path / "s.json"
    watch = start_watch(run_dir, "--state", state, "--exec", wait_for_go)
    assert watch.stdout.readline() == "running\n"
    watch.send_signal(signal.SIGTERM)
    read_until(watch.stderr, "watch: SIGTERM: stopping once the command is done")
    with open(fifo, "w") as go:
        go.write("go")
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 143, err
    assert out == "" and "error: interrupted (SIGTERM)" in err
    mark = state_of(state)["series"]["model.ckpt"]
    assert (mark["step"], mark["done"]) == (_steps(run_dir)[0], 1)


def test_one_watch_per_state_file(run_dir, tmp_path):
    state = tmp_path / "s.json"
    first = start_watch(run_dir, "--state", state, "--once", pause="watch-recorded")
    read_until(first.stderr, "paused: watch-recorded")
    second = run_cli("watch", run_dir, "--state", state, "--once")
    assert_one_line_error(second, 4)
    assert "locked by another ckpttool run" in second.stderr and "--state" in second.stderr
    first.stdin.close()  # releases the pause
    first.stdin = None
    first.communicate(timeout=60)
    assert first.returncode == 0


def test_bad_state_files_and_bad_options_are_one_line_errors(run_dir, tmp_path, copy_fixture):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert_one_line_error(run_cli("watch", run_dir, "--state", garbage, "--once"), 3)
    other = copy_fixture("sharded")
    assert run_cli("watch", other, "--state", tmp_path / "o.json", "--once").exit_code == 0
    assert_one_line_error(run_cli("watch", run_dir, "--state", tmp_path / "o.json", "--once"), 4)
    assert_one_line_error(run_cli("watch", run_dir, "--on-failure", "sometimes"), 2)
    assert_one_line_error(run_cli("watch", run_dir, "--shell"), 2)
    assert_one_line_error(run_cli("watch", run_dir, "--exec", "no-such-program-x {path}"), 2)
    assert_one_line_error(run_cli("watch", tmp_path / "missing", "--once"), 3)
    assert_one_line_error(run_cli("watch", run_dir, "--state", "s3://bucket/state.json"), 2)


def test_default_state_goes_under_xdg_state_home_for_a_read_only_directory(run_dir, tmp_path, monkeypatch):
    from ckpttool.ops.runs.watch import default_state_path

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_path(str(run_dir)) == str(run_dir / ".ckpttool-watch.json")
    can = os.access  # root may write anywhere: the directory is made to look read-only to this process
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: str(path) != str(run_dir) and can(path, mode, **kw))
    path = default_state_path(str(run_dir))
    assert Path(path).parent == tmp_path / "xdg" / "ckpttool" / "watch"
    assert run_cli("watch", run_dir, "--once").exit_code == 0
    assert state_of(Path(path))["directory"] == str(run_dir.resolve())
    assert not (run_dir / ".ckpttool-watch.json").exists()
    assert Path(default_state_path("s3://bucket/run")).parent == Path(path).parent


def test_a_watch_killed_while_its_command_ran_runs_it_again_and_says_so(run_dir, tmp_path):
    steps = _steps(run_dir)
    calls, state = tmp_path / "calls", tmp_path / "s.json"
    # The command on the second checkpoint kills watch (SIGKILL) the first time: a machine lost mid-command.
    command = (f"echo {{step}} >> {calls}; if [ {{step}} = {steps[1]} ] && [ ! -e {tmp_path}/killed ]; then "
               f"touch {tmp_path}/killed; kill -9 $PPID; fi")
    killed = start_watch(run_dir, "--once", "--state", state, "--shell", "--exec", command)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert state_of(state)["running"]["step"] == steps[1]
    again = run_cli("watch", run_dir, "--once", "--state", state, "--shell", "--exec", command)
    assert again.exit_code == 0, again.stderr
    assert f"the last watch stopped while its command ran on model.ckpt-{steps[1]}" in again.stderr
    assert calls.read_text().split() == [str(s) for s in [steps[0], steps[1], *steps[1:]]]
    assert state_of(state)["series"]["model.ckpt"]["done"] == len(steps)


def test_file_events_wake_the_waiter_and_polling_is_the_fallback(tmp_path, monkeypatch):
    from ckpttool.storage import changes

    if not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux's")
    with changes.Waiter(str(tmp_path)) as waiter:
        assert waiter.events
        (tmp_path / "ckpt-1.index").write_bytes(b"x")
        assert waiter.wait(60)  # returns on the event, not after 60 s
        (tmp_path / "3").mkdir()  # a step directory made after the start is watched too
        assert waiter.wait(60)
        (tmp_path / "3" / "commit_success.txt").write_text("")
        assert waiter.wait(60)
        assert not waiter.wait(0)  # every event was read
    monkeypatch.setattr(changes.sys, "platform", "darwin")
    with changes.Waiter(str(tmp_path)) as waiter:
        assert not waiter.events and not waiter.wait(0)


def test_savedmodel_versions_are_a_series_too(series_dir, tmp_path, tf):
    export = tmp_path / "export"
    shutil.copytree(series_dir / "export", export)
    result = run_cli("watch", export, "--once")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["step"], line["format"], line["series"]) for line in lines] == [
        (n, "savedmodel", "savedmodel/") for n in (1, 2, 3)]  # temp-4/ is an exporter's leftover
    for line in lines:
        assert tf.saved_model.load(line["path"]) is not None


def test_a_local_checkpoint_waits_until_its_files_have_settled(run_dir):
    """A complete checkpoint whose newest file is younger than SETTLE_SECONDS waits (files written in
    place may still grow), and so do the later ones of its series; then all are ready, in order."""
    from ckpttool.ops.runs.scan import scan_directory
    from ckpttool.ops.runs.watch import SETTLE_SECONDS, WatchState, plan_watch

    scan = scan_directory(str(run_dir))
    first, *rest = scan.checkpoints
    fresh = plan_watch(scan, WatchState(str(run_dir)), now=first.mtime, settle=SETTLE_SECONDS)
    assert (fresh.ready, fresh.waiting, fresh.wake_at) == ((), (first.name,), first.mtime + SETTLE_SECONDS)
    later = max(c.mtime for c in scan.checkpoints) + SETTLE_SECONDS
    settled = plan_watch(scan, WatchState(str(run_dir)), now=later, settle=SETTLE_SECONDS)
    assert [i.name for i in settled.ready] == [c.name for c in scan.checkpoints] and settled.wake_at is None
    in_a_bucket = plan_watch(scan, WatchState(str(run_dir)), now=first.mtime, settle=None)
    assert len(in_a_bucket.ready) == 1 + len(rest)
