"""The one place that maps errors to exit codes and messages (DESIGN.md
"Output and exit codes"). Every command body runs inside `handle_errors`."""
from __future__ import annotations

import functools
import os
import sys
import traceback

import typer

from ckpttool.errors import BadInput, CkptError, Refused, UsageProblem

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_REFUSED = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

_EXIT_BY_ERROR = ((UsageProblem, EXIT_USAGE), (BadInput, EXIT_BAD_INPUT), (Refused, EXIT_REFUSED))


_debug_flag = {"on": False}


def set_debug(value: bool) -> None:
    """Set by the --debug option on each invocation."""
    _debug_flag["on"] = value


def debug_enabled() -> bool:
    return _debug_flag["on"] or os.environ.get("CKPTTOOL_DEBUG", "") not in ("", "0")


def exit_code_for(exc: BaseException) -> int:
    for error_type, code in _EXIT_BY_ERROR:
        if isinstance(exc, error_type):
            return code
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
        return EXIT_BAD_INPUT  # the file system said no (permissions, disk full): not a bug
    if isinstance(exc, MemoryError):
        return EXIT_BAD_INPUT  # the memory limit said no: not a bug either
    return EXIT_INTERNAL


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def report(exc: BaseException) -> int:
    """Print the error for people (traceback only with --debug); return its exit code."""
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, CkptError):
        print(f"error: {_one_line(exc.message)}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {_one_line(exc.hint)}", file=sys.stderr)
        return exit_code_for(exc)
    if isinstance(exc, BrokenPipeError):
        # The reader of our stdout went away (`ckpttool ls | head`): not an error.
        sys.stderr.close()
        return EXIT_OK
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(exc, MemoryError):
        # Readers never allocate more than the files hold: this is the size
        # of the job against the machine's (or ulimit's) memory.
        print("error: out of memory: the process could not allocate what this command needs", file=sys.stderr)
        print("hint: raise the memory limit (ulimit -v) or free memory", file=sys.stderr)
        return exit_code_for(exc)
    print(f"error: internal error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
    if not debug_enabled():
        print("hint: this is a bug in ckpttool; rerun with --debug for the traceback", file=sys.stderr)
    return EXIT_INTERNAL


def handle_errors(command):
    """Wrap a command so that every failure becomes a message and an exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            code = command(*args, **kwargs)
        except typer.Exit:
            raise
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - this is the one place that maps them
            code = report(exc)
        if code:
            raise typer.Exit(code)

    return wrapper
