"""The Typer application: registration of commands and global options only."""
from __future__ import annotations

import sys
from typing import Annotated

import typer

from ckpttool import __version__
from ckpttool.cli import render
from ckpttool.cli.commands import (convert, diff, export_json, freeze, inspect, latest, ls, prune, rename, repair,
                                   verify)
from ckpttool.cli.errors import handle_errors, set_debug

app = typer.Typer(
    name="ckpttool",
    help="Inspect, verify, prune and convert TensorFlow checkpoint directories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Options that work anywhere on the command line (they are moved in front of
# the command name before parsing), so `ckpttool inspect X --debug` works.
GLOBAL_FLAGS = ("--debug", "--no-color")


def _version(value: bool) -> None:
    if value:
        print(f"ckpttool {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (also CKPTTOOL_DEBUG=1).")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colour (also NO_COLOR=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Inspect, verify, prune and convert TensorFlow checkpoint directories."""
    set_debug(debug)
    render.set_no_color(no_color)


COMMANDS = {
    "ls": ls.command,
    "latest": latest.command,
    "inspect": inspect.command,
    "verify": verify.command,
    "prune": prune.command,
    "repair": repair.command,
    "rename-vars": rename.command,
    "convert": convert.command,
    "diff": diff.command,
    "freeze": freeze.command,
    "export-json": export_json.command,
}
for _name, _function in COMMANDS.items():
    app.command(_name)(handle_errors(_function))


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move global flags given after the command name to the front."""
    cut = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:cut] if a in GLOBAL_FLAGS]
    rest = [a for a in argv[:cut] if a not in GLOBAL_FLAGS]
    return flags + rest + argv[cut:]


def main(argv: list[str] | None = None) -> None:
    args = hoist_global_flags(sys.argv[1:] if argv is None else list(argv))
    app(args=args, prog_name="ckpttool")
