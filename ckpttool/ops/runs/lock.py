"""An exclusive lock per checkpoint directory, so that concurrent prune/repair
runs (two cron jobs, a person and a cron job) take turns.

Local directories: flock on DIR itself, so no file is left behind that another
user could not open (a lock file made by root's cron locked the directory's
owner out); an old DIR/.ckpttool.lock is neither needed nor opened. Buckets: an object
DIR/.ckpttool.lock created only if absent (S3 `If-None-Match: *`, GCS
`ifGenerationMatch=0`), plus a lock file on this host. Stores that cannot
create conditionally get only the host lock: two prunes at once are refused
from one host, not across hosts (the --help of prune and repair says so).

A bucket prune may carry its journal in the lock object's body (one conditional PUT instead of a
lock and a journal: ops/retention/batches.py). A run that breaks such a lock as stale first writes
that journal out as the prune journal object (merged with one already there), so that the next
prune finishes it by the journal's own checks; then it removes the lock only if it is still the
version read (S3 If-Match), so that of two breakers at once only one takes it.

A batch of such locks may be removed together (release_locks): one S3 DeleteObjects request whose
every key carries the ETag our create returned (S3 deletes it only if still ours), for locks taken
well within the time after which any host takes one for stale; any other is removed as one is.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import socket
import stat
import tempfile
import time
import uuid

from ckpttool.errors import NotFound, Refused, TooLarge, UsageProblem
from ckpttool.storage import fs
from ckpttool.storage.atomic import commit_section
from ckpttool.storage.fs import is_url

LOCK_FILENAME = ".ckpttool.lock"
PRUNE_JOURNAL = ".ckpttool-prune.journal"  # prune's journal object (ops/retention/prune.py)
PRUNE_JOURNAL_MAX_BYTES = 16 << 20  # a journal lists file names of checkpoints: far smaller than this
# The most of a lock object read; a larger one is unreadable, broken at once. Versions before the
# journal in the lock read no more either (live or not, they break a larger one), so a lock's body is
# kept within it (a larger journal is an object of its own) and hosts not all upgraded take turns.
LOCK_MAX_BYTES = 1 << 16
# A bucket lock older than this is taken to be left by a killed run and broken.
# A prune of even 100k checkpoints finishes far sooner.
STALE_REMOTE_LOCK_SECONDS = 3600.0


# A lock is removed in a batch only while younger than this (by this process's clock): no host takes
# it for stale before STALE_REMOTE_LOCK_SECONDS by its own clock, so a batched removal (a store may
# ignore the ETag each key carries, as moto does) cannot take another run's lock unless the clocks
# of two hosts differ by more than the rest of the hour.
BATCH_RELEASE_SECONDS = STALE_REMOTE_LOCK_SECONDS / 4


@dataclasses.dataclass(frozen=True)
class HeldLock:
    """A bucket lock object of ours whose removal the holder batches (release_locks)."""

    directory: str
    lock_url: str
    token: str
    tag: str | None  # the ETag our create returned
    taken: float  # time.monotonic() when it was created


def _deadline(timeout: float) -> float:
    """When waiting for a lock gives up: `timeout` seconds from now. A NaN or negative timeout is
    refused (no clock ever passes a NaN deadline: the wait would never end)."""
    if not timeout >= 0:
        raise UsageProblem(f"a lock timeout must be 0 or more seconds, not {timeout!r}")
    return time.monotonic() + timeout


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
        deadline = _deadline(timeout)
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
def _remote_lock(url: str, timeout: float, journal: dict | None = None, held: list[HeldLock] | None = None):
    """The lock object of bucket directory `url` (and this host's lock file for it). `held`: on a
    clean exit the lock is not removed but added to it, for the caller's release_locks (an error or
    an interrupt removes it at once)."""
    from ckpttool.storage import remote
    protocol, _ = remote.split_url(url)
    with _flock(_host_lock_path(url), timeout, url):
        if protocol not in remote.CONDITIONAL_CREATE:
            if journal is not None:
                raise Refused(f"{url}: a journal is carried in a lock object only where locks are conditional")
            yield
            return
        lock_url = url.rstrip("/") + "/" + LOCK_FILENAME
        token = uuid.uuid4().hex
        ours = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "token": token}
        if journal is not None:
            ours["journal"] = journal
        deadline = _deadline(timeout)
        acquired, tag, taken = False, None, 0.0
        try:
            while True:
                try:
                    with commit_section():  # created and known to be ours at once: an interrupt then releases it
                        # Its time is when it is created, not when the wait began: other hosts take it
                        # for stale by it (and release_locks batches it only while young by `taken`).
                        taken, ours["time"] = time.monotonic(), time.time()
                        tag = remote.write_whole(lock_url, json.dumps(ours).encode(), create_only=True)
                        acquired = True
                    break
                except Refused:
                    holder, held_tag = _read_holder(remote, lock_url)
                    if holder is not None and _abandoned(holder):
                        _break(remote, url, lock_url, holder, held_tag)  # then race for it again
                        continue
                    if time.monotonic() > deadline:
                        who = f" by {holder.get('host')} pid {holder.get('pid')}" if holder else ""
                        raise Refused(f"{url} is locked{who} ({lock_url})",
                                      hint="if no ckpttool run is active there, delete the lock object") from None
                    time.sleep(0.5)
            yield
            if held is not None:
                held.append(HeldLock(url, lock_url, token, tag, taken))
                acquired = False  # the caller's to remove
        finally:
            if acquired:
                with commit_section():  # a second signal must not cut the release short: other hosts wait
                    _release(remote, lock_url, token, tag)


def release_locks(held: list[HeldLock]) -> dict[str, Exception]:
    """Remove these lock objects of ours: those taken within BATCH_RELEASE_SECONDS in batched
    requests (S3 DeleteObjects, each key only if still the ETag our create returned), the others,
    and any the batch did not remove for a reason other than being another's now, one by one.
    Returns the directories whose lock could not be removed, with the error (each is tried: one
    failure must not leave the others locked until stale)."""
    from ckpttool.storage import remote

    failed: dict[str, Exception] = {}
    with commit_section():  # a second signal must not cut the release short: other hosts wait
        young = [h for h in held if h.tag is not None and remote.conditional_tags(h.lock_url)
                 and time.monotonic() - h.taken < BATCH_RELEASE_SECONDS]
        left = remote.remove_many_if_tags([(h.lock_url, h.tag) for h in young]) if young else set()
        for h in held:
            if h not in young or h.lock_url in left:
                try:
                    _release(remote, h.lock_url, h.token, h.tag)
                except Exception as exc:  # noqa: BLE001 - the caller says so for that directory alone
                    failed[h.directory] = exc
    return failed


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
            holder = json.loads(fs.read_capped(lock_url, LOCK_MAX_BYTES, "lock object"))
            if isinstance(holder, dict) and holder.get("token") == token:
                remote.remove_many([lock_url])
            return
        except (NotFound, ValueError, TooLarge):
            return  # gone, or not ours (unreadable): nothing of ours to remove
        except Exception:  # noqa: BLE001 - a failed request: again, and the last failure is the caller's
            if attempt == attempts - 1:
                raise


def _break(remote, url: str, lock_url: str, holder: dict, tag: str | None) -> None:
    """Remove a lock left by a killed run: its journal, if it carries one, written out first as the
    prune journal object (the next prune finishes it, by that journal's checks); then the lock
    removed only if it is still the version read (`tag`), where the store deletes conditionally."""
    journal = holder.get("journal")
    if journal is not None:
        if tag is None:
            raise Refused(f"{lock_url} carries an interrupted prune's journal, and this store cannot remove it "
                          "conditionally; not breaking it", hint="ckpttool prune on S3 finishes it")
        keep_journal(url, journal)
    if tag is not None and remote.conditional_tags(lock_url):
        remote.remove_if_tag(lock_url, tag)  # False: another run broke it first (and may hold a new one)
    else:
        remote.remove_many([lock_url])


def keep_journal(url: str, journal) -> None:
    """The journal a lock carries (a stale one's, or ours after a failed batch), added to bucket
    directory `url`'s prune journal object (made if absent): an entry already there is kept as it
    is. Refused when either is not a journal (nothing written)."""
    from ckpttool.storage import remote

    journal_url = url.rstrip("/") + "/" + PRUNE_JOURNAL

    def entries(doc) -> list:
        found = doc.get("deletions") if isinstance(doc, dict) else None
        if not isinstance(found, list) or not all(isinstance(e, dict) for e in found):
            raise Refused(f"{url}: an interrupted prune's journal is unreadable; not breaking its lock",
                          hint="if no prune is running, look at the lock object and the journal, and remove them")
        return found

    carried = entries(journal)
    raw = fs.read_capped(journal_url, PRUNE_JOURNAL_MAX_BYTES, "prune journal", missing_ok=True)
    try:
        there = entries(json.loads(raw)) if raw is not None else []
    except ValueError:
        there = entries(None)
    names = {e.get("name") for e in there}
    merged = there + [e for e in carried if e.get("name") not in names]
    if raw is None or len(merged) != len(there):
        remote.write_whole(journal_url, json.dumps({"deletions": merged}).encode())


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


def _read_holder(remote, lock_url: str) -> tuple[dict | None, str | None]:
    """Who holds the lock object: its JSON, and the version read (S3 ETag; None elsewhere); {}
    (stale) if it is unreadable: not JSON, or larger than any lock ckpttool writes; None if it
    vanished meanwhile, or the read failed (try again)."""
    try:
        found = remote.read_tagged(lock_url, LOCK_MAX_BYTES, "lock object")
        if found is None:  # vanished between create attempt and read: try again
            return None, None
        try:
            holder = json.loads(found[0])
        except ValueError:
            return {}, found[1]
        return (holder if isinstance(holder, dict) else {}), found[1]
    except TooLarge:
        return {}, None
    except Exception:  # noqa: BLE001 - a failed request says nothing about the holder: try again
        return None, None


def read_lock_journal(directory: str) -> bytes | None:
    """The journal a bucket run directory's lock object carries (a batched prune's), as a journal
    object's bytes; None when there is no lock, or it carries none."""
    from ckpttool.storage import remote

    holder, _tag = _read_holder(remote, directory.rstrip("/") + "/" + LOCK_FILENAME)
    journal = holder.get("journal") if holder else None
    return None if journal is None else json.dumps(journal).encode()


@contextlib.contextmanager
def locked_as_planned(directory: str, planned: tuple[int, int] | None, nothing_done: str,
                      timeout: float = 600.0, journal: dict | None = None, held: list[HeldLock] | None = None):
    """The directory's lock for applying a plan made on it: a local directory opened once and
    locked through that descriptor, yielded as the fs.CheckedDirectory every change goes through
    (a bucket: None); Refused (saying `nothing_done`) when it is not the directory planned
    (`planned`: fs.directory_identity then), e.g. a component of its path swapped for a symlink;
    Refused too when the lock is not had within `timeout` seconds. `journal`: a bucket's, carried
    in the lock object's body; `held`: a bucket's lock is left for release_locks (_remote_lock)."""
    if is_url(directory):
        with directory_lock(directory, timeout, journal=journal, held=held):
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
def directory_lock(directory: str, timeout: float = 600.0, fd: int | None = None, journal: dict | None = None,
                   held: list[HeldLock] | None = None):
    """Hold the directory's exclusive lock; Refused if not had within `timeout` s.

    A local directory is locked as itself (nothing is written into it), through `fd` when the
    caller has it open (the lock is then on the very directory it checked, whatever its path
    leads to meanwhile); a bucket's lock object is removed when done.
    """
    if is_url(directory):
        with _remote_lock(directory, timeout, journal, held):
            yield
        return
    if journal is not None:
        raise Refused(f"{directory}: a local directory's journal is a file of its own, never the lock's")
    with _flock(directory, timeout, directory, directory=True, fd=fd):
        yield
