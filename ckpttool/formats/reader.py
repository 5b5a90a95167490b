"""One entry point for reading a checkpoint whatever its format (V2 bundle or V1 file)."""
from __future__ import annotations

import os

from ckpttool.errors import CorruptCheckpoint, NotFound
from ckpttool.formats.bundle import Bundle, open_bundle
from ckpttool.formats.table import MAGIC_BYTES
from ckpttool.formats.v1 import V1Checkpoint

Reader = Bundle | V1Checkpoint


def is_v1_file(path: str) -> bool:
    """True if `path` is a regular file ending in the table magic (a V1 checkpoint)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() < 48:
                return False
            handle.seek(-8, os.SEEK_END)
            return handle.read(8) == MAGIC_BYTES
    except (IsADirectoryError, FileNotFoundError, PermissionError):
        return False


def detect_format(prefix: str) -> str:
    if os.path.isfile(prefix + ".index"):
        return "v2"
    if os.path.isfile(prefix):
        if is_v1_file(prefix):
            return "v1"
        raise CorruptCheckpoint(f"{prefix} is not a checkpoint (no index table found)")
    raise NotFound(f"no checkpoint at {prefix}")


def open_checkpoint(prefix: str, fmt: str | None = None) -> Reader:
    fmt = fmt or detect_format(prefix)
    return open_bundle(prefix) if fmt == "v2" else V1Checkpoint(prefix)
