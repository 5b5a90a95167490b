"""Ctrl-C, SIGTERM and SIGHUP at any instant of a command's life, from the first code of ours to
exit: exit 130, 143 or 129 with one `error: interrupted` line and no traceback (or the command's
own exit when it had finished). With CKPTTOOL_TEST_PAUSE=<stage> the process says `paused: <stage>`
on stderr and waits until its stdin closes (ckpttool/__init__.py), so each signal lands at a point
the test has seen the process reach: never a sleep, never a race."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where start-up can be stopped, in order: handlers just installed by ckpttool/__init__.py (nothing
# else of ours imported), cli/entry.py loaded (Typer, Rich and the commands not yet), everything
# imported (nothing parsed), the command line parsed (the command not started), the command body
# about to run, and the command done (its output not yet flushed, the interpreter not yet shut down).
STAGES = ["start", "entry", "app", "parsed", "command", "exit"]
SIGNALS = [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)]
# The console script pip writes for [project.scripts] (distlib's template): it imports the entry
# module by name, so ckpttool/__init__.py knows the process from its program name.
CONSOLE_SCRIPT = """\
import re
import sys
from ckpttool.cli.entry import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


def _start(command: list[str], args: list[str], pause_at: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]), "CKPTTOOL_TEST_PAUSE": pause_at}
    return subprocess.Popen([sys.executable, *command, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)


def _wait_until_paused(proc: subprocess.Popen, stage: str) -> None:
    line = proc.stderr.readline()  # the readiness marker (or, were it never printed, end of file)
    assert line == f"paused: {stage}\n", line + proc.stderr.read()


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    proc.stdin.close()  # releases the pause, if the signal has not ended the process already
    proc.stdin = None
    return proc.communicate(timeout=120)


@pytest.fixture
def latest(fixtures_dir):
    """A command that reads a checkpoint directory and prints one line."""
    return ["latest", str(fixtures_dir / "saver_run")]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("sig,code", SIGNALS)
def test_signal_during_start_up_is_a_clean_exit(sigint_reaches_children, latest, stage, sig, code):
    proc = _start(["-m", "ckpttool"], latest, stage)
    _wait_until_paused(proc, stage)
    proc.send_signal(getattr(signal, sig))
    out, err = _finish(proc)
    assert proc.returncode == code, err
    assert err == ("error: interrupted\n" if sig == "SIGINT" else f"error: interrupted ({sig})\n")
    if stage != "exit":  # done, the command may have written its answer already
        assert out == ""


@pytest.mark.parametrize("sig,code", SIGNALS)
def test_signal_before_the_console_script_finds_its_entry_is_a_clean_exit(sigint_reaches_children, tmp_path,
                                                                          latest, sig, code):
    script = tmp_path / "ckpttool"
    script.write_text(CONSOLE_SCRIPT)
    proc = _start([str(script)], latest, "start")
    _wait_until_paused(proc, "start")
    proc.send_signal(getattr(signal, sig))
    out, err = _finish(proc)
    assert (proc.returncode, out) == (code, ""), err
    assert err == ("error: interrupted\n" if sig == "SIGINT" else f"error: interrupted ({sig})\n")


def test_unpaused_run_prints_its_answer(latest, tmp_path):
    """The pause is for tests alone: without the variable, or released, the command runs as always."""
    proc = _start(["-m", "ckpttool"], latest, "")
    out, err = _finish(proc)
    assert (proc.returncode, err) == (0, "")
    script = tmp_path / "ckpttool"
    script.write_text(CONSOLE_SCRIPT)
    for command in (["-m", "ckpttool"], [str(script)]):
        proc = _start(command, latest, "start")
        _wait_until_paused(proc, "start")
        assert _finish(proc) == (out, "") and proc.returncode == 0


def test_signals_at_random_instants_end_cleanly(sigint_reaches_children, latest):
    """18 runs, each signalled at a random instant between its first code of ours and a little
    after it would have ended (one instant in each eighteenth of that span): each ends with its
    answer (exit 0: it finished first) or with the signal's code and one `error:` line, never a
    traceback. Any outcome is checked and none is waited for, so however loaded the machine the
    test cannot flake."""
    rng = random.Random(24)
    spans = []
    for _ in range(2):  # how long a run takes past its first code of ours, on this machine now
        proc = _start(["-m", "ckpttool"], latest, "start")
        _wait_until_paused(proc, "start")
        began = time.monotonic()
        answer, _ = _finish(proc)
        spans.append(time.monotonic() - began)
    runs = 18
    instants = [(i + rng.random()) / runs * 1.2 * min(spans) for i in range(runs)]
    rng.shuffle(instants)
    outcomes = []
    for run, instant in enumerate(instants):
        sig, code = SIGNALS[run % 3]
        proc = _start(["-m", "ckpttool"], latest, "start")
        _wait_until_paused(proc, "start")
        proc.stdin.close()  # released: the run goes on
        time.sleep(instant)  # picks the instant; nothing is waited for
        proc.send_signal(getattr(signal, sig))
        proc.stdin = None
        out, err = proc.communicate(timeout=120)
        assert "Traceback" not in err and "Exception ignored" not in err, err
        if proc.returncode == 0:
            assert (out, err) == (answer, "")
        else:
            assert proc.returncode == code, err
            assert err.splitlines()[-1:] == ["error: interrupted" + ("" if sig == "SIGINT" else f" ({sig})")], err
        outcomes.append(proc.returncode)
    assert outcomes.count(0) < runs, "every run finished before its signal: the test proved nothing"


def test_a_program_importing_the_library_keeps_its_signal_handlers(tmp_path):
    """Only the command line's own start-up installs handlers: not `import ckpttool` in a program,
    nor the package of another `python -m` module that imports it (even given `ckpttool` as an argument)."""
    probe = ("import signal, ckpttool\n"
             "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler,"
             " signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n")
    host = tmp_path / "host"
    host.mkdir()
    (host / "__init__.py").write_text(probe)
    (host / "__main__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), *sys.path])}
    for command in (["-c", probe], ["-m", "host", "ckpttool"], ["-m", "host", "-m", "ckpttool"]):
        proc = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, timeout=120)
        assert (proc.returncode, proc.stdout) == (0, "True True\n"), (command, proc.stderr)
