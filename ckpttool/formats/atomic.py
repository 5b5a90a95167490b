"""Atomic file replacement: temp file in the same directory, fsync, rename,
fsync of the directory. Readers see the old file or the new one, never a mix,
and a crash leaves at worst a `*.tmp*` file behind."""
from __future__ import annotations

import os
import tempfile


def prepare_replacement(path: str, data: bytes) -> str:
    """A synced temp file beside `path` holding `data`, ready for commit_replacement."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        discard_replacement(tmp)
        raise
    return tmp


def discard_replacement(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def commit_replacement(tmp: str, path: str) -> None:
    os.replace(tmp, path)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix."""
    tmp = prepare_replacement(path, data)
    try:
        commit_replacement(tmp, path)
    except BaseException:
        discard_replacement(tmp)
        raise


def fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
