"""The one seam through which files are opened for reading.

Local paths use plain `os` calls (no extra import on the fast path). Only
regular files are ever opened: a FIFO, a device or a directory where a file
is expected is refused at once instead of hanging or reading forever (a
symlink is followed, as TensorFlow follows it, and what it points at must be
a regular file too), and files whose size the format does not bound are read
with a cap.
"""
from __future__ import annotations

import os
import re
import stat
from typing import BinaryIO

from ckpttool.errors import BadInput, NotFound

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def is_url(path: str) -> bool:
    """True for `gs://...`, `s3://...` and other fsspec-style URLs."""
    return bool(_URL_RE.match(path))


def _kind_of(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _open_regular(path: str, what: str, missing_ok: bool = False, seen_regular: bool = False) -> int | None:
    """A read-only descriptor of the regular file at `path` (None if missing and `missing_ok`).

    What `path` is gets checked before it is opened (opening some devices
    does something), unless the caller has just seen it is a regular file;
    and again on the open descriptor, in case it was swapped meanwhile.
    O_NONBLOCK makes opening a FIFO return at once; it has no effect on reads
    of regular files.
    """
    try:
        if not seen_regular:
            _refuse_unless_regular(os.stat(path).st_mode, path, what)
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise NotFound(f"no {what} at {path}") from None
    except OSError as exc:
        raise NotFound(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        _refuse_unless_regular(os.fstat(fd).st_mode, path, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_unless_regular(mode: int, path: str, what: str) -> None:
    if not stat.S_ISREG(mode):
        raise BadInput(f"cannot read {path} as a {what}: it is {_kind_of(mode)}, not a regular file")


def open_input(path: str, what: str = "file") -> BinaryIO:
    """`path` opened for binary reading; NotFound / BadInput with one clear line otherwise."""
    fd = _open_regular(path, what)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: str, limit: int, what: str = "file", missing_ok: bool = False) -> bytes | None:
    """The whole file, refusing one larger than `limit` bytes (formats that do not bound their
    size); None for a missing file when `missing_ok`."""
    fd = _open_regular(path, what, missing_ok)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        chunks, total = [], 0
        # Never ask for `limit` bytes up front (read() allocates what it is
        # asked for): the stated size, then small steps if the file grows.
        want = min(size, limit) + 1
        while total <= limit:
            chunk = handle.read(want)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            want = min(1 << 20, limit + 1 - total)
    if total > limit:
        raise BadInput(f"{what} {path} is larger than {describe_size(limit)}, the most ckpttool reads; "
                       "refusing to read it (TensorFlow writes far smaller ones)")
    return b"".join(chunks)


def read_head_and_tail(path: str, head: int, tail: int, what: str = "file",
                       size: int | None = None) -> tuple[bytes, bytes, int]:
    """The first `head` and last `tail` bytes of a regular file, and its size (a cheap look at a
    table). A `size` says the caller has just seen a regular file of that size: one read then
    does for a small one."""
    fd = _open_regular(path, what, seen_regular=size is not None)
    try:
        if size is None or size > head:
            size = os.fstat(fd).st_size
        first = os.pread(fd, head, 0)
        if len(first) < head:
            size = len(first)  # the whole file: whatever `size` said
        last = first[max(0, size - tail):] if size <= head else os.pread(fd, tail, max(0, size - tail))
        return first, last, size
    finally:
        os.close(fd)


def read_range(path: str, offset: int, length: int, what: str = "file") -> bytes:
    """`length` bytes at `offset` of a regular file (fewer at its end)."""
    fd = _open_regular(path, what)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def describe_size(size: int) -> str:
    """`64 MiB`, `1.5 GiB`, `312 bytes`: sizes in messages."""
    if size < 1 << 20:
        return f"{size} bytes"
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"  # pragma: no cover
