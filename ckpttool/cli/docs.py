"""Shell completions (bash, zsh, fish) and the man page, generated from the
Typer app: one description of the commands serves `ckpttool completion`,
scripts/gen_docs.py (which writes completions/, man/ and the docs site's
command pages, checked in CI) and the copies installed with the wheel, so none
of them drifts from the code."""
from __future__ import annotations

from dataclasses import dataclass, field

from ckpttool.cli.help_text import EXAMPLES, SUMMARIES


@dataclass
class Opt:
    names: list[str]
    help: str
    takes_value: bool
    choices: list[str] = field(default_factory=list)  # the values a fixed-choice option takes
    metavar: str = "VALUE"  # what the value is (N, REGEX, OLD=NEW, DURATION ...)
    default: str | None = None  # as given on the command line (`auto`, `0.0`, `--clear-devices`); None: none
    required: bool = False
    minimum: int | float | None = None  # of a number that has one (--min-elements N: at least 0)
    negations: list[str] = field(default_factory=list)  # of a flag: its off switch (--keep-devices), among names


@dataclass
class Arg:
    name: str  # as the usage line shows it: DIR, SRC...
    help: str
    required: bool


@dataclass
class Cmd:
    name: str
    help: str
    args: list[Arg]
    options: list[Opt]

    @property
    def arguments(self) -> list[str]:
        return [a.name for a in self.args]


def describe(group):
    """(global options, commands) of the app's click group (given, so that this module never
    imports the app that registers the command calling it)."""

    def options_of(command):
        opts = []
        for param in command.params:
            if param.param_type_name == "option":
                choices = [str(c) for c in getattr(param.type, "choices", None) or ()]
                metavar = "|".join(choices) if choices else (param.metavar or param.name.upper())
                opts.append(Opt(list(param.opts) + list(param.secondary_opts), param.help or "",
                                not param.is_flag, choices, metavar, _default(param), param.required,
                                getattr(param.type, "min", None), list(param.secondary_opts)))
        opts.append(Opt(["-h", "--help"], "Show the help and exit.", False))
        return opts
    commands = []
    for name, command in group.commands.items():
        args = [Arg((getattr(p, "metavar", None) or p.name).upper(), getattr(p, "help", None) or "", p.required)
                for p in command.params if p.param_type_name == "argument"]
        commands.append(Cmd(name, (command.help or "").strip(), args, options_of(command)))
    return options_of(group), commands


def _default(param) -> str | None:
    """An option's default as one would type it, or None when giving nothing means nothing (an
    unset value, a flag that is off)."""
    value = param.default
    if value is None or value is False or value == [] or callable(value):
        return None
    if param.is_flag:
        return param.opts[0] if value else (param.secondary_opts or [None])[0]
    return str(getattr(value, "value", value))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def render_bash(global_opts, commands) -> str:
    names = " ".join(c.name for c in commands)
    cases = "\n".join(
        f"        {c.name}) opts=\"{' '.join(n for o in c.options for n in o.names)}\" ;;" for c in commands)
    choice_cases = "\n".join(
        f"        {'|'.join(o.names)}) COMPREPLY=($(compgen -W \"{' '.join(o.choices)}\" -- \"$cur\")); return ;;"
        for o in _unique_choice_options(commands))
    return f"""# bash completion for ckpttool -- generated from the Typer app by ckpttool/cli/docs.py, do not edit
_ckpttool() {{
    local cur cmd opts i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "${{COMP_WORDS[COMP_CWORD-1]}}" in
{choice_cases}
    esac
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W "{names} {' '.join(n for o in global_opts for n in o.names)}" -- "$cur"))
        return
    fi
    case "$cmd" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _ckpttool ckpttool
"""


def _unique_choice_options(commands) -> list[Opt]:
    seen: dict[tuple[str, ...], Opt] = {}
    for c in commands:
        for o in c.options:
            if o.choices:
                seen.setdefault(tuple(o.names), o)
    return list(seen.values())


def _zsh_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "'\\''").replace("[", "\\[").replace("]", "\\]").replace(":", "\\:")


def render_zsh(global_opts, commands) -> str:
    def spec(o: Opt) -> str:
        value = (f":value:({' '.join(o.choices)})" if o.choices else ":value:_files") if o.takes_value else ""
        desc = _zsh_escape(_first_line(o.help))
        if len(o.names) == 1:
            return f"'{o.names[0]}[{desc}]{value}'"
        return f"'({' '.join(o.names)})'{{{','.join(o.names)}}}'[{desc}]{value}'"
    command_list = "\n".join(f"        '{c.name}:{_zsh_escape(_first_line(c.help))}'" for c in commands)
    cases = "\n".join(
        f"        {c.name})\n            _arguments -s {' '.join(spec(o) for o in c.options)} '*:path:_files' ;;"
        for c in commands)
    return f"""#compdef ckpttool
# zsh completion for ckpttool -- generated from the Typer app by ckpttool/cli/docs.py, do not edit
_ckpttool() {{
    local -a commands
    commands=(
{command_list}
    )
    _arguments -C {' '.join(spec(o) for o in global_opts)} '1:command:->command' '*::arg:->args'
    case $state in
    command) _describe 'command' commands ;;
    args)
        case $words[1] in
{cases}
        esac ;;
    esac
}}
_ckpttool "$@"
"""


def render_fish(global_opts, commands) -> str:
    names = " ".join(c.name for c in commands)
    lines = ["# fish completion for ckpttool -- generated from the Typer app by ckpttool/cli/docs.py, do not edit",
             "complete -c ckpttool -f"]
    for c in commands:
        desc = _first_line(c.help).replace("'", "\\'")
        lines.append(f"complete -c ckpttool -n 'not __fish_seen_subcommand_from {names}' -a {c.name} -d '{desc}'")

    def fish_opt(condition: str, o: Opt) -> str:
        parts = []
        for n in o.names:
            parts.append(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}")
        extra = (f" -x -a '{' '.join(o.choices)}'" if o.choices else " -r -F") if o.takes_value else ""
        return f"complete -c ckpttool -n '{condition}' {' '.join(parts)}{extra} -d '{_first_line(o.help).replace(chr(39), chr(92) + chr(39))}'"
    for o in global_opts:
        lines.append(fish_opt(f"not __fish_seen_subcommand_from {names}", o))
    for c in commands:
        lines.append(f"complete -c ckpttool -n '__fish_seen_subcommand_from {c.name}' -F")
        for o in c.options:
            lines.append(fish_opt(f"__fish_seen_subcommand_from {c.name}", o))
    return "\n".join(lines) + "\n"


def _roff(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-").replace("\n.", "\n\\&.")


def render_man(global_opts, commands) -> str:
    from ckpttool.version import __version__
    from ckpttool.cli.reference import ENVIRONMENT, EXIT_CODES, EXIT_STATUS, OUTPUT

    out = [
        f'.TH CKPTTOOL 1 "" "ckpttool {__version__}" "User Commands"',
        ".\\\" generated from the Typer app by ckpttool/cli/docs.py from the Typer app; do not edit",
        ".SH NAME",
        "ckpttool \\- inspect, verify, prune and convert TensorFlow checkpoint directories",
        ".SH SYNOPSIS",
        ".B ckpttool",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] \\fIARGS\\fR...",
        ".SH DESCRIPTION",
        _roff("ckpttool reads TensorFlow checkpoints (V2 tensor bundles, V1 files, TF2 object-based "
              "checkpoints and SavedModel variables) without importing TensorFlow. Every command takes "
              "--json and returns stable exit codes."),
        ".SH GLOBAL OPTIONS",
    ]
    for o in global_opts:
        out += [".TP", f"\\fB{_roff(', '.join(o.names))}\\fR", _roff(o.help)]
    out.append(".SH COMMANDS")
    for c in commands:
        out += [".TP", f"\\fB{c.name}\\fR", _roff(SUMMARIES.get(c.name, _first_line(c.help)))]
    for c in commands:
        args = " ".join(f"\\fI{a}\\fR" for a in c.arguments)
        out += [".SS", f"\\fBckpttool {c.name}\\fR [\\fIOPTIONS\\fR] {args}".rstrip(), _roff(c.help)]
        for o in c.options:
            value = f" \\fI{_roff(o.metavar)}\\fR" if o.takes_value else ""
            out += [".TP", f"\\fB{_roff(', '.join(o.names))}\\fR{value}", _roff(o.help)]
        if c.name in EXAMPLES:
            out += [".PP", "Examples:", ".PP", ".RS", ".nf"]
            out += [_roff(f"{command}   # {comment}") for command, comment in EXAMPLES[c.name]]
            out += [".fi", ".RE"]
        out += [".PP", _roff(f"JSON (--json): {json_summary(OUTPUT[c.name])}.")]
        out += [".PP", "Exit status (and 2, 70, 130 as under EXIT STATUS):", ".RS"]
        for code, meaning in EXIT_CODES[c.name]:
            out += [".TP", f"\\fB{code}\\fR", _roff(meaning)]
        out.append(".RE")
    out.append(".SH EXIT STATUS")
    for code, meaning in EXIT_STATUS:
        out += [".TP", f"\\fB{code}\\fR", _roff(meaning)]
    out.append(".SH ENVIRONMENT")
    for name, meaning in ENVIRONMENT:
        out += [".TP", f"\\fB{name}\\fR", _roff(meaning)]
    out += [".SH SEE ALSO", "\\fBpython\\fR(1), \\fBgsutil\\fR(1), \\fBaws\\fR(1);",
            _roff("tf.train.load_checkpoint, tf.train.latest_checkpoint and tf.train.CheckpointManager "
                  "(TensorFlow's own reader, state file and retention); the safetensors format "
                  "(https://huggingface.co/docs/safetensors); the documentation of ckpttool in its docs/ folder "
                  "(guides, the Python API, formats, buckets).")]
    return "\n".join(out) + "\n"


def json_summary(documents) -> str:
    """The top-level fields of a command's JSON documents on one line (the docs pages list them all,
    with their meanings)."""
    def fields(document) -> str:
        return ", ".join(f.name + (f" (with {f.when})" if f.when else "") for f in document.fields)
    parts = [fields(documents[0])] + [f"with {d.when}: {fields(d)}" for d in documents[1:]]
    return "; ".join(parts)


SHELLS = ("bash", "zsh", "fish")


def completion_script(group, shell: str) -> str:
    global_opts, commands = describe(group)
    return {"bash": render_bash, "zsh": render_zsh, "fish": render_fish}[shell](global_opts, commands)


def man_page(group) -> str:
    global_opts, commands = describe(group)
    return render_man(global_opts, commands)
