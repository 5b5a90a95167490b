"""One entry point for reading a checkpoint whatever its format (V2 bundle or V1 file)."""
from __future__ import annotations

import os

from ckpttool.errors import CorruptCheckpoint, NotFound
from ckpttool.formats.bundle import Bundle, open_bundle
from ckpttool.formats.table import is_table_file
from ckpttool.formats.v1 import V1Checkpoint

Reader = Bundle | V1Checkpoint


def detect_format(prefix: str) -> str:
    if os.path.isfile(prefix + ".index"):
        return "v2"
    if os.path.isfile(prefix):
        if is_table_file(prefix):
            return "v1"
        raise CorruptCheckpoint(f"{prefix} is not a checkpoint (no index table found)")
    raise NotFound(f"no checkpoint at {prefix}")


def open_checkpoint(prefix: str, fmt: str | None = None) -> Reader:
    fmt = fmt or detect_format(prefix)
    return open_bundle(prefix) if fmt == "v2" else V1Checkpoint(prefix)
