"""An exclusive lock per checkpoint directory, so that concurrent prune/repair
runs (two cron jobs, a person and a cron job) take turns."""
from __future__ import annotations

import contextlib
import fcntl
import os
import time

from ckpttool.errors import Refused

LOCK_FILENAME = ".ckpttool.lock"


@contextlib.contextmanager
def directory_lock(directory: str, timeout: float = 600.0):
    """Hold an exclusive flock on DIR/.ckpttool.lock; Refused if not had within `timeout` s.

    The lock file is left in place: removing it would let a waiter lock a
    file that a third run no longer sees.
    """
    path = os.path.join(directory, LOCK_FILENAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Refused(f"{directory} is locked by another ckpttool run ({path})") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock
