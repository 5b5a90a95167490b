"""`ckpttool completion SHELL`: the shell completion script, printed or installed
where the shell finds it (the wheel also installs it system-wide)."""
from __future__ import annotations

import enum
import os
import sys
from typing import Annotated

import typer

from ckpttool.cli import render
from ckpttool.cli.options import Json


class Shell(str, enum.Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def _install_path(shell: Shell) -> tuple[str, str | None]:
    """Where each shell looks for a user's completions, and what else the user must do, if anything."""
    home = os.path.expanduser("~")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    if shell is Shell.bash:
        return os.path.join(data, "bash-completion", "completions", "ckpttool"), None
    if shell is Shell.fish:
        return os.path.join(config, "fish", "completions", "ckpttool.fish"), None
    return (os.path.join(home, ".zfunc", "_ckpttool"),
            "add `fpath+=(~/.zfunc); autoload -U compinit && compinit` to ~/.zshrc if it is not there")


def command(
    ctx: typer.Context,
    shell: Annotated[Shell, typer.Argument(metavar="SHELL", help="bash, zsh or fish.", show_default=False)],
    install: Annotated[bool, typer.Option("--install", help="Write it where the shell loads user completions from, instead of printing it.")] = False,
    json_out: Json = False,
):
    """Print the completion script for SHELL, or --install it for this user.

    bash: `ckpttool completion bash --install` (or `source <(ckpttool completion bash)` in ~/.bashrc).
    """
    from ckpttool.cli.docs import completion_script
    from ckpttool.storage.atomic import write_bytes_atomic

    script = completion_script(ctx.find_root().command, shell.value)
    if not install:
        if json_out:
            render.emit_json("completion", {"shell": shell.value, "script": script})
        else:
            sys.stdout.write(script if script.endswith("\n") else script + "\n")
        return 0
    path, note = _install_path(shell)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_bytes_atomic(path, script.encode())
    if json_out:
        render.emit_json("completion", {"shell": shell.value, "installed": path, "note": note})
    else:
        render.print_lines([f"installed {shell.value} completion: {path}"] + ([f"then {note}"] if note else []))
    return 0
