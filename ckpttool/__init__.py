"""ckpttool: a fast, safe, scriptable tool for TensorFlow checkpoint directories,
and the library under it (see ckpttool/api.py):

    import ckpttool
    ckpt = ckpttool.open("run/")            # lazy: variables listed, values read when asked
    weights = ckpttool.load("model.safetensors")
    ckpttool.latest("run/"); ckpttool.best("run/", "val_loss"); ckpttool.convert("run/", "model.safetensors")
    ckpttool.apply_prune(ckpttool.plan_prune("run/", keep_last=3))
    ckpttool.verify("run/"); ckpttool.diff("a/", "b/"); ckpttool.scan("run/")
    ckpttool.verify("copy.safetensors", manifest=ckpttool.manifest("run/"))
    ckpttool.average("run/", "avg.safetensors", last=3)

Every command run imports this package, so the API is loaded on first use
(module __getattr__): `ckpttool latest` pays for none of it. It is also the
first code of ours a command run executes (`python -m ckpttool` and the console
script both import it before their entry module), so when this process is the
command line starting, Ctrl-C, SIGTERM and SIGHUP are made a clean exit here,
before anything else is imported (ckpttool/cli/interrupts.py takes over from
there). A program importing the library keeps its own signal handlers.
"""
import os as _os
import sys as _sys

try:
    import _signal  # CPython's builtin module, loaded with the interpreter: nothing to import first
except ImportError:  # pragma: no cover - another interpreter: the public module
    import signal as _signal

# The signals that stop the command line (DESIGN.md: exit 130 for Ctrl-C, 128 + the number for the others).
_STOP_SIGNALS = {getattr(_signal, n): n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(_signal, n)}


def _stop_at_once(signum, frame) -> None:
    """The command line's answer to a signal where there is nothing to clean up (start-up, parsing,
    after the command is done): one `error:` line, as cli/errors.py words it, and exit."""
    interrupted = b"error: interrupted\n" if signum == _signal.SIGINT else \
        f"error: interrupted ({_STOP_SIGNALS[signum]})\n".encode()
    _os.write(2, interrupted)
    _os._exit(130 if signum == _signal.SIGINT else 128 + signum)


def _started_as_the_cli() -> bool:
    """Whether this import is the command line starting: `python -m ckpttool` (runpy imports the
    package while sys.argv[0] is "-m") or the console script, whose name is the program's."""
    if _sys.argv[:1] == ["-m"]:  # the module is named by the interpreter's first -m (the rest are its own)
        argv = _sys.orig_argv
        at = next((i for i, arg in enumerate(argv) if arg.startswith("-m")), None)
        module = None if at is None else argv[at][2:] or "".join(argv[at + 1:at + 2])  # -mNAME or -m NAME
        return module in ("ckpttool", "ckpttool.__main__")
    return bool(_sys.argv) and _os.path.basename(_sys.argv[0]) in (
        "ckpttool", "ckpttool.exe", "ckpttool-script.py")


def _pause_for_test(stage: str) -> None:
    """For tests only: with CKPTTOOL_TEST_PAUSE=<stage>, say `paused: <stage>` on stderr and wait
    until stdin closes, so that a test signals the process at a point it has seen it reach."""
    if _os.environ.get("CKPTTOOL_TEST_PAUSE") == stage:
        _os.write(2, f"paused: {stage}\n".encode())
        while _os.read(0, 4096):
            pass


def _install_signal_handler(handler) -> None:
    for signum in _STOP_SIGNALS:
        if _signal.getsignal(signum) is not _signal.SIG_IGN:  # ignored (nohup, `cmd &`): stays ignored
            _signal.signal(signum, handler)


if _started_as_the_cli():
    _install_signal_handler(_stop_at_once)
    _pause_for_test("start")

from typing import TYPE_CHECKING, Any  # noqa: E402 - after the signal handlers, on purpose

from ckpttool.version import __version__  # noqa: E402, F401 - the package's version, kept in a module below

__all__ = ["Checkpoint", "VariableInfo", "apply_failed_runs", "apply_prune", "apply_prunes", "average", "best",
           "convert", "diff", "fit_budget", "latest", "load", "manifest", "open", "plan_failed_runs", "plan_policy",
           "plan_prune", "scan", "verify"]

if TYPE_CHECKING:
    from ckpttool.api import (Checkpoint, VariableInfo, apply_failed_runs, apply_prune, apply_prunes,  # noqa: A004
                              average, best, convert, diff, fit_budget, latest, load, manifest, open,
                              plan_failed_runs, plan_policy, plan_prune, scan, verify)


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ckpttool import api

        return getattr(api, name)
    raise AttributeError(f"module 'ckpttool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
