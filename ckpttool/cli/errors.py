"""The one place that maps errors to exit codes and messages (DESIGN.md
"Output and exit codes"). Every command body runs inside `run_body`: through `handle_errors` when
Typer parsed the command line, directly when cli/quick.py did (so this module loads without Typer)."""
from __future__ import annotations

import functools
import os
import sys

from ckpttool import _pause_for_test
from ckpttool.cli import interrupts
from ckpttool.errors import BadInput, CkptError, CorruptCheckpoint, Refused, Terminated, UsageProblem, debug_output

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
    debug_output["on"] = value  # the storage backends' own logs too (storage/reach.py)


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


def _tell(label: str, text: str) -> None:
    """`label: text` on stderr for people: a name's undecodable bytes and control characters
    (an escape sequence, a carriage return) shown escaped, as warnings show them."""
    from ckpttool.text import for_people

    print(f"{label}: {for_people(text, field=True)}", file=sys.stderr)


def _kind(exc: BaseException) -> str:
    """A stable snake_case name for JSON: NotFound -> not_found, KeyboardInterrupt -> interrupted."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, UsageProblem):
        return "usage_error"  # as Typer's own usage errors are reported
    if isinstance(exc, MemoryError):
        return "out_of_memory"
    if not isinstance(exc, (CkptError, OSError)):
        return "internal"
    name = "os_error" if isinstance(exc, OSError) else type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _describe(exc: BaseException) -> tuple[int, str, str | None]:
    """(exit code, message, hint) of an exception, as people and JSON are told."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum, f"interrupted ({exc.name})", None  # 143 for SIGTERM, as a shell reports it
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted", None
    if isinstance(exc, CkptError):
        hint = exc.hint
        if hint is None and isinstance(exc, CorruptCheckpoint) and ".index" in exc.message:
            from ckpttool.ops.runs.hints import CORRUPT_HINT  # a damaged index: what to run next

            hint = CORRUPT_HINT
        return exit_code_for(exc), _one_line(exc.message), _one_line(hint) if hint else None
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return EXIT_BAD_INPUT, f"{exc.strerror or exc}{where}", None
    if isinstance(exc, MemoryError):
        # Readers never allocate more than the files hold: this is the size
        # of the job against the machine's (or ulimit's) memory.
        return (exit_code_for(exc), "out of memory: the process could not allocate what this command needs",
                "raise the memory limit (ulimit -v) or free memory")
    hint = None if debug_enabled() else "this is a bug in ckpttool; rerun with --debug for the traceback"
    return EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {_one_line(exc)}", hint


def error_fields(exc: BaseException) -> dict:
    """The `error` object of a JSON document (DESIGN.md): code, kind, message, hint."""
    code, message, hint = _describe(exc)
    return {"code": code, "kind": _kind(exc), "message": message, "hint": hint}


def emit_json_error(command: str | None, code: int, kind: str, message: str, hint: str | None) -> None:
    """The error as one JSON document on stdout (DESIGN.md), unless the command already printed its own."""
    from ckpttool.cli import render

    if render.json_emitted():
        return
    render.emit_json(command or "ckpttool", {"error": {"code": code, "kind": kind, "message": message,
                                                       "hint": hint}})


def usage_error(command: str | None, code: int, message: str, json_out: bool) -> None:
    """A command line that does not parse (unknown option, missing argument, bad choice)."""
    message = _one_line(message)
    hint = f"see `ckpttool {command} --help`" if command else "see `ckpttool --help`"
    _tell("error", message)
    _tell("hint", hint)
    if json_out:
        emit_json_error(command, code, "usage_error", message, hint)


def report(exc: BaseException, command: str | None = None, json_out: bool = False) -> int:
    """Print the error for people (traceback only with --debug), and as JSON with --json;
    return its exit code."""
    if debug_enabled():
        import traceback  # only with --debug: the quick path (cli/quick.py) loads no more than it needs

        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, BrokenPipeError):
        # The reader of our stdout went away (`ckpttool ls | head`): not an error.
        sys.stderr.close()
        return EXIT_OK
    code, message, hint = _describe(exc)
    _tell("error", message)
    if hint:
        _tell("hint", hint)
    if json_out:
        emit_json_error(command, code, _kind(exc), message, hint)
    return code


def run_body(body, name: str | None, json_out: bool, passing: tuple[type[BaseException], ...] = (), /,
             **arguments) -> int:
    """Run command `name`'s body with its parsed `arguments`, every failure (but `passing`) made a
    message and an exit code (plus a JSON error document with --json); return the exit code."""
    _pause_for_test("parsed")
    try:
        with interrupts.unwinding():  # a signal from here on unwinds the command (cli/interrupts.py)
            _pause_for_test("command")
            code = body(**arguments)
    except passing:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - this is the one place that maps them
        code = report(exc, name, json_out)
    return code or EXIT_OK


def handle_errors(command, name: str | None = None):
    """Wrap command `name` for Typer: its body run by `run_body`, a failing exit code raised as
    typer.Exit (a typer.Exit the body raises passes through)."""
    import typer  # only when the Typer app is built: the quick path never loads it

    @functools.wraps(command)
    def wrapper(**kwargs):
        code = run_body(command, name, bool(kwargs.get("json_out")), (typer.Exit,), **kwargs)
        if code:
            raise typer.Exit(code)

    return wrapper
