"""The one seam through which every file is read, listed, written or deleted.

Local paths use plain `os` calls (no extra import on the fast path); URLs
(`gs://`, `s3://`, any fsspec protocol) go to storage/remote.py, imported
only then. Only regular files are ever opened: a FIFO, a device or a
directory where a file is expected is refused at once instead of hanging or
reading forever (a symlink is followed, as TensorFlow follows it, and what it
points at must be a regular file too), and files whose size the format does
not bound are read with a cap.
"""
from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from typing import BinaryIO, Iterable, Iterator, NamedTuple

from ckpttool.errors import BadInput, NotFound
from ckpttool.storage.paths import local_absolute

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def is_url(path: str) -> bool:
    """True for `gs://...`, `s3://...` and other fsspec-style URLs."""
    return bool(_URL_RE.match(path))


def _kind_of(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _open_regular(path: str, what: str, missing_ok: bool = False, seen_regular: bool = False,
                  dir_fd: int | None = None, inside: bool = False) -> int | None:
    """A read-only descriptor of the regular file at `path` (None if missing and `missing_ok`); with
    `dir_fd`, the file of that name in the directory open at `dir_fd` (`path` then names it in messages).
    `inside`: a file of a checkpoint (a state file, a data shard), refused when it is a link to a file
    outside its directory (leaves_its_directory), as checked on the open file.

    What `path` is gets checked before it is opened (opening some devices
    does something), unless the caller has just seen it is a regular file;
    and again on the open descriptor, in case it was swapped meanwhile.
    O_NONBLOCK makes opening a FIFO return at once; it has no effect on reads
    of regular files.
    """
    name = path if dir_fd is None else os.path.basename(path)
    try:
        if not seen_regular:
            _refuse_unless_regular(os.stat(name, dir_fd=dir_fd).st_mode, path, what)
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise NotFound(f"no {what} at {path}") from None
    except OSError as exc:
        raise NotFound(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        _refuse_unless_regular(os.fstat(fd).st_mode, path, what)
        if inside and _opened_outside(fd, path, dir_fd):
            raise BadInput(f"{what} {path} is a link to a file outside its directory; not read")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _opened_outside(fd: int, path: str, dir_fd: int | None = None) -> bool:
    """Whether the file open at `fd` lies outside its directory (the one open at `dir_fd`, else the
    directory of `path`, the name it was opened by): where the open file really is (Linux:
    /proc/self/fd), so that a link swapped in between a look at `path` and the open is caught too;
    elsewhere, the link at `path` as it is now."""
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
        if dir_fd is not None:
            directory = os.readlink(f"/proc/self/fd/{dir_fd}")
        else:
            directory = local_absolute(os.path.dirname(path) or ".")
            if os.path.dirname(opened) != directory:  # (the usual case, no link anywhere, walks no path)
                directory = os.path.realpath(directory)
    except OSError:
        return leaves_its_directory(path)
    return not opened.startswith("/") or os.path.commonpath([directory, opened]) != directory


def _refuse_unless_regular(mode: int, path: str, what: str) -> None:
    if not stat.S_ISREG(mode):
        raise BadInput(f"cannot read {path} as a {what}: it is {_kind_of(mode)}, not a regular file")


def _remote():
    from ckpttool.storage import remote
    return remote


def _store(path: str):
    """(remote, path) for a URL a backend reads; (None, the local path) for a plain path or a
    `file://` URL, which this module reads itself: fsspec's local file system opens whatever a path
    names (a FIFO blocks the open until someone writes to it, a device may act when opened), where
    the functions here open regular files only, checked on the open descriptor."""
    if not is_url(path):
        return None, path
    remote = _remote()
    local = remote.local_path(path)
    return (remote, path) if local is None else (None, local)


def open_input(path: str, what: str = "file") -> BinaryIO:
    """`path` opened for binary reading; NotFound / BadInput with one clear line otherwise."""
    remote, path = _store(path)
    if remote is not None:
        return remote.open_input(path, what)
    fd = _open_regular(path, what)
    return adopt_descriptor(fd, "rb")


def adopt_descriptor(fd: int, mode: str) -> BinaryIO:
    """A file object that owns descriptor `fd`, closed exactly once whatever stops this: an interrupt
    landing inside os.fdopen once the object holds `fd` dropped the object (closing `fd`), and the
    caller's own close then failed with EBADF (exit 3 for Ctrl-C), or closed a descriptor reused since."""
    from ckpttool.storage.atomic import commit_section

    handle = None
    try:
        with commit_section():  # the interrupt, if any, is raised as the section ends: `handle` is set
            handle = os.fdopen(fd, mode)
    except BaseException:
        if handle is None:
            os.close(fd)  # os.fdopen refused it: the descriptor is still ours alone
        else:
            handle.close()
        raise
    return handle


def read_capped(path: str, limit: int, what: str = "file", missing_ok: bool = False,
                dir_fd: int | None = None, inside: bool = False) -> bytes | None:
    """The whole file, refusing one larger than `limit` bytes (formats that do not bound their
    size); None for a missing file when `missing_ok`. `dir_fd`: the descriptor of the local
    directory `path` is in, through which it is opened (by its name alone). `inside`: refused
    when it is a link to a file outside its directory."""
    remote, path = _store(path)
    if remote is not None:
        return remote.read_capped(path, limit, what, missing_ok)
    fd = _open_regular(path, what, missing_ok, dir_fd=dir_fd, inside=inside)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        chunks, total = [], 0
        if size > limit:  # refused before reading: a 2 GiB graph must not cost 2 GiB to turn away
            raise _too_large(what, path, limit)
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
        raise _too_large(what, path, limit)
    return b"".join(chunks)


def _too_large(what: str, path: str, limit: int) -> BadInput:
    return BadInput(f"{what} {path} is larger than {describe_size(limit)}, the most ckpttool reads; "
                    "refusing to read it (TensorFlow writes far smaller ones)")


def read_head_and_tail(path: str, head: int, tail: int, what: str = "file",
                       size: int | None = None) -> tuple[bytes, bytes, int]:
    """The first `head` and last `tail` bytes of a regular file, and its size (a cheap look at a
    table). A `size` says the caller has just seen a regular file of that size: one read then
    does for a small one."""
    if is_url(path):
        return _remote().read_head_and_tail(path, head, tail, what, size)
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
    remote, path = _store(path)
    if remote is not None:
        return remote.read_range(path, offset, offset + length)
    fd = _open_regular(path, what)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def describe_size(size: int) -> str:
    """`64 MiB`, `1.5 GiB`, `312 B`: sizes in messages, as in tables (text.format_size)."""
    from ckpttool.text import format_size

    return format_size(size)


# -- reading at offsets: data shards ------------------------------------------

# Reads sized for the CPU's cache: a checksum or copy then finds the bytes
# where pread left them (8 MiB pieces ran at half the speed), and
# google-crc32c lets other threads run from 1 MiB on.
CHUNK_BYTES = 1 << 20


class LocalInput:
    """A local regular file read at offsets (pread: no shared file position, so threads may
    read one at once)."""

    def __init__(self, path: str, what: str, inside: bool = False):
        self.path = path
        self._fd = _open_regular(path, what, inside=inside)
        self.size = os.fstat(self._fd).st_size

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def iter_range(self, offset: int, length: int, chunk: int | None = None) -> Iterator[bytes]:
        """Bytes [offset, offset+length) in order, in pieces of at most `chunk` (None: the size
        this input reads best, a power of two); stops early at the end of the file (callers
        compare what they got with what they asked for)."""
        chunk = chunk or CHUNK_BYTES
        end = offset + length
        while offset < end:
            data = os.pread(self._fd, min(chunk, end - offset), offset)
            if not data:
                return
            offset += len(data)
            yield data

    def read_into(self, offset: int, buffer) -> int:
        """Bytes from `offset` read into the writable `buffer` (one that is reused: no new object per
        read); how many, 0 at the end of the file. Only a local input has this."""
        return os.preadv(self._fd, [buffer], offset)

    def close(self) -> None:
        fd, self._fd = self._fd, -1  # forgotten first: an interrupt inside close never closes it twice
        if fd >= 0:
            os.close(fd)


def open_random_access(path: str, what: str = "file", inside: bool = False):
    """A file to read at offsets: `.size`, `.read_at(offset, n)`, `.iter_range(offset, n, chunk=None)`,
    `.close()`. Local: pread on a descriptor; remote: ranged GETs, several in flight. `inside`: as
    for read_capped."""
    remote, path = _store(path)
    if remote is not None:
        return remote.RemoteInput.open(path, what)
    return LocalInput(path, what, inside)


def download(url: str, local_path: str) -> None:
    """The file `url` names copied to the new local file `local_path` (a temporary copy for the jobs
    that read through a local file: HDF5, TensorFlow's graph runtime)."""
    remote, path = _store(url)
    if remote is not None:
        remote.download(path, local_path)
        return
    import shutil

    with open_input(path) as source, open(local_path, "xb") as sink:
        shutil.copyfileobj(source, sink, 8 << 20)


# -- paths ----------------------------------------------------------------------

def join(base: str, *names: str) -> str:
    if is_url(base):
        return "/".join([base.rstrip("/"), *names])
    return os.path.join(base, *names)


def dirname(path: str) -> str:
    if is_url(path):
        scheme, _, rest = path.partition("://")
        return f"{scheme}://{posixpath.dirname(rest.rstrip('/'))}"
    return os.path.dirname(path)


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) if is_url(path) else os.path.basename(path)


def absolute(path: str) -> str:
    """Local paths made absolute; URLs without a trailing slash (`gs://b/run/` is `gs://b/run`),
    never normalised otherwise: object keys are opaque (`b/root/../../other/run` is a key of
    bucket b, not a path into bucket `other`)."""
    if is_url(path):
        scheme, _, rest = path.partition("://")
        return f"{scheme.lower()}://{rest}".rstrip("/")
    return local_absolute(path)


def leaves_its_directory(path: str) -> bool:
    """Whether local `path` is a symbolic link to something outside the directory it is in. Such a
    link in a checkpoint (a state file, a data shard) is never followed: whoever may write into a
    run directory could otherwise make a reader print or return a file of root's. A URL names an
    object, never a link."""
    if is_url(path):
        return False
    try:
        if not stat.S_ISLNK(os.lstat(path).st_mode):
            return False
    except (OSError, ValueError):
        return False  # nothing there: the caller's read says so
    directory = os.path.realpath(os.path.dirname(path) or ".")
    return os.path.commonpath([directory, os.path.realpath(path)]) != directory


def real(path: str) -> str:
    """Where `path` really is: symlinks resolved locally; a URL is itself."""
    return path if is_url(path) else os.path.realpath(path)


def identity(path: str) -> frozenset[tuple]:
    """Canonical names of the file `path` (or URL) names: two paths reaching one file, whichever way,
    share a key. Local: its real path (symlinks resolved); its name in its directory's inode (a bind
    mount reaches that directory by another real path); and for a file with a single link, its own
    device and inode (a case-insensitive file system, a bind-mounted file). A second hard link is
    another name, not the same file: every write replaces a name, never writes through it. A URL: its
    protocol as fsspec's registry aliases it (s3a:// is s3://, gcs:// is gs://) and its path; a
    file:// URL is the local path it names. Plain paths never import fsspec."""
    if is_url(path):
        from ckpttool.storage import remote

        local = remote.local_path(path)
        if local is None:
            protocol, _, rest = absolute(path).partition("://")
            return frozenset({("url", remote.canonical_protocol(protocol), rest)})
        path = local
    path = local_absolute(path)
    keys: set[tuple] = {("real", os.path.realpath(path))}
    try:
        parent = os.stat(os.path.dirname(path))
        keys.add(("entry", parent.st_dev, parent.st_ino, os.path.basename(path)))
    except OSError:
        pass  # no directory there yet: nothing in it can be a source
    try:
        found = os.stat(path)
        if found.st_nlink == 1:
            keys.add(("inode", found.st_dev, found.st_ino))
    except (OSError, ValueError):
        pass
    return frozenset(keys)


# -- metadata ---------------------------------------------------------------------

class Entry(NamedTuple):
    """One name in a directory listing (local: from lstat, symlinks never followed).

    Immutable as a frozen dataclass, and about a quarter of the cost to build: a
    listing of 100,000 checkpoints makes 200,000 of them."""

    name: str
    path: str
    kind: str  # "file" | "dir" | "link" | "other"
    size: int
    mtime: float
    tag: str | None = None  # a bucket object's version as listed (S3 ETag), for writes conditional on it


def _kind_of_mode(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "link" if stat.S_ISLNK(mode) else "other"


def list_dir(path: str) -> list[Entry]:
    """Every entry of directory `path` in one listing (a bucket: objects and common prefixes)."""
    if is_url(path):
        return _entries(_remote().list_directory(path))
    entries = []
    append = entries.append
    # os.path.join(path, name) for every name, at the cost of one concatenation.
    base = os.path.join(path, "")
    # "" is the dirname of a bare relative name (`verify model.ckpt-1` inside the run directory):
    # the current directory, with entry paths kept as bare as the name they came from.
    with os.scandir(path or ".") as it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # renamed or removed since listed: a writer at work
            mode = st.st_mode
            append(Entry(entry.name, base + entry.name, "file" if stat.S_ISREG(mode) else _kind_of_mode(mode),
                         st.st_size, st.st_mtime))
    return entries


def _entries(remote_entries) -> list[Entry]:
    return [Entry(e.name, e.path, "dir" if e.is_dir else "file", e.size, e.mtime or 0.0, e.tag)
            for e in remote_entries]


def open_directory(path: str) -> int:
    """A descriptor of local directory `path` (a link to one is followed, as listing it follows it),
    through which its files are then listed, looked at and read by name: one directory throughout,
    and no path looked up again per file."""
    try:
        return os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotFound(f"no such directory: {path}") from None


def list_kinds(dir_fd: int) -> list[tuple[str, str]]:
    """(name, kind) of every entry of the directory open at `dir_fd`, kinds as list_dir's, from
    the type the directory itself records for each entry: no lstat per name (a directory of
    100,000 checkpoints holds 200,000 files, whose sizes a caller may need for a few only); a
    file system that records no type is asked by lstat, as os.scandir does."""
    found = []
    append = found.append
    with os.scandir(dir_fd) as it:
        for entry in it:
            try:
                if entry.is_file(follow_symlinks=False):
                    kind = "file"
                elif entry.is_dir(follow_symlinks=False):
                    kind = "dir"
                else:
                    kind = "link" if entry.is_symlink() else "other"
            except FileNotFoundError:
                continue  # renamed or removed since listed: a writer at work
            append((entry.name, kind))
    return found


def entry_at(dir_fd: int, name: str, path: str) -> Entry | None:
    """What `name` in the directory open at `dir_fd` is now (lstat: a link is a "link"), None if
    it is gone; `path`: its path, as the Entry carries it."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return Entry(name, path, _kind_of_mode(st.st_mode), st.st_size, st.st_mtime)


def read_head_and_tail_at(dir_fd: int, name: str, path: str, head: int,
                          tail: int) -> tuple[bytes, bytes, int, Entry] | None:
    """read_head_and_tail of the regular file `name` in the directory open at `dir_fd`, with its
    Entry from the open descriptor (a listing that has seen a regular file there needs no lstat
    of its own); None when it is no longer a regular file there (gone, or a link or another kind
    put in its place since it was listed: links are never followed). Another refusal to open it
    (permissions) is raised as the OSError."""
    read = read_ends_at(dir_fd, name, head, tail)
    if read is None:
        return None
    first, last, size, st_size, mtime = read
    return first, last, size, Entry(name, path, "file", st_size, mtime)


def read_ends_at(dir_fd: int, name: str, head: int, tail: int) -> tuple[bytes, bytes, int, int, float] | None:
    """read_head_and_tail_at's bytes as (first, last, size read, size and mtime of the open file),
    without an Entry: a scan of 100,000 checkpoints reads as many indexes."""
    try:
        fd = os.open(name, _OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # a symlink now
        raise
    try:
        return _ends_of(fd, head, tail)
    finally:
        os.close(fd)


def _ends_of(fd: int, head: int, tail: int) -> tuple[bytes, bytes, int, int, float] | None:
    """read_ends_at of the open file `fd`."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return None
    size = st.st_size
    if size < head:
        # A small file read by its size (a read into `head` bytes allocates them all, twice the
        # cost of the read for an index), and one byte more, which shows it grew since the fstat.
        first = os.pread(fd, size + 1, 0)
        if len(first) <= size:  # the whole file (shorter if it shrank)
            return first, first[max(0, len(first) - tail):], len(first), st.st_size, st.st_mtime
        st = os.fstat(fd)  # it grew: read as the file it is now
        size = st.st_size
    first = os.pread(fd, head, 0)
    if len(first) < head:  # the whole file
        return first, first[max(0, len(first) - tail):], len(first), st.st_size, st.st_mtime
    # Its last `tail` bytes where it ends now: a footer where an end read by an older size was
    # is not the footer TensorFlow reads. One byte more shows that it grew since the fstat.
    last = os.pread(fd, tail + 1, size - tail)
    if len(last) > tail:
        st = os.fstat(fd)
        size = st.st_size
        last = os.pread(fd, tail + 1, max(0, size - tail))
        if len(last) > tail:
            last = b""  # still growing: no footer to take
    return first, last, size, st.st_size, st.st_mtime


def read_ends_and_lstat_at(dir_fd: int, jobs: Iterable[tuple[str, ...]], head: int,
                           tail: int) -> Iterator[tuple | None]:
    """For each job (a name to read, then names to lstat) in the directory open at `dir_fd`, one
    answer: read_ends_at of the first, followed by the size and mtime of each other name; None
    when the first is not a regular file, another is not a regular file, or any of them is gone
    or refused (the caller then looks again its own way, and says what it is). One loop for
    thousands of files (a directory's indexes, with their data shards): read_ends_at and an lstat
    in a call each took more of a scan of 100,000 checkpoints than their system calls."""
    flags = _OPEN_FLAGS | os.O_NOFOLLOW  # a link is never followed: it is no checkpoint file
    open_at, close, lstat, regular, ends_of = os.open, os.close, os.stat, stat.S_ISREG, _ends_of
    for job in jobs:
        try:
            fd = open_at(job[0], flags, dir_fd=dir_fd)
        except OSError:
            yield None
            continue
        try:
            found = ends_of(fd, head, tail)
        except OSError:
            found = None
        finally:
            close(fd)
        try:
            for name in job[1:]:
                if found is None:
                    break
                other = lstat(name, dir_fd=dir_fd, follow_symlinks=False)
                found = found + (other.st_size, other.st_mtime) if regular(other.st_mode) else None
        except OSError:
            found = None
        yield found


def walk_files(root: str, skipped: list[str] | None = None, listings: dict[str, list[Entry]] | None = None,
               listed: list | None = None) -> Iterator[tuple[str, list[str], list[str]]]:
    """(directory, subdirectory names, file names) for `root` and below, like os.walk without
    following symlinks; a bucket's tree comes from one recursive listing, its keys with `.`,
    `..` or empty segments left out and added to `skipped`. `listings` (a bucket only): filled
    with each directory's entries, as list_dir gives them, from that one listing; `listed` (a
    bucket only): list_tree of a directory holding `root`, standing for root's own listing."""
    if is_url(root):
        found: dict = {}
        for step in _remote().walk(root, skipped, found if listings is not None else None, listed):
            if listings is not None:
                listings[step[0]] = _entries(found[step[0]])
            yield step
        return
    yield from os.walk(root, followlinks=False)


def list_tree(url: str) -> list:
    """Every object under bucket directory `url`, in one recursive listing (for walk_files' `listed`)."""
    return _remote().list_tree(url)


def tree_size(path: str) -> tuple[int, float]:
    """Bytes and newest modification time of the files under directory `path` (not following links)."""
    total, newest = 0, 0.0
    if is_url(path):
        for entry in _remote().list_tree(path):
            total += entry.size
            newest = max(newest, entry.mtime or 0.0)
        return total, newest
    for current, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(current, name))
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
    try:
        newest = max(newest, os.lstat(path).st_mtime)
    except OSError:
        pass
    return total, newest


def stat_path(path: str) -> Entry | None:
    """What `path` is (local: lstat, so a symlink is a "link"), None if nothing is there."""
    if is_url(path):
        info = _remote().info(path)
        if info is None:
            return None
        kind = "dir" if info.get("type") == "directory" else "file"
        return Entry(basename(path), path, kind, int(info.get("size") or 0), _remote().mtime_of(info) or 0.0)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Entry(os.path.basename(path), path, _kind_of_mode(st.st_mode), st.st_size, st.st_mtime)


def is_dir(path: str) -> bool:
    return _remote().is_dir(path) if is_url(path) else os.path.isdir(path)


def is_file(path: str) -> bool:
    """A regular file (local: following symlinks, as TensorFlow does) or an object."""
    return _remote().is_file(path) if is_url(path) else is_regular_file(path)


def is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def exists(path: str) -> bool:
    return stat_path(path) is not None


def exists_now(path: str) -> bool:
    """Whether something is at `path` now: a bucket is asked again, never its cached listings."""
    return _remote().info(path, fresh=True) is not None if is_url(path) else stat_path(path) is not None


def same_store(a: str, b: str) -> bool:
    """True if `a` and `b` are in one store, where a copy can happen without a download."""
    if is_url(a) != is_url(b):
        return False
    return not is_url(a) or a.partition("://")[0].lower() == b.partition("://")[0].lower()


# -- writing ------------------------------------------------------------------------

def write_atomic(path: str, data: bytes, mode_of: str | None = None, dir_fd: int | None = None) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never a mix
    (a bucket: one whole-object write). `dir_fd`: as for read_capped."""
    if is_url(path):
        _remote().write_whole(path, data)
        return
    from ckpttool.storage.atomic import write_bytes_atomic

    write_bytes_atomic(path, data, mode_of, dir_fd)


def atomic_output(path: str, sync: bool = True):
    """A context manager giving a binary handle whose bytes replace `path` when the block ends, and
    leave nothing on error: a temp file renamed into place, or a bucket object completed only then.
    `sync=False` skips the fsync of bulk data whose index (written last, synced) is the commit."""
    if is_url(path):
        return _remote().whole_object_output(path)
    from ckpttool.storage.atomic import atomic_output as local_atomic_output

    return local_atomic_output(path, sync)


def make_dirs(path: str) -> None:
    """Create directory `path` and its parents (nothing to do in a bucket)."""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)


def remove_files(paths: list[str]) -> None:
    """Delete files (objects), missing ones ignored; a bucket's in batched requests."""
    remote = [p for p in paths if is_url(p)]
    if remote:
        _remote().remove_many(remote)
    for path in paths:
        if not is_url(path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


# -- the checked directory: deleting and replacing through its descriptor -----------------------

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# How deep a tree is removed: a framework nests a few levels; one descriptor is held per level.
MAX_TREE_DEPTH = 64


def too_deep(files: list[str], dirs: list[str]) -> str | None:
    """Why a tree holding `files` and `dirs` (relative paths) is not removed, or None."""
    depth = max((relative.count("/") + 1 for relative in files + dirs), default=0)
    if depth <= MAX_TREE_DEPTH:
        return None
    return f"it nests {depth} levels deep, deeper than the {MAX_TREE_DEPTH} ckpttool removes"


class CheckedDirectory:
    """A local directory opened once (open_checked_directory), to which every name it removes,
    reads or replaces is relative (unlinkat, openat, renameat): swapping a component of its path
    for a symlink, or the directory for another, once it is open redirects nothing.

    A name is removed only as the kind planned, looked at through the descriptor just before:
    a file only while it is a regular file (a directory or a link found in its place is left
    alone and said why, never followed), a tree only as the files and directories listed in it,
    each directory opened without following links, relative to its parent, on the directory's
    own device."""

    def __init__(self, path: str, fd: int):
        self.path, self.fd = path, fd
        found = os.fstat(fd)
        self.identity = (found.st_dev, found.st_ino)

    def still_reached(self) -> bool:
        """Whether the directory's path still leads to this directory."""
        try:
            found = os.stat(self.path)
        except OSError:
            return False
        return (found.st_dev, found.st_ino) == self.identity

    def remove_file(self, name: str) -> str | None:
        """Unlink regular file `name`: None when it is gone, else why it was left alone (OSError
        when the file system refuses: permissions, a read-only or failing disk)."""
        try:
            found = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            if not stat.S_ISREG(found.st_mode):
                return f"{name} is {_kind_of(found.st_mode)} now, not the file planned"
            os.unlink(name, dir_fd=self.fd)  # never removes a directory, whatever is there by now
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            return f"{name} is a directory now, not the file planned"
        return None

    def remove_tree(self, name: str, files: list[str], dirs: list[str]) -> str | None:
        """Remove directory `name` as listed: exactly `files` (relative paths, in the order given),
        then `dirs` (relative, deepest first), then `name` itself. None when it is gone, else why
        not (what was left: not a regular file any more, in a directory that is a link or on another
        device now, or written since the listing). Nothing is removed from a tree nested deeper
        than MAX_TREE_DEPTH."""
        problem = too_deep(files, dirs)
        if problem:
            return f"{name}/ left alone: {problem}"
        try:
            top = os.open(name, _DIRECTORY_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError:
            return f"{name} is {self._kind(name)} now, not the directory planned"
        left: list[str] = []
        with _DirectoryChain(top, self.identity[0]) as chain:
            if chain.problem:
                return f"{name}/ {chain.problem}"
            for relative in files:
                parent, _, base = relative.rpartition("/")
                try:
                    fd = chain.enter(parent)
                    if stat.S_ISREG(os.stat(base, dir_fd=fd, follow_symlinks=False).st_mode):
                        os.unlink(base, dir_fd=fd)
                    else:
                        left.append(relative)
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(relative)
            for relative in dirs:
                parent, _, base = relative.rpartition("/")
                try:
                    os.rmdir(base, dir_fd=chain.enter(parent))
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(relative + "/")
        try:
            os.rmdir(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError:
            left.append(".")
        if not left:
            return None
        named = [relative for relative in left if relative != "."]
        if not named:
            return f"{name}/ holds what was not there when it was listed: left in place"
        shown = ", ".join(named[:3]) + (", ..." if len(named) > 3 else "")
        return f"{name}/ changed since it was listed: {shown} left in place"

    def remove_empty_directory(self, name: str, identity: tuple[int, int]) -> str | None:
        """Remove directory `name` if it is still the one of `identity` (device, inode: a directory
        checked and emptied through its own descriptor) and empty: None when it is gone, else why
        it was left (anything in it, another directory or a link in its place)."""
        try:
            found = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            if not stat.S_ISDIR(found.st_mode) or (found.st_dev, found.st_ino) != identity:
                return f"{name} is {_kind_of(found.st_mode)} now, not the directory emptied"
            os.rmdir(name, dir_fd=self.fd)  # refused unless empty: nothing written since is lost
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{name}/ left in place: {exc.strerror}"
        return None

    def _kind(self, name: str) -> str:
        try:
            return _kind_of(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode)
        except OSError:
            return "unreadable"

    def close(self) -> None:
        fd, self.fd = self.fd, -1  # forgotten first, as LocalInput's
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> "CheckedDirectory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _DirectoryChain:
    """Descriptors of the directories from a tree's top down to the one in use: entering another
    closes those it does not share, so a tree holds at most its depth open, whatever its size."""

    def __init__(self, top: int, device: int):
        self.fds, self.names, self.device = [top], [], device
        self.problem = None if os.fstat(top).st_dev == device else "is on another device (a mount point)"

    def enter(self, relative: str) -> int:
        """The descriptor of directory `relative` (below the top), each level opened without
        following links; OSError if one is not a directory of the top's device any more."""
        parts = relative.split("/") if relative else []
        shared = 0
        while shared < min(len(parts), len(self.names)) and parts[shared] == self.names[shared]:
            shared += 1
        while len(self.names) > shared:
            os.close(self.fds.pop())
            self.names.pop()
        for part in parts[shared:]:
            fd = os.open(part, _DIRECTORY_FLAGS, dir_fd=self.fds[-1])
            if os.fstat(fd).st_dev != self.device:
                os.close(fd)
                raise OSError(errno.EXDEV, f"{relative} is on another device")
            self.fds.append(fd)
            self.names.append(part)
        return self.fds[-1]

    def __enter__(self) -> "_DirectoryChain":
        return self

    def __exit__(self, *exc) -> None:
        for fd in self.fds:
            os.close(fd)


def directory_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of local directory `path`, what open_checked_directory will be compared
    with; None for a URL, or when nothing is there."""
    if is_url(path):
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def open_checked_directory(path: str) -> CheckedDirectory:
    """Local directory `path` opened for deleting and replacing through its descriptor (its
    `identity`, device and inode, for the caller to compare with what it planned on). A `path`
    that is itself a symlink (`runs/latest`, named by the user) is resolved once, here."""
    try:
        try:
            fd = os.open(path, _DIRECTORY_FLAGS)
        except OSError:
            if not os.path.islink(path):
                raise
            fd = os.open(os.path.realpath(path), _DIRECTORY_FLAGS)
    except OSError as exc:
        raise NotFound(f"cannot open directory {path}: {exc.strerror}") from None
    return CheckedDirectory(path, fd)
