"""Object stores (`gs://`, `s3://`) and every other fsspec file system, behind
the one file seam (storage/fs.py). Imported only when a path is a URL, so the
local fast path never pays for fsspec.

Credentials and endpoints come from the backends' own chains (AWS env vars
and profiles, `AWS_ENDPOINT_URL`; Google application default credentials,
`STORAGE_EMULATOR_HOST`), fsspec's configuration (`FSSPEC_S3_*` env vars,
config files) and `--storage-option KEY=VALUE`. Whatever a backend raises
(missing bucket, denied, server down, object vanished) becomes one CkptError
line carrying the backend's message.

Most stores are addressed by bucket and key (`s3://bucket/key`); some by a server the URL names
itself (`ftp://user@host:2121/dir`): its host, port and user reach the backend as fsspec's own
url_to_fs hands them over, one backend instance per server, and what it lists is named by URLs on
that server again. `file://` URLs are read as plain paths are (storage/fs.py: regular files only,
checked on the open descriptor), never through fsspec's local file system, which opens whatever a
path names (a FIFO there blocked `ls file:///DIR` forever).
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, TypeVar

from ckpttool.errors import BadInput, NotFound, Refused, TooLarge

T = TypeVar("T")

# The extra that installs each protocol's backend.
_EXTRAS = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}
# Stores whose whole-object writes can be made conditional ("create only if absent").
CONDITIONAL_CREATE = frozenset({"s3", "s3a", "gs", "gcs"})
READ_CHUNK = 8 << 20  # one ranged GET
READS_IN_FLIGHT = 8
READ_AHEAD = 1 << 20  # a small sequential read (zipfile, h5py) fetches this much at once

_storage_options: dict[str, Any] = {}
_instances: dict[str, Any] = {}


def set_storage_options(options: dict[str, Any]) -> None:
    """Options handed to every backend (`--storage-option KEY=VALUE`), on top of fsspec's config."""
    _storage_options.clear()
    _storage_options.update(options)
    _instances.clear()


def parse_storage_option(text: str) -> tuple[str, Any]:
    """KEY=VALUE; VALUE parsed as JSON when it is JSON (numbers, true/false, objects), else a string."""
    from ckpttool.errors import UsageProblem

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageProblem(f"--storage-option takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def split_url(url: str) -> tuple[str, str]:
    """(protocol, path without the protocol): `gs://b/run` -> ("gs", "b/run").

    Object keys are opaque strings, never normalised: a key whose segments include `.`, `..` or
    empty ones is refused here, before any request (an HTTP layer may resolve `root/../../other`
    to another bucket), so no read, write or delete ever reaches one.
    """
    protocol, _, rest = url.partition("://")
    rest = rest.rstrip("/")
    problem = key_problem(rest) or address_problem(protocol.lower(), rest)
    if problem:
        raise BadInput(f"{url}: {problem}; object keys are not normalised, refusing to use it")
    return protocol.lower(), rest


def key_problem(path: str, rooted: bool = True) -> str | None:
    """Why the bucket path `path` (`bucket/key`; `rooted`: one leading `/` allowed, for stores
    rooted at `/` such as memory://) cannot be used as it is, or None."""
    segments = (path[1:] if rooted and path.startswith("/") else path).split("/")
    bad = next((s for s in segments if s in ("", ".", "..")), None)
    if bad is None:
        return None
    return "it has an empty segment (`//`)" if bad == "" else f"it has a `{bad}` segment"


def address_problem(protocol: str, path: str) -> str | None:
    """Why the backend would not address the object `path` as it is, or None: s3fs reads every
    `KEY?versionId=V` as object KEY (a listed key `run/ckpt-4.index?versionId=x.index` would be
    deleted as `run/ckpt-4.index`), gcsfs with version_aware `KEY#N` as KEY. Whatever the backend
    splits off, the key it would use must be the key as listed."""
    if getattr(_filesystem_class(protocol), "split_path", None) is None:
        return None  # a backend that takes the path as it is (ftp, memory, file ...)
    split = filesystem(protocol).split_path
    bucket, key, *_ = split(path)
    addressed = f"{bucket}/{key}" if key else bucket
    if addressed == path.lstrip("/"):
        return None
    return f"the {protocol}:// backend would read it as the object {addressed}"


def join_url(protocol: str, path: str) -> str:
    return f"{protocol}://{path}"


def canonical_protocol(protocol: str) -> str:
    """One name for each file system among fsspec's own aliases: the protocols its registry maps to
    one implementation (s3 and s3a, gs and gcs, file and local) answer the same (the first in sorted
    order), so a source and a destination are compared as the store sees them."""
    protocol = protocol.lower()
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:
        return protocol  # no fsspec: no URL can be opened at all

    def implementation(name: str) -> str | None:
        known = known_implementations.get(name)
        if known is not None:
            return known["class"]
        cls = registry.get(name)  # registered at run time (fsspec.register_implementation)
        return None if cls is None else f"{cls.__module__}.{cls.__qualname__}"

    mine = implementation(protocol)
    if mine is None:
        return protocol
    return min(name for name in {protocol, *known_implementations, *registry} if implementation(name) == mine)


def local_path(url: str) -> str | None:
    """The local path a `file://` (or `local://`) URL names, as fsspec's LocalFileSystem reads it;
    None for any other store."""
    protocol, _, rest = url.partition("://")
    if canonical_protocol(protocol) != canonical_protocol("file"):
        return None
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem._strip_protocol(f"file://{rest}")


def _backend_error(url: str, exc: BaseException, what: str = "") -> BadInput:
    """One line for whatever a backend raised."""
    if isinstance(exc, BadInput):
        return exc
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"no {what or 'object'} at {url}")
    if isinstance(exc, PermissionError):
        return BadInput(f"access denied to {url}: {_first_line(exc)}",
                        hint="check the credentials the backend found (env vars, profile, application default)")
    message = _first_line(exc) or type(exc).__name__
    return BadInput(f"{url}: {type(exc).__name__}: {message}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _import_fsspec():
    try:
        import fsspec
    except ImportError:
        raise BadInput("URLs need fsspec", hint="pip install 'ckpttool[remote]'") from None
    return fsspec


def _filesystem_class(protocol: str):
    """fsspec's class for `protocol`; None when it is unknown or its backend is not installed (the
    file system's creation then says which)."""
    try:
        return _import_fsspec().get_filesystem_class(protocol)
    except (ImportError, ValueError):
        return None


def _connection(protocol: str, url: str) -> dict[str, Any]:
    """What a URL says of the server it is on (`ftp://alice@host:2121/run`: host, port, user), as
    fsspec's url_to_fs passes it to the backend; {} for stores addressed by bucket and key."""
    cls = _filesystem_class(protocol)
    options = cls._get_kwargs_from_urls(url) if cls is not None else {}
    return options if "host" in options else {}


@dataclass(frozen=True)
class Location:
    """Where a URL's object is for its backend: the file system, the path it takes, and the URL
    prefix that makes a path it lists a URL again."""

    fs: Any
    path: str
    root: str

    def url_of(self, path: str) -> str:
        return self.root + path


def locate(url: str) -> Location:
    protocol, rest = split_url(url)
    connection = _connection(protocol, url)
    fs = filesystem(protocol, connection)
    if not connection:
        return Location(fs, rest, f"{protocol}://")
    return Location(fs, type(fs)._strip_protocol(f"{protocol}://{rest}"), f"{protocol}://{rest.partition('/')[0]}")


@contextlib.contextmanager
def _finalisers_quiet() -> Iterator[None]:
    """Unraisable errors (a finaliser's) are dropped within this block: a backend that fails half-way
    through its creation is dropped here, and its finaliser's own failure with it
    (FTPFileSystem.__del__ without the connection it never made printed `Exception ignored ...
    AttributeError` under the error line), which is no news to the user."""
    import sys

    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


def filesystem(protocol: str, connection: dict[str, Any] | None = None):
    """The fsspec file system for `protocol` (on the server `connection` names: see _connection),
    created once per process with our storage options."""
    key = (protocol, tuple(sorted((connection or {}).items()))) if connection else protocol
    fs = _instances.get(key)
    if fs is not None:
        return fs
    fsspec = _import_fsspec()
    if protocol in ("gs", "gcs"):
        # gcsfs otherwise probes every bucket over gRPC for hierarchical namespaces,
        # which waits 60 s per bucket against an emulator and is not needed for reads.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import fsspec.config

    from ckpttool.storage.reach import check_reachable, quiet_backend_loggers

    quiet_backend_loggers()
    check_reachable(protocol, _storage_options)

    # fsspec reads its FSSPEC_<PROTOCOL>_<KEY> variables once, at import: read them again, so
    # settings made since (a test, a notebook) apply; our own cache keeps one instance per run.
    fsspec.config.set_conf_env(fsspec.config.conf)
    server = connection or {}
    where = f"{protocol}://{server.get('host', '')}" + (f":{server['port']}" if server.get("port") else "")
    failure = None
    with _finalisers_quiet():
        try:
            fs = fsspec.filesystem(protocol, skip_instance_cache=True, **{**_storage_options, **server})
        except ImportError as exc:
            extra = _EXTRAS.get(protocol)
            hint = f"pip install 'ckpttool[{extra}]'" if extra else f"install the fsspec backend for {protocol}://"
            failure = BadInput(f"no backend installed for {protocol}:// ({_first_line(exc)})", hint=hint)
        except ValueError as exc:
            failure = BadInput(f"unknown protocol {protocol}:// ({_first_line(exc)})")
        except TypeError as exc:  # a required option missing (ftp:// without a host)
            failure = BadInput(f"{where}: {_first_line(exc)}", hint=f"name the server: {protocol}://HOST[:PORT]/PATH")
        except Exception as exc:  # noqa: BLE001 - a backend's own error types, reported in one line
            failure = _backend_error(where, exc)
        if failure is not None:
            import gc

            gc.collect()  # the half-made backend, if a reference cycle holds it, goes now rather than at exit
    if failure is not None:  # raised outside the handler: nothing keeps the half-made backend alive
        raise failure
    _instances[key] = fs
    return fs


def call(url: str, function: Callable[..., T], *args, what: str = "", **kwargs) -> T:
    """Run a backend call, turning whatever it raises into one CkptError line."""
    try:
        return function(*args, **kwargs)
    except (BadInput, Refused):
        raise
    except Exception as exc:  # noqa: BLE001 - every backend has its own exception zoo
        raise _backend_error(url, exc, what) from None


@dataclass(frozen=True)
class RemoteEntry:
    name: str
    path: str  # full URL
    is_dir: bool
    size: int
    mtime: float | None
    tag: str | None = None  # the object's version as listed (S3 ETag): a write can be made conditional on it


def tag_of(info: dict) -> str | None:
    """The version a listing gives an object, as a conditional write takes it (S3's ETag); None
    where the store lists none we use."""
    tag = info.get("ETag")
    return str(tag) if tag else None


def mtime_of(info: dict) -> float | None:
    from datetime import datetime

    for key in ("LastModified", "updated", "mtime", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return None


def list_directory(url: str) -> list[RemoteEntry]:
    """One listing of the "directory" `url` (objects and common prefixes), with sizes and times."""
    protocol = split_url(url)[0]
    where = locate(url)
    infos = call(url, where.fs.ls, where.path, detail=True, refresh=True, what="directory")
    entries = []
    for info in infos:
        name = posixpath.basename(info["name"].rstrip("/"))
        if not name or info["name"].rstrip("/") == where.path or name in (".", ".."):
            continue  # `run/../x` lists as a prefix `..`: never followed
        if address_problem(protocol, info["name"].rstrip("/")):
            continue  # `ckpt-1.index?versionId=x`: the backend would act on another object
        entries.append(RemoteEntry(name, where.url_of(info["name"].rstrip("/")), info.get("type") == "directory",
                                   int(info.get("size") or 0), mtime_of(info), tag_of(info)))
    return entries


def list_tree(url: str) -> list[RemoteEntry]:
    """Every object under `url`, in one recursive listing (paginated by the store)."""
    where = locate(url)
    found = call(url, where.fs.find, where.path, detail=True, withdirs=False)
    return [RemoteEntry(posixpath.basename(name), where.url_of(name), False, int(entry.get("size") or 0),
                        mtime_of(entry), tag_of(entry)) for name, entry in sorted(found.items())]


def walk(url: str, skipped: list[str] | None = None, listings: dict[str, list[RemoteEntry]] | None = None,
         listed: list[RemoteEntry] | None = None) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk for a bucket, built from one recursive listing: (directory URL, subdirectory names,
    file names), top-down; a subdirectory removed from the list in place is not entered.

    Keys are taken as listed: one whose part below `url` has a `.`, `..` or empty segment
    (`root/../../other-bucket/run/checkpoint`) is left out, its URL added to `skipped`.
    `listings`: filled with each directory's entries as list_directory would give them (objects,
    and subdirectories as entries of their own), so that no directory is listed a second time.
    `listed`: a recursive listing of a directory holding `url` (list_tree of it, made once for
    several of its subdirectories): its objects under `url` stand for url's own listing."""
    protocol, root = split_url(url)
    tree: dict[str, tuple[set[str], list[str]]] = {root: (set(), [])}
    objects: dict[str, list[RemoteEntry]] = {}
    start = len(protocol) + 3 + len(root) + 1  # where the key below `root/` begins in an entry's URL
    below = join_url(protocol, root) + "/"
    for entry in list_tree(url) if listed is None else (e for e in listed if e.path.startswith(below)):
        if (not entry.path.startswith(below) or key_problem(entry.path[start:], rooted=False)
                or address_problem(protocol, entry.path[start - len(root) - 1:])):
            if skipped is not None:
                skipped.append(entry.path)
            continue
        rel = entry.path[start:].split("/")
        current = root
        for part in rel[:-1]:
            tree.setdefault(current, (set(), []))[0].add(part)
            current = f"{current}/{part}"
        tree.setdefault(current, (set(), []))[1].append(rel[-1])
        if listings is not None:
            objects.setdefault(current, []).append(entry)
    pending = [root]
    while pending:
        current = pending.pop(0)
        dirs, files = tree.get(current, (set(), []))
        names = sorted(dirs)
        if listings is not None:
            listings[join_url(protocol, current)] = objects.get(current, []) + [
                RemoteEntry(name, join_url(protocol, f"{current}/{name}"), True, 0, None) for name in names]
        yield join_url(protocol, current), names, sorted(files)
        pending[:0] = [f"{current}/{d}" for d in names]


def info(url: str, fresh: bool = False) -> dict | None:
    """The object's metadata, None if there is no such object or prefix. `fresh`: asked of the
    store, not answered from a listing this process cached (an object made or removed since)."""
    where = locate(url)
    if fresh:
        where.fs.invalidate_cache(where.path)
    try:
        return where.fs.info(where.path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001
        raise _backend_error(url, exc) from None


def is_file(url: str) -> bool:
    found = info(url)
    return found is not None and found.get("type") != "directory"


def is_dir(url: str) -> bool:
    where = locate(url)
    return bool(call(url, where.fs.isdir, where.path))


def read_range(url: str, start: int, end: int, what: str = "file") -> bytes:
    where = locate(url)
    return call(url, where.fs.cat_file, where.path, start=start, end=end)


def read_capped(url: str, limit: int, what: str, missing_ok: bool = False) -> bytes | None:
    """A whole object no larger than `limit` bytes, in one GET; None if missing and `missing_ok`.

    The cap holds on the bytes read, not on a size looked up before (the object may be replaced
    in between): one ranged GET of `limit + 1` bytes, refused (TooLarge) if it brings more than
    `limit`."""
    where = locate(url)
    # No lookup before the GET (a request per state file, lock and journal read: `prune -r` reads
    # several per run directory); what is there is looked up only when nothing could be read.
    try:
        data = call(url, where.fs.cat_file, where.path, start=0, end=limit + 1, what=what)
    except NotFound:
        found = info(url)  # missing, or a prefix (a "directory"), which is never read as an object
        if missing_ok and (found is None or found.get("type") != "directory"):
            return None  # perhaps removed since it was listed (a concurrent prune finishing its journal)
        raise NotFound(f"no {what} at {url}") from None
    if len(data) > limit:
        raise TooLarge(f"{what} {url} is larger than {limit >> 20} MiB, the most ckpttool reads; refusing to read it")
    return data


def read_head_and_tail(url: str, head: int, tail: int, what: str, size: int | None = None) -> tuple[bytes, bytes, int]:
    """The first `head` and last `tail` bytes of an object and its size; one GET when it is small."""
    if size is None:
        found = info(url)
        if found is None:
            raise NotFound(f"no {what} at {url}")
        size = int(found.get("size") or 0)
    if size <= head:
        first = read_range(url, 0, size) if size else b""
        return first, first[max(0, len(first) - tail):], len(first)
    first = read_range(url, 0, head)
    return first, read_range(url, size - tail, size) if tail else b"", size


def iter_range_chunks(url: str, start: int, size: int, chunk: int = READ_CHUNK,
                      in_flight: int = READS_IN_FLIGHT) -> Iterator[bytes]:
    """Bytes [start, start+size) of an object, in order, with several ranged GETs in flight and
    at most `in_flight` chunks held at once (bounded memory); stops early at the object's end."""
    if size <= 0:
        return
    ranges = [(offset, min(offset + chunk, start + size)) for offset in range(start, start + size, chunk)]
    if len(ranges) == 1:
        data = read_range(url, *ranges[0])
        if data:
            yield data
        return
    with ThreadPoolExecutor(max_workers=min(in_flight, len(ranges))) as pool:
        pending = []
        next_range = 0
        try:
            while next_range < len(ranges) or pending:
                while next_range < len(ranges) and len(pending) < in_flight:
                    pending.append(pool.submit(read_range, url, *ranges[next_range]))
                    next_range += 1
                data = pending.pop(0).result()
                if not data:
                    return
                yield data
        finally:
            for future in pending:
                future.cancel()


class RemoteInput:
    """An object read at offsets over ranged GETs (the random-access interface of storage/fs.py),
    also usable as a seekable binary file (`seek`/`tell`/`read`/`readinto`) by readers that take a
    file object: zipfile (.npz, .keras) and h5py (.weights.h5).

    `read_at` and `iter_range` share nothing (threads may call them at once). The file interface
    has one position, as any file, and keeps the last READ_AHEAD bytes fetched: zipfile and h5py
    read a few bytes at a time, and a GET each would cost far more than the bytes."""

    def __init__(self, url: str, size: int):
        self.path = url
        self.size = size
        self._pos = 0
        self._buffer_start, self._buffer = 0, b""
        self.closed = False

    @classmethod
    def open(cls, url: str, what: str) -> "RemoteInput":
        found = info(url)
        if found is None:
            raise NotFound(f"no {what} at {url}")
        if found.get("type") == "directory":
            raise BadInput(f"cannot read {url} as a {what}: it is a directory")
        return cls(url, int(found.get("size") or 0))

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(self.size, offset + length)
        return read_range(self.path, offset, end) if end > offset else b""

    def iter_range(self, offset: int, length: int, chunk: int | None = None) -> Iterator[bytes]:
        """As LocalInput.iter_range. Each ranged GET is READ_CHUNK bytes whatever piece size
        is asked for (requests cost far more than bytes); None: one GET a piece."""
        for data in iter_range_chunks(self.path, offset, min(length, max(0, self.size - offset)), READ_CHUNK):
            if not chunk or len(data) <= chunk:
                yield data
            else:
                yield from (data[start : start + chunk] for start in range(0, len(data), chunk))

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        length = self.size - self._pos if n is None or n < 0 else n
        length = max(0, min(length, self.size - self._pos))
        if not length:
            return b""
        start = self._pos - self._buffer_start
        if 0 <= start and start + length <= len(self._buffer):
            data = self._buffer[start : start + length]
        elif length >= READ_AHEAD:
            data = b"".join(self.iter_range(self._pos, length))
        else:
            self._buffer_start, self._buffer = self._pos, self.read_at(self._pos, READ_AHEAD)
            data = self._buffer[:length]
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        self._buffer = b""

    def __enter__(self) -> "RemoteInput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_input(url: str, what: str) -> BinaryIO:
    return RemoteInput.open(url, what)  # type: ignore[return-value]


def write_whole(url: str, data: bytes, *, create_only: bool = False, if_tag: str | None = None) -> str | None:
    """Write an object in one request: readers see the old object or the new one (atomic on S3/GCS).
    Returns the written object's tag (S3's ETag) when the store gives one, else None.

    `create_only`: fail with Refused if the object exists (S3 If-None-Match, GCS ifGenerationMatch=0).
    `if_tag`: fail with Refused unless the object is still the version listed with that tag (S3
    If-Match; only where conditional_tags() says so).
    """
    where = locate(url)
    fs = where.fs
    kwargs = {"mode": "create"} if create_only else {}
    if if_tag is not None:
        kwargs["IfMatch"] = if_tag
    try:
        written = fs.pipe_file(where.path, data, **kwargs)
    except KeyboardInterrupt:
        cancel_in_flight(fs)  # else the PUT goes on behind the interrupt and its cleanup
        raise
    except FileExistsError:
        raise Refused(f"{url} exists") from None
    except Exception as exc:  # noqa: BLE001
        if (create_only or if_tag is not None) and _precondition_failed(exc):
            raise Refused(f"{url} exists" if create_only else f"{url} changed since it was listed") from None
        raise _backend_error(url, exc) from None
    return tag_of(written) if isinstance(written, dict) else None


def conditional_tags(url: str) -> bool:
    """Whether writes and deletes at `url` can be made conditional on a listed tag (S3's If-Match;
    gcsfs passes no generation condition but 0)."""
    return split_url(url)[0] in ("s3", "s3a")


def remove_if_tag(url: str, tag: str) -> bool:
    """Delete the object `url` only if it is still the version `tag` (S3 DELETE If-Match), in one
    request: True when deleted or already gone, False when it is another version now (left alone).
    A store that refuses the condition itself raises BadInput (the caller then looks first)."""
    from fsspec.asyn import sync

    where = locate(url)
    bucket, key, _ = where.fs.split_path(where.path)
    try:
        sync(where.fs.loop, where.fs._call_s3, "delete_object", Bucket=bucket, Key=key, IfMatch=tag)
    except FileNotFoundError:
        return True
    except Exception as exc:  # noqa: BLE001
        if _precondition_failed(exc):
            return False
        raise _backend_error(url, exc) from None
    where.fs.invalidate_cache(where.path)
    return True


def remove_many_if_tags(objects: list[tuple[str, str]]) -> set[str]:
    """Delete each object (url, tag) only if it is still the version `tag`, in S3 DeleteObjects
    requests of up to 1,000 keys, each key with its ETag (a store that ignores the condition
    deletes it all the same: the caller batches only what it knows to be its own). Returns the URLs
    not deleted for any reason but another version being there now (those are left alone): the
    caller removes them one by one. A failed request leaves all of its keys to the caller."""
    from fsspec.asyn import sync

    left: set[str] = set()
    groups: dict[tuple[int, str], tuple[object, list[tuple[str, str, str]]]] = {}
    for url, tag in objects:
        where = locate(url)
        bucket, key, _ = where.fs.split_path(where.path)
        groups.setdefault((id(where.fs), bucket), (where.fs, []))[1].append((url, key, tag))
    for (_id, bucket), (fs, items) in groups.items():
        for start in range(0, len(items), 1000):
            chunk = items[start:start + 1000]
            url_of = {key: url for url, key, _tag in chunk}
            try:
                answer = sync(fs.loop, fs._call_s3, "delete_objects", Bucket=bucket,
                              Delete={"Objects": [{"Key": key, "ETag": tag} for _url, key, tag in chunk],
                                      "Quiet": True})
            except Exception:  # noqa: BLE001 - the caller removes them one by one, and says what failed
                left.update(url_of.values())
                continue
            left.update(url_of.get(error.get("Key"), "") for error in answer.get("Errors") or ()
                        if error.get("Code") not in ("PreconditionFailed", "NoSuchKey"))
            for _url, key, _tag in chunk:
                fs.invalidate_cache(f"{bucket}/{key}")
    left.discard("")
    return left


def read_tagged(url: str, limit: int, what: str) -> tuple[bytes, str | None] | None:
    """The object's bytes and its tag (S3 ETag) from one GET, so that a delete made on that tag
    (remove_if_tag) removes the very version read; None if there is no such object. TooLarge past
    `limit` bytes. A store without conditional tags: read_capped's bytes, tag None."""
    if not conditional_tags(url):
        data = read_capped(url, limit, what, missing_ok=True)
        return None if data is None else (data, None)
    from fsspec.asyn import sync

    where = locate(url)
    bucket, key, _ = where.fs.split_path(where.path)

    async def get() -> tuple[bytes, str | None]:
        answer = await where.fs._call_s3("get_object", Bucket=bucket, Key=key)
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength") or 0) > limit:
                raise TooLarge(f"{what} {url} is larger than {limit} bytes")
            return await body.read(), answer.get("ETag")
        finally:
            body.close()

    try:
        return sync(where.fs.loop, get)
    except FileNotFoundError:
        return None
    except TooLarge:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _backend_error(url, exc) from None


def _precondition_failed(exc: BaseException) -> bool:
    """A condition on the write or delete did not hold (HTTP 412; s3fs says "pre-conditions")."""
    return "precondition" in str(exc).lower().replace("-", "")


@contextlib.contextmanager
def whole_object_output(url: str) -> Iterator[BinaryIO]:
    """A handle whose bytes become the object `url` when the block ends (a multipart upload that is
    completed only then); on any error or interrupt the upload is abandoned and no object appears."""
    from ckpttool.storage.atomic import commit_section

    where = locate(url)
    fs = where.fs
    handle = call(url, fs.open, where.path, "wb")
    try:
        yield handle
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            cancel_in_flight(fs)  # a part upload the interrupt left running
        try:
            handle.discard()
        finally:
            handle.closed = True  # never let close() (or the finaliser) complete the upload
        raise
    # Completing the upload is the commit: an interrupt waits until the object is there (the caller
    # then removes it) rather than leaving the request running behind the exit.
    with commit_section():
        call(url, handle.close)


def cancel_in_flight(fs, timeout: float = 30.0) -> None:
    """Cancel the requests an interrupt left running on an async backend's event loop (fsspec runs
    them in a thread of its own, which a KeyboardInterrupt in the main thread does not stop), and
    wait until they have ended, so that nothing they would write appears after our cleanup."""
    import asyncio

    loop = getattr(fs, "loop", None) if getattr(fs, "async_impl", False) else None
    if loop is None or not loop.is_running():
        return

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    try:
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout)
    except Exception:  # noqa: BLE001 - best effort on the way out; the caller removes what exists
        pass


_GLOB_CHARS = frozenset("*?[")


def remove_many(urls: list[str]) -> None:
    """Delete exactly these objects (keys as given, nothing below them), in as few requests as the
    store allows (S3: 1000 keys per request)."""
    if not urls:
        return
    fs = locate(urls[0]).fs
    paths = [locate(u).path for u in urls]
    # fsspec's rm expands `*?[` as a glob (`run/m*-1.index` would match `run/model.ckpt-1.index`):
    # such keys go one request each to rm_file, which takes a key as it is.
    literal = [p for p in paths if _GLOB_CHARS.isdisjoint(p)]
    try:
        for path in paths:
            if not _GLOB_CHARS.isdisjoint(path):
                try:
                    fs.rm_file(path)
                except FileNotFoundError:
                    pass
        if literal:
            fs.rm(literal)
    except FileNotFoundError:
        pass  # gone already: a concurrent cleanup or an earlier interrupted run
    except Exception as exc:  # noqa: BLE001
        raise _backend_error(urls[0], exc) from None


def copy_object(src: str, dst: str) -> None:
    """Server-side copy within one store (no download)."""
    source, destination = locate(src), locate(dst)
    call(src, source.fs.copy, source.path, destination.path)


def upload(local_path: str, url: str) -> None:
    """A local file as the object `url` (multipart for big ones: the object appears when complete).
    Interrupted, the transfer is cancelled before the interrupt goes on (the caller removes `url`)."""
    where = locate(url)
    fs = where.fs
    try:
        call(url, fs.put_file, local_path, where.path)
    except KeyboardInterrupt:
        cancel_in_flight(fs)
        raise


def download(url: str, local_path: str) -> None:
    where = locate(url)
    call(url, where.fs.get_file, where.path, local_path)
