"""Atomic file replacement: temp file in the same directory, fsync, rename,
fsync of the directory. Readers see the old file or the new one, never a mix,
and a crash leaves at worst a `*.tmp*` file behind."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO, Iterator


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


class StagedFile:
    """A file written through `handle` under a temporary name beside `path`;
    `commit()` moves it into place, `discard()` removes it. Several staged
    files can be committed in a chosen order (data before the index that names
    it), so an interrupted writer never leaves a destination. `sync=False`
    skips the fsync of the contents before the rename, as cp and TensorFlow's
    own bundle writer do: for gigabytes of tensor data it would double the
    time, while an index written last (synced) still decides what exists."""

    def __init__(self, path: str, sync: bool = True):
        self.path = path
        self.sync = sync
        directory = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o666 & ~_current_umask())  # as open() would create it, not mkstemp's 0600
            self.handle = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            discard_replacement(self.tmp)
            raise

    def commit(self) -> None:
        self.handle.flush()
        if self.sync:
            os.fsync(self.handle.fileno())
        self.handle.close()
        commit_replacement(self.tmp, self.path)

    def discard(self) -> None:
        self.handle.close()
        discard_replacement(self.tmp)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str, sync: bool = True) -> Iterator[BinaryIO]:
    """A binary handle whose contents replace `path` when the block ends; on any
    error or interrupt the temporary file is removed and `path` is untouched."""
    staged = StagedFile(path, sync)
    try:
        yield staged.handle
    except BaseException:
        staged.discard()
        raise
    staged.commit()
