"""Ctrl-C, SIGTERM and SIGHUP stop the command line cleanly at any instant, from start-up to exit
(DESIGN.md: exit 130, or 128 + the signal's number; one `error:` line; never a traceback).

ckpttool/__init__.py installs `stop at once` first thing when the process is the command line;
entry.py installs `on_signal` here before anything heavy loads. What a signal does depends on the
phase the process is in:
- start-up (imports, parsing, the global options) and once the command is done: there is nothing
  to clean up, so the process ends at once (os._exit, after the `error:` line);
- while a command runs (`unwinding()`, around every command body in cli/errors.handle_errors): the
  first signal unwinds it as KeyboardInterrupt (errors.Terminated for SIGTERM and SIGHUP) through
  every cleanup and lock release, and handle_errors reports it; a second one, while that unwinds,
  ends the process at once;
- at the very end (`hold_until_exit()`), output flushed, the signals are blocked for the
  interpreter's shutdown, whose last steps put the default actions back: a signal then would kill
  the process (no exit code of ours) or be dropped; held, the command's own exit code stands.
"""
from __future__ import annotations

import signal
import sys

from ckpttool import _STOP_SIGNALS, _install_signal_handler, _stop_at_once
from ckpttool.errors import Terminated

_unwinding = {"on": False}


def on_signal(signum, frame) -> None:
    if not _unwinding["on"]:
        _stop_at_once(signum, frame)
    _unwinding["on"] = False  # a second signal, while this one unwinds, ends the process at once
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum, _STOP_SIGNALS[signum])


def install() -> None:
    _install_signal_handler(on_signal)


class unwinding:  # noqa: N801 - used as a context manager, named as one
    """While the block runs, a signal raises (KeyboardInterrupt or Terminated) instead of ending the
    process at once; one raised as the block ends still lands inside the caller's `try`."""

    def __enter__(self) -> None:
        _unwinding["on"] = True

    def __exit__(self, *exc_info) -> None:
        _unwinding["on"] = False


def hold_until_exit() -> None:
    """The command is done: flush what it wrote (a signal meanwhile still ends the process at once),
    then block the signals in the main thread, which runs the interpreter's shutdown."""
    _unwinding["on"] = False
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe or stream: the interpreter's own flush at exit reports it, as before
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, set(_STOP_SIGNALS))
