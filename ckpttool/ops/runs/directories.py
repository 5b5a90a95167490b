"""What a DIR argument must be (ls, latest, prune, repair, verify --all), and what
to tell someone who gave something else: a file where a directory is wanted is
usually a checkpoint file meant for `inspect`, or the state file meant for its
directory. Imports nothing heavy: `latest` and `ls` start fast."""
from __future__ import annotations

from ckpttool.errors import BadInput, NotFound
from ckpttool.storage import fs
from ckpttool.formats.tf.state import STATE_FILENAME


def require_directory(path: str, command: str) -> None:
    """NotFound when nothing is at `path`; BadInput saying what it is (and what was
    probably meant) when it is a file."""
    if fs.is_dir(path):
        return
    if not fs.is_file(path):
        from ckpttool.ops.runs.hints import missing_directory

        message, hint = missing_directory(path) or (f"no such directory: {path}", None)
        raise (BadInput if message.endswith("not a directory") else NotFound)(message, hint=hint)
    import shlex

    if fs.basename(path) == STATE_FILENAME:
        parent = fs.dirname(path) or "."
        raise BadInput(f"{path} is a file (the state file of {parent}), not a directory",
                       hint=f"did you mean `ckpttool {command} {shlex.quote(parent)}`?")
    raise BadInput(f"{path} is a file, not a directory",
                   hint=f"did you mean `ckpttool inspect {shlex.quote(path)}`?")
