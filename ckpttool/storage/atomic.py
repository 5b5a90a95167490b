"""Atomic file replacement: temp file in the same directory, fsync, rename,
fsync of the directory. Readers see the old file or the new one, never a mix,
and a crash leaves at worst a `NAME.tmp<32 hex digits>` file behind (the
pattern TensorFlow uses for its own state-file temps, so `prune --clean` can
tell such debris from user files).

Every temp file of the project is made here: a name nobody can predict (the
first 8 hex digits are our pid, so a later run can tell a dead writer's temp
from a live one's; the other 24 are random), created with
O_CREAT|O_EXCL|O_NOFOLLOW, so a symlink or file planted beside a destination
is never written through. `commit_section()` defers Ctrl-C and termination
signals while a set of files is moved into place, so an interrupt never
leaves half a commit.

Each function takes an optional `dir_fd`: the descriptor of the directory a path is in (a
prune's checked directory), through which the file is then made, replaced and removed by its
name alone, so a component of the path swapped for a symlink since the directory was checked
redirects nothing.

The replacement keeps the permission bits (and, when we may, the owner) of
the file it replaces, and a new file gets the umask's mode as TensorFlow's
files do: TensorBoard or an eval job running as another user must still be
able to read a state file or an index that ckpttool rewrote.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import threading
from typing import BinaryIO, Iterator

from ckpttool.errors import Refused
from ckpttool.storage.paths import local_absolute

TEMP_SUFFIX_RE = re.compile(r"\.tmp[0-9a-f]{32}$")
# read-write: a writer may reread its temp through the descriptor it made (never by its name, which
# whoever may write beside it can replace by then)
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def temp_name_for(path: str) -> str:
    """A fresh temp path beside `path`, named as TensorFlow names its temps (`.tmp` and 32 hex
    digits): our pid in 8 of them (see temp_writer_pid), 96 random bits in the others."""
    return f"{path}.tmp{os.getpid() & 0xFFFFFFFF:08x}{os.urandom(12).hex()}"


def temp_writer_pid(path: str) -> int | None:
    """The pid of the process that made temp `path` with temp_name_for, or None if it is no such name."""
    match = TEMP_SUFFIX_RE.search(path)
    return int(match[0][4:12], 16) if match else None


def _name(path: str, dir_fd: int | None) -> str:
    """How `path` is named to the system: as it is, or relative to its directory's descriptor."""
    return path if dir_fd is None else os.path.basename(path)


def _take_mode_and_owner(fd: int, replaced: str, dir_fd: int | None = None) -> None:
    """Give the file open at `fd` the mode (and owner, when we may) of `replaced`, if it is a
    regular file. A symlink in its place is replaced, not followed: the file it names (anyone's:
    a link planted by another user) lends neither its owner nor its mode."""
    try:
        old = os.stat(_name(replaced, dir_fd), dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return  # a new file: os.open gave it 0o666 minus the umask, as TensorFlow's get
    if not stat.S_ISREG(old.st_mode):
        return
    os.fchmod(fd, stat.S_IMODE(old.st_mode))
    if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.fchown(fd, old.st_uid, old.st_gid)
        except PermissionError:
            pass  # only root may give a file away; the mode is kept all the same


def create_temp_beside(path: str, mode_of: str | None = None, into: list[str] | None = None,
                       dir_fd: int | None = None) -> tuple[int, str]:
    """(fd, temp path) of a new file beside `path`, with the mode `path` has or would get
    (or the mode of `mode_of`: a backup copy is no more readable than its original).

    `into`: the caller's list of its temps, to which the new one is added as it is created, with
    interrupts held: a Ctrl-C (or SIGTERM) then finds it there to remove, never a temp made but not
    yet known (a signal between os.open and the caller's append left one behind)."""
    tmp = temp_name_for(local_absolute(path))
    fd = None
    try:
        with commit_section():
            # never through a planted symlink or into an existing file
            fd = os.open(_name(tmp, dir_fd), _CREATE_FLAGS, 0o666, dir_fd=dir_fd)
            if into is not None:
                into.append(tmp)
            _take_mode_and_owner(fd, mode_of or path, dir_fd)
    except BaseException:
        if fd is not None:
            os.close(fd)
            discard_replacement(tmp, dir_fd)
        raise
    return fd, tmp


def prepare_replacement(path: str, data: bytes, mode_of: str | None = None, into: list[str] | None = None,
                        dir_fd: int | None = None) -> str:
    """A synced temp file beside `path` holding `data`, ready for commit_replacement (`into`: as
    for create_temp_beside)."""
    fd, tmp = create_temp_beside(path, mode_of, into, dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        discard_replacement(tmp, dir_fd)
        raise
    return tmp


def link_temp_beside(source: str, path: str, into: list[str] | None = None) -> str:
    """A hard link to `source` under a fresh temp name beside `path` (link() never follows or
    replaces what is at the new name); its path, ready for commit_replacement (`into`: as for
    create_temp_beside)."""
    tmp = temp_name_for(local_absolute(path))
    with commit_section():
        os.link(source, tmp, follow_symlinks=False)
        if into is not None:
            into.append(tmp)
    return tmp


def discard_replacement(tmp: str, dir_fd: int | None = None) -> None:
    try:
        os.unlink(_name(tmp, dir_fd), dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def commit_replacement(tmp: str, path: str, dir_fd: int | None = None) -> None:
    os.replace(_name(tmp, dir_fd), _name(path, dir_fd), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if dir_fd is None:
        fsync_directory(os.path.dirname(local_absolute(path)))
    else:
        os.fsync(dir_fd)


def write_bytes_atomic(path: str, data: bytes, mode_of: str | None = None, dir_fd: int | None = None) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix."""
    tmp = prepare_replacement(path, data, mode_of, dir_fd=dir_fd)
    try:
        commit_replacement(tmp, path, dir_fd)
    except BaseException:
        discard_replacement(tmp, dir_fd)
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

    def __init__(self, path: str, sync: bool = True, into: list["StagedFile"] | None = None):
        self.path = path
        self.sync = sync
        # `into`: the caller's staged files, this one added with interrupts held (see create_temp_beside).
        # An interrupt held meanwhile is raised as the section ends: the temp is then removed here.
        self.tmp = None
        try:
            with commit_section():
                fd, self.tmp = create_temp_beside(path)
                try:
                    self.handle = os.fdopen(fd, "wb")
                except BaseException:
                    os.close(fd)
                    raise
                if into is not None:
                    into.append(self)
        except BaseException:
            if self.tmp is not None:
                if hasattr(self, "handle"):
                    self.handle.close()
                discard_replacement(self.tmp)
            raise

    def commit(self) -> None:
        """Sync, close and rename into place; whatever stops it (a full disk at the flush, SIGTERM
        during a long fsync or just before the rename) removes the temp: the file is then there
        whole, or not at all, and nothing is left beside it."""
        try:
            self.handle.flush()
            if self.sync:
                os.fsync(self.handle.fileno())
            self._check_still_ours()
            self.handle.close()
            commit_replacement(self.tmp, self.path)
        except _NotOurs:
            self.handle.close()  # the name is another's now: nothing of ours to remove
            raise Refused(f"{self.tmp} was replaced while it was written (by whoever may write in its "
                          f"directory); {self.path} not written") from None
        except BaseException:
            self.discard()  # after the rename there is no temp left to remove: nothing happens
            raise

    def _check_still_ours(self) -> None:
        """_NotOurs unless the temp's name still names the file written through `handle`: the name,
        in a directory others may write in, could be a planted link by now, which the rename would
        make DST."""
        opened = os.fstat(self.handle.fileno())
        try:
            found = os.lstat(self.tmp)
        except FileNotFoundError:
            raise _NotOurs from None
        if (found.st_dev, found.st_ino) != (opened.st_dev, opened.st_ino):
            raise _NotOurs

    def discard(self) -> None:
        """Remove the temp file, whatever closing it raises (a full disk fails the flush again)."""
        try:
            self.handle.close()
        except OSError:
            pass  # its bytes are being thrown away
        finally:
            discard_replacement(self.tmp)


class _NotOurs(Exception):
    """A staged file's temp name no longer names the file it wrote."""


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


# Signals deferred by commit_section: Ctrl-C and the ones cron `timeout`, systemd,
# Kubernetes and a closed terminal send.
_DEFERRED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def commit_section() -> Iterator[None]:
    """Defer SIGINT, SIGTERM and SIGHUP while the block runs (moving a set of files into place
    and the bookkeeping that goes with it), then act on the first one received as it would have
    been acted on. Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, object]] = []
    previous: dict[int, object] = {}

    def hold(signum, frame):
        received.append((signum, frame))

    try:
        for signum in _DEFERRED_SIGNALS:
            handler = signal.getsignal(signum)
            if handler in (signal.SIG_IGN, None):
                continue  # ignored (nohup, `cmd &`): nothing to defer
            previous[signum] = handler
            signal.signal(signum, hold)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signum, frame = received[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)  # Python's SIGINT handler raises KeyboardInterrupt here
            else:
                signal.raise_signal(signum)  # the default action (termination), now that the commit is done
