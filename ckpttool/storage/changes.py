"""Waiting for a directory to change, for `watch`: Linux file events (inotify, through ctypes: no
package to install) on a local directory and its subdirectories one level down (where step
directories get their commit markers), with plain polling wherever inotify is missing (another
system, a file system that sends no events, the watch limit reached). Events only wake the waiter
early: the caller looks at the directory again at least every interval whatever happens, so a
missed event delays an answer, never loses one.

A bucket is polled with one listing per poll (`bucket_listing`): every object under the prefix in
one paginated request, from which the top-level entries a scan needs are derived too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys
import time

from ckpttool.storage import fs

# inotify(7)
_IN_ATTRIB, _IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO = 0x4, 0x8, 0x40, 0x80
_IN_CREATE, _IN_DELETE, _IN_DELETE_SELF, _IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
_IN_Q_OVERFLOW, _IN_IGNORED, _IN_ONLYDIR, _IN_DONT_FOLLOW, _IN_ISDIR = 0x4000, 0x8000, 0x1000000, 0x2000000, 0x40000000
# Not IN_MODIFY: a large save would wake the waiter once per write. A file is done when it is closed
# (IN_CLOSE_WRITE) or renamed into place (IN_MOVED_TO).
_MASK = (_IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
         | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR | _IN_DONT_FOLLOW)
_EVENT = struct.Struct("iIII")
_MAX_SUBDIRECTORY_WATCHES = 4096  # beyond this, subdirectories are polled


class Waiter:
    """`wait(seconds)` returns after `seconds`, or earlier when the directory changed (inotify)."""

    def __init__(self, directory: str):
        self.directory = directory
        self._fd = None
        self._watched: dict[int, str] = {}
        if not fs.is_url(directory) and sys.platform.startswith("linux"):
            self._fd = _inotify_init()
            if self._fd is not None and not self._add(directory):
                self.close()
            if self._fd is not None:
                self._add_subdirectories(directory)

    @property
    def events(self) -> bool:
        """Whether file events wake it (else it polls)."""
        return self._fd is not None

    def wait(self, seconds: float) -> bool:
        """True when woken by a change."""
        seconds = max(0.0, seconds)
        if self._fd is None:
            time.sleep(seconds)
            return False
        readable, _, _ = select.select([self._fd], [], [], seconds)
        if not readable:
            return False
        self._drain()
        return True

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if mask & _IN_IGNORED:
                    self._watched.pop(wd, None)
                elif mask & _IN_ISDIR and mask & (_IN_CREATE | _IN_MOVED_TO) and self._watched.get(wd) == self.directory:
                    self._add(os.path.join(self.directory, os.fsdecode(name)))

    def _add(self, path: str) -> bool:
        if len(self._watched) > _MAX_SUBDIRECTORY_WATCHES:
            return False
        wd = _libc().inotify_add_watch(self._fd, os.fsencode(path), _MASK)
        if wd < 0:
            return False  # gone already, not a directory (IN_ONLYDIR), a link, or the limit reached
        self._watched[wd] = path
        return True

    def _add_subdirectories(self, directory: str) -> None:
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        self._add(entry.path)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Waiter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_loaded: dict[str, object] = {}


def _libc():
    if "libc" not in _loaded:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        _loaded["libc"] = libc
    return _loaded["libc"]


def _inotify_init() -> int | None:
    try:
        fd = _libc().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):  # no libc by that name, or one without inotify
        return None
    return fd if fd >= 0 else None  # e.g. the instance limit (fs.inotify.max_user_instances): polling


def bucket_listing(url: str) -> tuple[tuple, list[fs.Entry]]:
    """One listing of everything under `url`: (a signature that changes whenever an object under it
    is added, removed or rewritten, the entries directly in it as fs.list_dir gives them: objects,
    and the prefixes one level down as directories). Keys with `.`, `..` or empty segments below
    `url` are left out, as every walk of a bucket leaves them."""
    from ckpttool.storage import remote

    protocol, root = remote.split_url(url)
    base = remote.join_url(protocol, root) + "/"
    signature = []
    top: dict[str, fs.Entry] = {}
    for entry in remote.list_tree(url):
        if not entry.path.startswith(base):
            continue
        relative = entry.path[len(base):]
        if remote.key_problem(relative, rooted=False) or remote.address_problem(protocol, entry.path[len(protocol) + 3:]):
            continue
        signature.append((relative, entry.size, entry.mtime))
        first, _, rest = relative.partition("/")
        if rest:
            top.setdefault(first, fs.Entry(first, base + first, "dir", 0, 0.0))
        else:
            top[first] = fs.Entry(first, entry.path, "file", entry.size, entry.mtime or 0.0)
    return tuple(sorted(signature)), list(top.values())
