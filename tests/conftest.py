"""Shared fixtures: TensorFlow-written checkpoints (built once per session in a
subprocess), the TensorFlow oracle, and helpers to run the CLI."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent


def build_fixtures(tmp_path_factory, script: str, name: str, *args: str) -> Path:
    """Run tests/<script> once (in a fresh process: TensorFlow's and Keras' set-up stays out of the
    suite's) to write fixtures into a new session directory, which it returns."""
    out = tmp_path_factory.mktemp(name)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / script), *args, str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    return build_fixtures(tmp_path_factory, "tf_fixtures.py", "tf_fixtures")


def _tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime) of every file under root, links not followed."""
    state = {}
    for path in root.rglob("*"):
        st = path.lstat()
        state[str(path.relative_to(root))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return state


@pytest.fixture(autouse=True)
def shared_fixtures_stay_untouched(request):
    """The TF fixtures are shared by the whole session: a test that changes them (instead of a
    copy_fixture copy) breaks every test after it. Checked after each test that uses them."""
    if "fixtures_dir" not in request.fixturenames:
        yield
        return
    root = request.getfixturevalue("fixtures_dir")
    before = _tree_state(root)
    yield
    after = _tree_state(root)
    changed = sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
    assert not changed, f"this test changed the shared fixtures (use copy_fixture): {changed[:10]}"


@pytest.fixture(scope="session")
def series_dir(tmp_path_factory) -> Path:
    """Event files, Keras ModelCheckpoint files and SavedModel versions written by TensorFlow and
    Keras (tests/series_fixtures.py), built once per session."""
    return build_fixtures(tmp_path_factory, "series_fixtures.py", "series_fixtures")


@pytest.fixture(scope="session")
def keras_checkpoints(tmp_path_factory) -> Path:
    """Keras 3 models saved with tf.train.Checkpoint and CheckpointManager (tests/keras_checkpoints.py),
    built once per session, for --drop-optimizer and --names model."""
    return build_fixtures(tmp_path_factory, "keras_checkpoints.py", "keras_checkpoints")


@pytest.fixture(scope="session")
def torch_dir(tmp_path_factory) -> Path:
    """PyTorch files written by torch (tests/torch_fixtures.py), built once per session."""
    return build_fixtures(tmp_path_factory, "torch_fixtures.py", "torch_fixtures")


@pytest.fixture(scope="session")
def torch():
    """The PyTorch oracle (imported by tests only; ckpttool never imports it)."""
    import torch

    return torch


@pytest.fixture(scope="session")
def orbax_dir(tmp_path_factory) -> Path:
    """Orbax checkpoints written by orbax.checkpoint with JAX on eight virtual CPU devices
    (tests/orbax_fixtures.py), built once per session (JAX and Orbax are in the test extra: a machine
    without them fails here rather than skipping the Orbax tests)."""
    return build_fixtures(tmp_path_factory, "orbax_fixtures.py", "orbax", "write")


@pytest.fixture(scope="session")
def manifest(fixtures_dir) -> dict:
    return json.loads((fixtures_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def tf():
    import tensorflow

    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


@pytest.fixture
def sigint_reaches_children():
    """Children started in the test get Ctrl-C's default meaning, so that they install their
    KeyboardInterrupt handler. A suite started as `cmd &` from a script or under nohup runs with
    SIGINT ignored, which every child inherits through exec (and Python then leaves ignored):
    the interrupt tests would then see their SIGINT do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def copy_fixture(fixtures_dir, tmp_path):
    """A private copy of one fixture directory, safe to damage."""
    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(fixtures_dir / name, dest, symlinks=True)
        return dest
    return copy


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def run_cli(*args: str) -> CliResult:
    """Run ckpttool in-process (fast); stdout and stderr kept apart."""
    from ckpttool.cli.app import app, hoist_global_flags

    runner = CliRunner()
    result = runner.invoke(app, hoist_global_flags([str(a) for a in args]), catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def run_subprocess(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m ckpttool` as users do (for import checks, signals, real streams)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ckpttool", *map(str, args)], capture_output=True,
                          text=True, env=full_env, **kwargs)


def assert_one_line_error(result, code: int) -> None:
    """A user error: the documented exit code, one `error:` line (plus an optional hint), no traceback."""
    stderr = result.stderr
    assert result.exit_code == code if hasattr(result, "exit_code") else result.returncode == code, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert all(line.startswith(("error: ", "hint: ", "warning: ")) for line in lines), stderr


def force_scan_helper(monkeypatch) -> list:
    """Make the scan of a local directory fork its helper (ops/runs/scan.py: _look_at_in_two)
    whatever the directory's size and the machine's load; the list returned gets an item per fork.
    No thread of an earlier test's (a server's, TensorFlow's) may keep it from forking either: the
    scan forks only in a process of one thread, which the full suite's process is not."""
    from ckpttool.ops.runs import scan

    monkeypatch.setattr(scan, "HELPER_MIN_PREFIXES", 1)
    monkeypatch.setattr(scan, "processor_free", lambda: True)
    monkeypatch.setattr(scan.threading, "active_count", lambda: 1)
    forks = []
    real_fork = os.fork

    def fork():
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    return forks
