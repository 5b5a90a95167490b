"""The one seam through which files are opened for reading.

Local paths use plain `os` calls (no extra import on the fast path). Only
regular files are ever opened: a FIFO, a device or a directory where a file
is expected is refused at once instead of hanging or reading forever, and
files whose size the format does not bound are read with a cap.
"""
from __future__ import annotations

import os
import re
import stat
from typing import BinaryIO

from ckpttool.errors import BadInput, NotFound

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """True for `gs://...`, `s3://...` and other fsspec-style URLs."""
    return bool(_URL_RE.match(path))


def open_input(path: str, what: str = "file") -> BinaryIO:
    """`path` opened for binary reading; NotFound / BadInput with one clear line otherwise.

    O_NONBLOCK makes opening a FIFO return at once (it is then refused as not
    a regular file); it has no effect on reads of regular files.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotFound(f"no {what} at {path}") from None
    except OSError as exc:
        raise NotFound(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise BadInput(f"{path} is {kind}, not a {what}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: str, limit: int, what: str = "file") -> bytes:
    """The whole file, refusing one larger than `limit` bytes (formats that do not bound their size)."""
    with open_input(path, what) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BadInput(f"{what} {path} is larger than {limit // (1 << 20) or 1} MiB; refusing to read it "
                       "(TensorFlow writes far smaller ones)")
    return data
