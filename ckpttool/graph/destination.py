"""Where freeze and export-json write (`-o`): refused when it would replace a
directory or, without --overwrite, a file; missing parent directories are
created (as tf.io.gfile.makedirs would), only once there is something to write."""
from __future__ import annotations

import os

from ckpttool.errors import BadInput, Refused
from ckpttool.formats.atomic import write_bytes_atomic


def check_destination(path: str, overwrite: bool) -> str:
    """The absolute output path; Refused (exit 4) naming what is in the way, checked before any work."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise Refused(f"{path} is a directory; refusing to replace it with a file", hint="name a file inside it")
    if os.path.lexists(path) and not overwrite:
        raise Refused(f"{path} exists (use --overwrite to replace it)")
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BadInput(f"cannot create {path}: {parent} is a file, not a directory")
    return path


def write_destination(path: str, data: bytes) -> None:
    """Create the missing parent directories, then write `data` atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_bytes_atomic(path, data)
