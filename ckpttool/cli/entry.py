"""Console entry point (and `python -m ckpttool`'s, through ckpttool/__main__.py). Kept tiny: the
signal handlers (cli/interrupts.py) are in place before any other module of the CLI loads, so that
Ctrl-C, SIGTERM or SIGHUP at any moment, start-up and exit included, is a clean exit: 130 for
Ctrl-C, 128 + the signal's number for the others (143 for SIGTERM), one `error:` line, no
traceback. (When the process is the command line, ckpttool/__init__.py put the start-up handler in
place even before this module was found.)"""
from ckpttool.cli import interrupts

interrupts.install()

from ckpttool import _pause_for_test  # noqa: E402 - after the handlers, on purpose

_pause_for_test("entry")


def main() -> None:
    try:
        from ckpttool.cli.app import main as run

        _pause_for_test("app")
        run()
    finally:
        _pause_for_test("exit")
        interrupts.hold_until_exit()
