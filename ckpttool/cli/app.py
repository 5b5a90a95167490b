"""The Typer application: registration of commands and global options only."""
from __future__ import annotations

import sys
from typing import Annotated, List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from ckpttool.version import __version__
from ckpttool.cli import help_text, render
from ckpttool.cli.commands import (average, completion, convert, diff, export_json, freeze, inspect, latest, ls,
                                   manifest, prune, rename, repair, verify, watch)
from ckpttool.cli.errors import handle_errors, set_debug, usage_error
from ckpttool.cli.quick import GLOBAL_OPTIONS, hoist_global_flags

class _Group(TyperGroup):
    """Parsing errors as the contract has them (DESIGN.md): one `error:` line and a hint on stderr,
    exit 2, and with --json also a JSON document on stdout, instead of Typer's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Exception as exc:
            if not all(hasattr(exc, a) for a in ("exit_code", "show", "format_message")):
                raise
            command = next((a for a in args if not a.startswith("-")), None)
            command = command if command in COMMANDS else None
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # `ckpttool` alone: the help
            else:
                usage_error(command, exc.exit_code, exc.format_message(), "--json" in _options(args))
            code = exc.exit_code
        if not standalone_mode:
            return code
        sys.exit(code or 0)


def _options(args: list[str]) -> list[str]:
    return args[: args.index("--")] if "--" in args else args


_APP_SETTINGS = dict(
    name="ckpttool",
    cls=_Group,
    help="Inspect, verify, prune and convert TensorFlow checkpoint directories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app = typer.Typer(**_APP_SETTINGS)


def _version(value: bool) -> None:
    if value:
        print(f"ckpttool {__version__}")
        raise typer.Exit()


def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (also CKPTTOOL_DEBUG=1).")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colour (also NO_COLOR=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    storage_option: Annotated[Optional[List[str]], typer.Option(
        "--storage-option", metavar="KEY=VALUE",
        help="Passed to the storage backend of gs://, s3:// and other URLs (repeatable; VALUE is parsed as "
             "JSON when it is JSON), on top of the backends' own settings: AWS_* and AWS_ENDPOINT_URL, "
             "Google application default credentials and STORAGE_EMULATOR_HOST, FSSPEC_<PROTOCOL>_<KEY>.")] = None,
) -> None:
    """Inspect, verify, prune and convert TensorFlow checkpoint directories (local or in buckets)."""
    set_debug(debug)
    render.begin_invocation(no_color)
    if storage_option:
        from ckpttool.storage import remote  # only when asked for: the local fast path never loads it

        remote.set_storage_options(dict(remote.parse_storage_option(o) for o in storage_option))


COMMANDS = {
    "ls": ls.command,
    "latest": latest.command,
    "inspect": inspect.command,
    "verify": verify.command,
    "manifest": manifest.command,
    "prune": prune.command,
    "policy": prune.policy_command,
    "repair": repair.command,
    "rename-vars": rename.command,
    "convert": convert.command,
    "average": average.command,
    "diff": diff.command,
    "freeze": freeze.command,
    "export-json": export_json.command,
    "watch": watch.command,
    "completion": completion.command,
}


class _Command(TyperCommand):
    """Usage lines as man pages write them: `ckpttool ls [OPTIONS] DIR`, not Typer's `{DIR}`."""

    def collect_usage_pieces(self, ctx):
        return [piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
                for piece in super().collect_usage_pieces(ctx)]


def _register(target: typer.Typer, name: str) -> None:
    target.command(name, cls=_Command, short_help=help_text.SUMMARIES[name], epilog=help_text.epilog(name))(
        handle_errors(COMMANDS[name], name))


app.callback()(root)
for _name in COMMANDS:
    _register(app, _name)


def _app_for(args: list[str]) -> typer.Typer:
    """The app to run `args` (global flags already in front): one with only the invoked command
    registered, since Typer builds the parameters of every registered command on each run (a third
    of `ckpttool latest`'s time once there were fourteen commands); the whole app for top-level
    help, --version, completion or anything it does not recognise (it says what is wrong)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-h", "--help", "--version"):
            return app
        i += 2 if args[i] in GLOBAL_OPTIONS else 1
    name = args[i] if i < len(args) else None
    if name not in COMMANDS or name == "completion":  # completion describes the whole app
        return app
    single = typer.Typer(**_APP_SETTINGS)
    single.callback()(root)
    _register(single, name)
    return single


def main(argv: list[str] | None = None) -> None:
    args = hoist_global_flags(sys.argv[1:] if argv is None else list(argv))
    _app_for(args)(args=args, prog_name="ckpttool")
