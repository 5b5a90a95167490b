"""Console entry point. Kept tiny: the signal handlers are installed first
thing, before any other module of the CLI loads, so that Ctrl-C, SIGTERM or
SIGHUP at any moment (even during start-up) is a clean exit: 130 for Ctrl-C,
128 + the signal's number for the others (143 for SIGTERM), one `error:`
line, no traceback. Until main() runs there is nothing to clean up, so a
signal then ends the process at once; from then on it unwinds as
KeyboardInterrupt (errors.Terminated for SIGTERM/SIGHUP) through every
cleanup and lock release."""
import os
import signal
import sys

_HANDLED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _exit_at_once(signum, frame):
    os.write(2, b"error: interrupted\n")
    os._exit(130 if signum == signal.SIGINT else 128 + signum)


def _install(handler) -> None:
    for signum in _HANDLED:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored (nohup, `cmd &`): stays ignored
            signal.signal(signum, handler)


_install(_exit_at_once)

from ckpttool.errors import Terminated  # noqa: E402 - after the handlers, on purpose


def _unwind(signum, frame):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum, signal.Signals(signum).name)


def main() -> None:
    _install(_unwind)
    try:
        from ckpttool.cli.app import main as run

        run()
    except KeyboardInterrupt as exc:
        print("error: interrupted", file=sys.stderr)
        sys.exit(128 + exc.signum if isinstance(exc, Terminated) else 130)
