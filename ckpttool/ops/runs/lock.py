"""An exclusive lock per checkpoint directory, so that concurrent prune/repair
runs (two cron jobs, a person and a cron job) take turns.

Local directories: flock on DIR itself, so no file is left behind that another
user could not open (a lock file made by root's cron locked the directory's
owner out); an old DIR/.ckpttool.lock is neither needed nor opened. Buckets: an object
DIR/.ckpttool.lock created only if absent (S3 `If-None-Match: *`, GCS
`ifGenerationMatch=0`), plus a lock file on this host. Stores that cannot
create conditionally get only the host lock: two prunes at once are refused
from one host, not across hosts (the --help of prune and repair says so).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import stat
import tempfile
import time
import uuid

from ckpttool.errors import NotFound, Refused, TooLarge
from ckpttool.storage import fs
from ckpttool.storage.atomic import commit_section
from ckpttool.storage.fs import is_url

LOCK_FILENAME = ".ckpttool.lock"
# A bucket lock older than this is taken to be left by a killed run and broken.
# A prune of even 100k checkpoints finishes far sooner.
STALE_REMOTE_LOCK_SECONDS = 3600.0


@contextlib.contextmanager
def _flock(path: str, timeout: float, what: str, directory: bool = False, fd: int | None = None,
           hint: str | None = None):
    """flock on the file at `path` (created if absent), or on the directory `path` itself (through
    `fd`, its descriptor, when the caller has it open)."""
    if fd is not None:
        fd = os.dup(fd)  # the same open directory: the lock is released explicitly, the caller's fd stays
    elif directory:
        # Read-only is all flock needs; whoever may list the directory may lock it.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Refused(f"{what} is locked by another ckpttool run ({path})", hint=hint) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _host_lock_path(url: str) -> str:
    """A lock file on this host standing for the remote directory `url`."""
    directory = os.path.join(tempfile.gettempdir(), f"ckpttool-locks-{os.getuid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # a file or a dangling symlink by that name: refused below
    # Anyone may create that name in /tmp first: a symlink would put our lock files where it points
    # (O_NOFOLLOW guards the last component only), another's directory would let them remove ours.
    found = os.lstat(directory)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o022:
        raise Refused(f"{directory} is not a directory of this user's, writable by it alone; not using it "
                      "for the host lock", hint="remove it (someone else may have made it)")
    return os.path.join(directory, hashlib.sha256(url.encode()).hexdigest()[:32] + ".lock")


@contextlib.contextmanager
def _remote_lock(url: str, timeout: float):
    from ckpttool.storage import remote
    protocol, _ = remote.split_url(url)
    with _flock(_host_lock_path(url), timeout, url):
        if protocol not in remote.CONDITIONAL_CREATE:
            yield
            return
        lock_url = url.rstrip("/") + "/" + LOCK_FILENAME
        token = uuid.uuid4().hex
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                           "token": token}).encode()
        deadline = time.monotonic() + timeout
        acquired, tag = False, None
        try:
            while True:
                try:
                    with commit_section():  # created and known to be ours at once: an interrupt then releases it
                        tag = remote.write_whole(lock_url, body, create_only=True)
                        acquired = True
                    break
                except Refused:
                    holder = _read_holder(remote, lock_url)
                    if holder is not None and _abandoned(holder):
                        remote.remove_many([lock_url])  # left by a killed run: break it, then race for it again
                        continue
                    if time.monotonic() > deadline:
                        who = f" by {holder.get('host')} pid {holder.get('pid')}" if holder else ""
                        raise Refused(f"{url} is locked{who} ({lock_url})",
                                      hint="if no ckpttool run is active there, delete the lock object") from None
                    time.sleep(0.5)
            yield
        finally:
            if acquired:
                with commit_section():  # a second signal must not cut the release short: other hosts wait
                    _release(remote, lock_url, token, tag)


def _release(remote, lock_url: str, token: str, tag: str | None = None, attempts: int = 3) -> None:
    """Remove our lock object. A failed request (one an interrupt cut, a passing fault) is tried
    again: giving up leaves the prefix locked for every host until the lock is stale.

    Where the store deletes conditionally (S3 If-Match on the ETag our create returned), one
    request removes it only if it is still ours; elsewhere it is read first, and removed if its
    token is ours."""
    if tag is not None and remote.conditional_tags(lock_url):
        try:
            remote.remove_if_tag(lock_url, tag)  # False: not ours any more (broken as stale): left alone
            return
        except Exception:  # noqa: BLE001 - a condition the store refuses, or a failed request: look, as below
            pass
    for attempt in range(attempts):
        try:
            holder = json.loads(fs.read_capped(lock_url, 1 << 16, "lock object"))
            if isinstance(holder, dict) and holder.get("token") == token:
                remote.remove_many([lock_url])
            return
        except (NotFound, ValueError, TooLarge):
            return  # gone, or not ours (unreadable): nothing of ours to remove
        except Exception:  # noqa: BLE001 - a failed request: again, and the last failure is the caller's
            if attempt == attempts - 1:
                raise


def _abandoned(holder: dict) -> bool:
    """A lock object left by a run that is gone: one of this host whose process has ended (we hold
    the host lock, so no other run of this host is in the middle of taking it), or one too old."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # someone else's live process
    stamp = holder.get("time")
    return not isinstance(stamp, (int, float)) or time.time() - stamp > STALE_REMOTE_LOCK_SECONDS


def _read_holder(remote, lock_url: str) -> dict | None:
    """Who holds the lock object: its JSON; {} (stale) if it is unreadable: not JSON, or larger
    than any lock ckpttool writes; None if it vanished meanwhile, or the read failed (try again)."""
    try:
        holder = json.loads(fs.read_capped(lock_url, 1 << 16, "lock object"))
        return holder if isinstance(holder, dict) else {}
    except (ValueError, TooLarge):
        return {}
    except NotFound:  # vanished between create attempt and read: try again
        return None
    except Exception:  # noqa: BLE001 - a failed request says nothing about the holder: try again
        return None


@contextlib.contextmanager
def locked_as_planned(directory: str, planned: tuple[int, int] | None, nothing_done: str,
                      timeout: float = 600.0):
    """The directory's lock for applying a plan made on it: a local directory opened once and
    locked through that descriptor, yielded as the fs.CheckedDirectory every change goes through
    (a bucket: None); Refused (saying `nothing_done`) when it is not the directory planned
    (`planned`: fs.directory_identity then), e.g. a component of its path swapped for a symlink;
    Refused too when the lock is not had within `timeout` seconds."""
    if is_url(directory):
        with directory_lock(directory, timeout):
            yield None
        return
    with fs.open_checked_directory(directory) as checked, directory_lock(directory, timeout, fd=checked.fd):
        if planned is not None and checked.identity != planned:
            raise changed_since_planned(directory, nothing_done)
        yield checked


def changed_since_planned(directory: str, nothing_done: str) -> Refused:
    return Refused(f"{directory} changed since it was planned (it is another directory now); {nothing_done}")


@contextlib.contextmanager
def file_lock(path: str, what: str, hint: str | None = None):
    """Hold an exclusive lock on the file `path` (created if absent, never through a symlink, kept
    afterwards: removing it would let a second holder lock a new file while the first still holds
    the old one); Refused at once when another process holds it."""
    with _flock(path, 0.0, what, hint=hint):
        yield


@contextlib.contextmanager
def directory_lock(directory: str, timeout: float = 600.0, fd: int | None = None):
    """Hold the directory's exclusive lock; Refused if not had within `timeout` s.

    A local directory is locked as itself (nothing is written into it), through `fd` when the
    caller has it open (the lock is then on the very directory it checked, whatever its path
    leads to meanwhile); a bucket's lock object is removed when done.
    """
    if is_url(directory):
        with _remote_lock(directory, timeout):
            yield
        return
    with _flock(directory, timeout, directory, directory=True, fd=fd):
        yield
