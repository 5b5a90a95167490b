"""The docs site's command reference (docs/commands/*.md), generated from the Typer app and the
description the man page is written from (cli/help_text.py, cli/reference.py): every option with its
value, choices and default, the arguments, the JSON fields, the exit codes and the examples.
scripts/gen_docs.py writes the pages and its --check fails in CI when one differs."""
from __future__ import annotations

import re

from ckpttool.cli.docs import Cmd, Opt, describe
from ckpttool.cli.help_text import EXAMPLES, SUMMARIES

HEADER = "<!-- Generated from the Typer app and its reference by scripts/gen_docs.py: do not edit. -->"

_CODE_SPAN = re.compile(r"(`[^`]*`)")
_MARKDOWN_SPECIAL = re.compile(r"([\\*_\[\]#|])")


def _text(text: str) -> str:
    """Help text as Markdown: its `code spans` kept, everything else taken literally."""
    return "".join(part if part.startswith("`") and part.endswith("`") and len(part) > 1
                   else _MARKDOWN_SPECIAL.sub(r"\\\1", part).replace("<", "&lt;") for part in _CODE_SPAN.split(text))


def _paragraphs(text: str) -> list[str]:
    """A docstring's paragraphs, each on one line."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.replace("\b", "")) if p.strip()]


def _option(o: Opt) -> str:
    value = f" {o.metavar}" if o.takes_value else ""
    given = [n for n in o.names if n not in o.negations]
    names = ", ".join(f"`{n}{value}`" if n.startswith("--") or len(given) == 1 else f"`{n}`" for n in given)
    names += "".join(f" / `{n}`" for n in o.negations)  # --clear-devices / --keep-devices
    notes = []
    if o.required:
        notes.append("Required.")
    if o.choices:
        notes.append("Choices: " + ", ".join(f"`{c}`" for c in o.choices) + ".")
    if o.default is not None:
        notes.append(f"Default: `{o.default}`.")
    if o.minimum is not None:
        notes.append(f"At least {o.minimum}.")
    return f"- {names}: {_text(' '.join(o.help.split()))}" + "".join(f" *{n}*" for n in notes)


def _fields(fields, depth: int = 0) -> list[str]:
    lines = []
    indent = "    " * depth
    for f in fields:
        when = f" *({_text(f.when)})*" if f.when else ""
        if f.when and f.when.startswith("--"):  # "--meta of a .safetensors file": the option as code
            option, _, rest = f.when.partition(" ")
            when = f" *(with `{option}`{' ' + _text(rest) if rest else ''})*"
        lines.append(f"{indent}- `{f.name}`: {_text(f.meaning)}{when}" + (", each:" if f.items else ""))
        lines += _fields(f.items, depth + 1)
    return lines


def _usage(c: Cmd) -> str:
    return " ".join(["ckpttool", c.name, "[OPTIONS]", *c.arguments])


def command_page(c: Cmd) -> str:
    from ckpttool.cli.reference import COMMON, JSON_INTRO, OUTPUT, exit_codes

    out = [HEADER, f"# ckpttool {c.name}", "", "```text", _usage(c), "```", ""]
    for paragraph in _paragraphs(c.help):
        out += [_text(paragraph), ""]
    out += ["## Arguments", ""]
    out += [f"- `{a.name}`: {_text(' '.join(a.help.split()))}" + (" *Required.*" if a.required else "")
            for a in c.args]
    out += ["", "## Options", ""]
    out += [_option(o) for o in c.options]
    out += ["", "The global options (`--debug`, `--no-color`, `--storage-option`) go before or after the "
                "command: see [the commands](index.md#global-options).", ""]
    documents = OUTPUT[c.name]
    out += ["## JSON output", "", JSON_INTRO.get(c.name, "With `--json`, one document on stdout:"), ""]
    out += _fields(COMMON + documents[0].fields)
    for document in documents[1:]:
        out += ["", f"With `{document.when}`, this document instead:", ""]
        out += _fields(COMMON + document.fields)
    out += ["", "A run that fails prints [the error document](index.md#errors) instead.", ""]
    out += ["## Exit status", ""]
    out += [f"- `{code}`: {_text(meaning)}" for code, meaning in exit_codes(c.name)]
    out += ["", "## Examples", "", "```sh"]
    out += [f"{command}   # {comment}" for command, comment in EXAMPLES[c.name]]
    out += ["```", ""]
    return "\n".join(out)


def index_page(global_opts: list[Opt], commands: list[Cmd]) -> str:
    from ckpttool.cli.reference import COMMON, ENVIRONMENT, ERROR, EXIT_STATUS

    out = [HEADER, "# Commands", "", "Every command takes `--json` (one document on stdout) and ends with one of "
           "the exit codes below; `ckpttool COMMAND --help` and `man ckpttool` say what these pages say.", "",
           "| command | what it does |", "|---|---|"]
    out += [f"| [`{c.name}`]({c.name}.md) | {_text(SUMMARIES[c.name])} |" for c in commands]
    out += ["", "## Global options", "", "Given before the command's name, or anywhere after it.", ""]
    out += [_option(o) for o in global_opts]
    out += ["", "## Exit status", ""]
    out += [f"- `{code}`: {_text(meaning)}" for code, meaning in EXIT_STATUS]
    out += ["", "## Errors", "", "A run that fails says one `error:` line on stderr (and a `hint:` line where "
            "one helps); with `--json` it also prints this document on stdout:", ""]
    out += _fields(COMMON + ERROR.fields)
    out += ["", "## Environment", ""]
    out += [f"- `{name}`: {_text(meaning)}" for name, meaning in ENVIRONMENT]
    out.append("")
    return "\n".join(out)


def pages(group) -> dict[str, str]:
    """{file name under docs/commands/: its text} for every command, and the index."""
    global_opts, commands = describe(group)
    result = {"index.md": index_page(global_opts, commands)}
    result.update({f"{c.name}.md": command_page(c) for c in commands})
    return result
