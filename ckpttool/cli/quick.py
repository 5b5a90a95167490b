"""The hot commands' common command lines run without Typer: `latest DIR`, `inspect TARGET`,
`verify TARGET`, `ls DIR` and `convert SRC DST`, each with its usual flags (and convert with its --dtype, --to,
--layout and one --transpose), parsed here from argv and handed to the same body (cli/hot/) under the
same error handling (errors.run_body) as Typer would, so that they start without importing Typer or
Rich or building the app (about half of `ckpttool latest`'s time, against the interpreter's own
start-up; a quarter of `verify`'s CPU time on a small checkpoint; a third of a second of CPU for
every convert).

This parser accepts a strict subset of what Typer accepts and says nothing itself: anything else
(help, --version, completion, an option of ours it does not list, an option's value written
`--opt=value` or not among its choices, `--`, a repeated option, an extra argument, an argument
that looks like an option, any mistake) is left to Typer, which answers it, and words every usage
error, exactly as before."""
from __future__ import annotations

import os

# Options that work anywhere on the command line (they are moved in front of
# the command name before parsing), so `ckpttool inspect X --debug` works.
GLOBAL_FLAGS = ("--debug", "--no-color")
GLOBAL_OPTIONS = ("--storage-option",)  # global options that take a value

# command -> (its arguments' keywords, {flag: keyword}, {option: (keyword, its choices or None)}): flags
# without a value and options with one, as Typer declares them in cli/commands/<command>.py
# (tests/test_quick_path.py checks that each is that flag or option of the command).
FORMS = {
    "latest": (("directory",), {"--absolute": "absolute", "--step": "step", "--complete": "complete",
                                "--json": "json_out"}, {}),
    "inspect": (("target",), {"--json": "json_out", "--quiet": "quiet", "-q": "quiet", "--all": "all_",
                              "-a": "all_", "--slices": "slices", "--stats": "stats"}, {}),
    "verify": (("target",), {"--json": "json_out", "--quiet": "quiet", "-q": "quiet", "--all": "all_", "-a": "all_",
                             "--recursive": "recursive", "-r": "recursive", "--graph": "graph"}, {}),
    "ls": (("directory",), {"--json": "json_out", "--quiet": "quiet", "-q": "quiet", "--recursive": "recursive",
                            "-r": "recursive"}, {}),
    "convert": (("source", "destination"),
                {"--json": "json_out", "--quiet": "quiet", "-q": "quiet", "--overwrite": "overwrite",
                 "--strict": "strict", "--dry-run": "dry_run", "-n": "dry_run", "--no-update-state": "no_update_state"},
                {"--dtype": ("dtype", ("bfloat16", "float16", "float32", "float64")),
                 "--to": ("to", ("tf", "safetensors", "npz")), "--layout": ("layout", ("torch", "tf")),
                 "--transpose": ("transpose", None)}),
}
# Options Typer takes many times: the body gets a list (here of the one value given).
_LISTS = {"transpose"}

# Set, the shell asks Typer for completions: never a command run.
_COMPLETION_VARIABLE = "_CKPTTOOL_COMPLETE"


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move global flags (and global options with their values) given after the command name to the front."""
    cut = argv.index("--") if "--" in argv else len(argv)
    front, rest = [], []
    i = 0
    while i < cut:
        arg = argv[i]
        if arg in GLOBAL_FLAGS or arg.startswith(tuple(o + "=" for o in GLOBAL_OPTIONS)):
            front.append(arg)
        elif arg in GLOBAL_OPTIONS and i + 1 < cut:
            front += argv[i:i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest + argv[cut:]


def parse(args: list[str]) -> tuple[str, dict, set[str]] | None:
    """(command, its keyword arguments, the global flags given) for a command line of a form in FORMS
    (global flags already in front), or None: Typer's to parse."""
    if _COMPLETION_VARIABLE in os.environ:
        return None
    given: set[str] = set()
    i = 0
    while i < len(args) and args[i] in GLOBAL_FLAGS and args[i] not in given:
        given.add(args[i])
        i += 1
    if i == len(args) or args[i] not in FORMS:
        return None
    command = args[i]
    positionals, flags, options = FORMS[command]
    arguments: dict = {}
    given_positionals = 0
    rest = args[i + 1:]
    j = 0
    while j < len(rest):
        arg = rest[j]
        keyword = flags.get(arg)
        option = options.get(arg)
        if keyword is not None and keyword not in arguments:
            arguments[keyword] = True
        elif option is not None and option[0] not in arguments and j + 1 < len(rest):
            value = rest[j + 1]
            if not value or value.startswith("-") or (option[1] is not None and value not in option[1]):
                return None
            arguments[option[0]] = [value] if option[0] in _LISTS else value
            j += 1
        elif (keyword is None and option is None and arg and not arg.startswith("-")
              and given_positionals < len(positionals)):
            arguments[positionals[given_positionals]] = arg
            given_positionals += 1
        else:
            return None
        j += 1
    if given_positionals < len(positionals):
        return None
    return command, arguments, given


def run(form: tuple[str, dict, set[str]]) -> int:
    """Run a command line `parse` made into `form`; return its exit code."""
    command, arguments, global_flags = form
    from ckpttool.cli import render
    from ckpttool.cli.errors import run_body, set_debug

    if command == "latest":
        from ckpttool.cli.hot.latest import run as body
    elif command == "inspect":
        from ckpttool.cli.hot.inspect import run as body
    elif command == "verify":
        from ckpttool.cli.hot.verify import run as body
    elif command == "ls":
        from ckpttool.cli.hot.ls import run as body
    else:
        from ckpttool.cli.hot.convert import run as body
    set_debug("--debug" in global_flags)  # what the app's global options do (cli/app.root)
    render.begin_invocation("--no-color" in global_flags)
    return run_body(body, command, bool(arguments.get("json_out")), **arguments)
