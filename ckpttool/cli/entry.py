"""Console entry point (and `python -m ckpttool`'s, through ckpttool/__main__.py). Kept tiny: the
signal handlers (cli/interrupts.py) are in place before any other module of the CLI loads, so that
Ctrl-C, SIGTERM or SIGHUP at any moment, start-up and exit included, is a clean exit: 130 for
Ctrl-C, 128 + the signal's number for the others (143 for SIGTERM), one `error:` line, no
traceback. (When the process is the command line, ckpttool/__init__.py put the start-up handler in
place even before this module was found.)

The hot commands' common command lines are run by cli/quick.py without loading Typer; every other
command line goes to the Typer app (cli/app.py)."""
import sys

from ckpttool.cli import interrupts

interrupts.install()

from ckpttool import _pause_for_test  # noqa: E402 - after the handlers, on purpose

_pause_for_test("entry")


def main() -> None:
    try:
        from ckpttool.cli import quick

        args = quick.hoist_global_flags(sys.argv[1:])
        form = quick.parse(args)
        if form is None:
            from ckpttool.cli.app import main as run_app

            _pause_for_test("app")
            run_app(args)
        else:
            _pause_for_test("app")
            sys.exit(quick.run(form))
    finally:
        _pause_for_test("exit")
        interrupts.hold_until_exit()
