"""Manifests: what a checkpoint holds, file by file and tensor by tensor, as SHA-256 and CRC-32C
digests, and the check of a copy against one (`manifest`, `verify --manifest [--quick]`,
`diff --by-hash`, `inspect --hash`).

A tensor's digests do not depend on the format that stores it (docs/reference/manifest.md): its
SHA-256 covers its canonical encoding,

    b"ckpttool-tensor-v1\\0" + dtype name + b"\\0" + shape as a decimal comma list + b"\\0" + elements

with TensorFlow's dtype names (float32, bfloat16, string ...), the elements in C order,
little-endian, each in its storage width (a bool one byte, 0 or 1; bfloat16 its 2 bytes; float8
and int4 their byte), and a string (or variant) element as its length in 8 bytes little-endian
followed by its bytes; its CRC-32C (manifest version 2) covers the elements alone. So a TF
checkpoint and its safetensors, .npz or Keras copy give the same digests, and a renamed copy is
recognised by them.

A file's digests are the SHA-256 (what sha256sum prints) and CRC-32C of its bytes. A file larger
than the manifest's piece size also lists the SHA-256 of each piece, so that a copy is checked in
parallel pieces (one SHA-256 stream runs on one core), as OpenSSF model signing's shard
serialization does; CRC-32Cs of pieces join into the file's (crc32c.combine), so none are listed.

`verify --manifest` checks SHA-256s; `--quick` the CRC-32Cs, at the speed of `verify` (digests.py).
A version-1 manifest has no CRC-32C: it is still checked by SHA-256."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from ckpttool.errors import BadInput, CorruptCheckpoint, NotFound, Unsupported
from ckpttool.formats.variables import Variable
from ckpttool.ops.targets import Target, open_target, resolve_target
from ckpttool.ops.tensors.digests import (CRC32C, SHA256, TENSOR_ENCODING, Outcome, caught, crc_pieces,
                                          joined_crc, ordered, quick_digests, range_digests, tensor_digests)
from ckpttool.storage import fs
from ckpttool.version import __version__

FORMAT = "ckpttool-manifest"
VERSION = 2  # 2 added a CRC-32C to every file and tensor; 1 is still read (and checked by SHA-256)
READ_VERSIONS = (1, 2)
PIECE_BYTES = 64 << 20  # 16 pieces of a 1 GiB shard keep two to four cores busy
_MANIFEST_LIMIT = 256 << 20  # a manifest of a million tensors is ~200 MB of JSON


# -- the manifest ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the checkpoint's directory (a SavedModel's: variables/variables.index), "/"-separated
    size: int
    sha256: str
    pieces: tuple[str, ...] = ()  # the digest of each piece of `piece_bytes`, for a file larger than one
    crc32c: str | None = None  # 8 hex digits (version 2 on)


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str
    crc32c: str | None = None  # of the elements alone, 8 hex digits (version 2 on)


@dataclass(frozen=True)
class Manifest:
    checkpoint: str  # the checkpoint read, as resolved (a prefix or file)
    checkpoint_format: str  # v2, v1, safetensors, npz, keras, keras_h5, graphdef
    files: tuple[FileEntry, ...]
    tensors: tuple[TensorEntry, ...]
    piece_bytes: int = PIECE_BYTES
    created_by: str = f"ckpttool {__version__}"
    version: int = VERSION  # a version-1 manifest read back has no CRC-32C

    def document(self) -> dict:
        """The manifest as JSON data (docs/reference/manifest.schema.json)."""
        def crc(entry: FileEntry | TensorEntry) -> dict:
            return {"crc32c": entry.crc32c} if entry.crc32c is not None else {}

        def file_doc(f: FileEntry) -> dict:
            return {"path": f.path, "size": f.size, "sha256": f.sha256, **crc(f),
                    **({"pieces": list(f.pieces)} if f.pieces else {})}

        return {"format": FORMAT, "version": self.version, "created_by": self.created_by,
                "checkpoint": {"path": self.checkpoint, "format": self.checkpoint_format},
                "tensor_encoding": TENSOR_ENCODING, "piece_bytes": self.piece_bytes,
                "files": [file_doc(f) for f in self.files],
                "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "sha256": t.sha256, **crc(t)}
                            for t in self.tensors]}


def _base(target: Target) -> str:
    return target.saved_model_dir or fs.dirname(target.prefix)


def _relative(base: str, path: str) -> str:
    return path[len(base) + 1:] if base and path.startswith(base + "/") else fs.basename(path)


def checkpoint_files(target: Target, reader) -> list[str]:
    """Every file of the checkpoint: its index (or the safetensors index), data files and graph."""
    files = []
    if target.format == "v2":
        files.append(target.prefix + ".index")
    elif target.format == "safetensors":
        from ckpttool.formats.safetensors import INDEX_SUFFIX

        if target.prefix.endswith(INDEX_SUFFIX):
            files.append(target.prefix)
    files += [f for f in reader.data_files() if f not in files]
    if target.meta_path and target.meta_path not in files:
        files.append(target.meta_path)
    return files


def _file_jobs(handle, size: int, piece_bytes: int, whole: tuple[str, ...],
               pieces: bool) -> list[Callable[[], tuple[str, ...]]]:
    """The whole file's digests of the kinds `whole` names (if any), then each piece's SHA-256."""
    jobs = [lambda: range_digests(handle, 0, size, whole)] if whole else []
    if pieces and size > piece_bytes:
        jobs += [lambda at=at: range_digests(handle, at, min(piece_bytes, size - at), (SHA256,))
                 for at in range(0, size, piece_bytes)]
    return jobs


def _listed_tensors(reader) -> list[Variable]:
    return [v for v in reader.variables if not v.internal]


def build_manifest(target: str | Target, on_progress: Callable[[int], None] | None = None) -> Manifest:
    """The manifest of `target`: every file's size and digest (and pieces'), every tensor's digest. A
    tensor that cannot be read (damage) is BadInput: a manifest describes an intact checkpoint."""
    if isinstance(target, str):
        target = resolve_target(target)
    base = _base(target)
    with open_target(target) as reader:
        paths = checkpoint_files(target, reader)
        handles = []
        try:
            for path in paths:
                handles.append(fs.open_random_access(path, "checkpoint file", inside=not fs.is_url(path)))
            parallel = not any(fs.is_url(p) for p in paths)  # positional reads of local files
            counts, jobs = [], []
            for path, handle in zip(paths, handles):
                file_jobs = _file_jobs(handle, handle.size, PIECE_BYTES, (SHA256, CRC32C), pieces=True)
                counts.append(len(file_jobs))
                jobs += file_jobs
            digests = iter(list(ordered(jobs, parallel)))  # whole files first: the longest jobs start first
            files = []
            for path, handle, count in zip(paths, handles, counts):
                (sha, crc), *pieces = [next(digests) for _ in range(count)]
                files.append(FileEntry(_relative(base, path), handle.size, sha, tuple(p for (p,) in pieces), crc))
        finally:
            for handle in handles:
                handle.close()
        tensors = []
        for var, outcome in tensor_digests(reader, _listed_tensors(reader), on_progress, (SHA256, CRC32C)):
            if isinstance(outcome, Unsupported):  # not damage: what ckpttool cannot read exactly
                raise outcome
            if isinstance(outcome, BadInput):
                raise type(outcome)(f"{outcome.message} (no manifest is written of a damaged checkpoint)",
                                    hint=f"ckpttool verify {target.prefix} lists all the damage")
            tensors.append(TensorEntry(var.name, var.dtype.name, var.shape, *outcome))
    return Manifest(target.prefix, target.format, tuple(files), tuple(tensors), PIECE_BYTES)


# -- reading one back ------------------------------------------------------------------------------

def _bad(source: str, problem: str) -> CorruptCheckpoint:
    return CorruptCheckpoint(f"{fs.basename(source)}: {problem}",
                             hint="a manifest is what `ckpttool manifest TARGET -o FILE` writes")


def _is_digest(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_manifest(data: bytes, source: str = "manifest") -> Manifest:
    """A manifest document, checked field by field (CorruptCheckpoint naming the first problem;
    Unsupported for another format or a newer version)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(source, f"not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(source, f'not a ckpttool manifest (no "format": "{FORMAT}")')
    version = doc.get("version")
    if not _is_count(version) or version not in READ_VERSIONS:
        raise Unsupported(f"{fs.basename(source)}: manifest version {str(version)[:20]}; this ckpttool "
                          f"reads versions {' and '.join(map(str, READ_VERSIONS))}", hint="upgrade ckpttool")
    if doc.get("tensor_encoding", TENSOR_ENCODING) != TENSOR_ENCODING:
        raise Unsupported(f"{fs.basename(source)}: tensor encoding {str(doc.get('tensor_encoding'))[:40]!r}, "
                          f"not {TENSOR_ENCODING}")
    checkpoint, piece_bytes = doc.get("checkpoint"), doc.get("piece_bytes")
    files, tensors = doc.get("files"), doc.get("tensors")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("path"), str) \
            or not isinstance(checkpoint.get("format"), str):
        raise _bad(source, "checkpoint must be an object with a path and a format")
    if not _is_count(piece_bytes) or not piece_bytes:
        raise _bad(source, "piece_bytes must be a positive integer")
    if not isinstance(files, list) or not isinstance(tensors, list):
        raise _bad(source, "files and tensors must be lists")
    with_crc = version >= 2
    file_entries = tuple(_file_entry(f, i, piece_bytes, with_crc, source) for i, f in enumerate(files))
    tensor_entries = tuple(_tensor_entry(t, i, with_crc, source) for i, t in enumerate(tensors))
    # Entries are compared by name: of two under one name only one would be, and the other (another
    # digest, dtype or shape) would pass unseen.
    _refuse_repeats([f.path for f in file_entries], "files", "path", source)
    _refuse_repeats([t.name for t in tensor_entries], "tensors", "name", source)
    return Manifest(checkpoint["path"], checkpoint["format"], file_entries, tensor_entries,
                    piece_bytes, str(doc.get("created_by", "")), version)


def _refuse_repeats(names: list[str], field: str, what: str, source: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise _bad(source, f"{field}[{i}]: {what} {name[:200]!r} is listed twice")
        seen.add(name)


def _crc_of(entry: dict, with_crc: bool, where: str, source: str) -> str | None:
    """The entry's crc32c: required from version 2 on, ignored before (readers ignore unknown fields)."""
    if not with_crc:
        return None
    value = entry.get("crc32c")
    if not (isinstance(value, str) and len(value) == 8 and all(c in "0123456789abcdef" for c in value)):
        raise _bad(source, f"{where} needs a crc32c (8 lowercase hex digits) in a version-2 manifest")
    return value


def _file_entry(f, i: int, piece_bytes: int, with_crc: bool, source: str) -> FileEntry:
    if not isinstance(f, dict) or not isinstance(f.get("path"), str) or not _is_count(f.get("size")) \
            or not _is_digest(f.get("sha256")):
        raise _bad(source, f"files[{i}] needs a path, a size and a sha256 (64 lowercase hex digits)")
    path, pieces = f["path"], f.get("pieces", [])
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path or "\\" in path:
        raise _bad(source, f"files[{i}]: {path[:200]!r} is not a relative path inside the checkpoint")
    expected = -(-f["size"] // piece_bytes) if f["size"] > piece_bytes else 0
    if not isinstance(pieces, list) or not all(_is_digest(p) for p in pieces) or len(pieces) not in (0, expected):
        raise _bad(source, f"files[{i}]: pieces must be {expected} sha256 digests (one per {piece_bytes} bytes)")
    return FileEntry(path, f["size"], f["sha256"], tuple(pieces), _crc_of(f, with_crc, f"files[{i}]", source))


def _tensor_entry(t, i: int, with_crc: bool, source: str) -> TensorEntry:
    if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not isinstance(t.get("dtype"), str) \
            or not isinstance(t.get("shape"), list) or not all(_is_count(d) for d in t["shape"]) \
            or not _is_digest(t.get("sha256")):
        raise _bad(source, f"tensors[{i}] needs a name, a dtype, a shape (a list of sizes) and a sha256")
    return TensorEntry(t["name"], t["dtype"], tuple(t["shape"]), t["sha256"], _crc_of(t, with_crc, f"tensors[{i}]", source))


def read_manifest(path: str) -> Manifest:
    return parse_manifest(fs.read_capped(path, _MANIFEST_LIMIT, "manifest"), path)


def is_manifest_path(path: str) -> bool:
    """A .json file that is no safetensors index: read as a manifest where a checkpoint may be too."""
    from ckpttool.formats.safetensors import INDEX_SUFFIX

    return path.endswith(".json") and not path.endswith(INDEX_SUFFIX)


# -- checking a copy -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    name: str  # the file (relative path) or tensor
    change: str  # missing, extra, changed, renamed (tensors), unreadable (tensors)
    message: str
    renamed_to: str | None = None  # renamed: the tensor's name in the target


@dataclass(frozen=True)
class ManifestCheck:
    checkpoint: str
    manifest: str
    mode: str  # "files": the target's files were compared; "tensors": their tensors only
    checked_files: int
    checked_tensors: int
    checked_bytes: int
    files: tuple[Difference, ...]
    tensors: tuple[Difference, ...]
    ignore_names: bool = False  # renamed tensors are not differences
    digest: str = SHA256  # what was compared: sha256, or crc32c (--quick)

    @property
    def ok(self) -> bool:
        return not self.files and not [t for t in self.tensors if not (self.ignore_names and t.change == "renamed")]


_OPEN_AT_ONCE = 64  # files held open while their pieces are hashed (a manifest may list many)


def _compare_files(manifest: Manifest, base: str, present: list[str] | None, parallel: bool,
                   quick: bool) -> tuple[list[Difference], int, int]:
    """Differences of the manifest's files under `base` (and, `present`: the target's own files
    the manifest does not list), files checked and bytes read."""
    differences: list[Difference] = []
    checked = read = 0
    for start in range(0, len(manifest.files), _OPEN_AT_ONCE):
        found, count, size = _compare_some_files(manifest, manifest.files[start:start + _OPEN_AT_ONCE], base,
                                                 parallel, quick)
        differences += found
        checked += count
        read += size
    listed = {entry.path for entry in manifest.files}
    for path in present or ():
        name = _relative(base, path)
        if name not in listed and fs.exists(path):
            differences.append(Difference(name, "extra", f"{name} is not in the manifest"))
    return sorted(differences, key=lambda d: d.name), checked, read


def _where_it_differs(manifest: Manifest, entry: FileEntry, handle, results: list, quick: bool) -> str | None:
    """None when the file's digests are the manifest's, else where it differs (a piece's start, if known)."""
    if any(isinstance(r, BadInput) for r in results):  # it shrank, or could not be read
        return ""
    if quick:
        try:
            return None if joined_crc(handle, results, entry.size) == entry.crc32c else ""
        except CorruptCheckpoint:
            return ""
    expected = [(p,) for p in entry.pieces] if entry.pieces else [(entry.sha256,)]
    index = next((i for i, (got, want) in enumerate(zip(results, expected)) if got != want), None)
    if index is None:
        return None
    return f" (from byte {index * manifest.piece_bytes})" if entry.pieces else ""


def _compare_some_files(manifest: Manifest, entries: tuple[FileEntry, ...], base: str, parallel: bool,
                        quick: bool) -> tuple[list[Difference], int, int]:
    differences, handles, planned = [], [], []
    checked = read = 0
    try:
        for entry in entries:
            path = fs.join(base, *entry.path.split("/")) if base else entry.path
            try:
                handle = fs.open_random_access(path, "checkpoint file", inside=not fs.is_url(path))
            except NotFound:
                differences.append(Difference(entry.path, "missing", f"{entry.path} is missing"))
                continue
            handles.append(handle)
            checked += 1
            if handle.size != entry.size:
                differences.append(Difference(entry.path, "changed", f"{entry.path} has {handle.size} bytes, "
                                              f"the manifest {entry.size}"))
                continue
            jobs = crc_pieces(handle, entry.size) if quick else \
                _file_jobs(handle, entry.size, manifest.piece_bytes, () if entry.pieces else (SHA256,), bool(entry.pieces))
            planned.append((entry, handle, jobs))
            read += entry.size
        outcomes = ordered([caught(job) for _entry, _handle, jobs in planned for job in jobs], parallel)
        for entry, handle, jobs in planned:
            where = _where_it_differs(manifest, entry, handle, [next(outcomes) for _ in jobs], quick)
            if where is not None:
                differences.append(Difference(entry.path, "changed", f"{entry.path} differs from the manifest{where}"))
    finally:
        for handle in handles:
            handle.close()
    return differences, checked, read


def _compare_tensors(manifest: Manifest, actual: list[tuple[Variable, Outcome]], names: dict[str, str],
                     kind: str) -> list[Difference]:
    """By name, then the names on one side only paired by dtype, shape and digest of `kind` (renamed)."""
    expected = {t.name: t for t in manifest.tensors}
    found = {names[var.name]: (var, outcome) for var, outcome in actual}
    differences = []
    missing = [t for name, t in expected.items() if name not in found]
    extra = {name: pair for name, pair in found.items() if name not in expected}
    for name, (var, outcome) in found.items():
        entry = expected.get(name)
        if entry is None:
            continue
        if isinstance(outcome, BadInput):
            differences.append(Difference(name, "unreadable", outcome.message))
        elif (var.dtype.name, var.shape) != (entry.dtype, entry.shape):
            differences.append(Difference(name, "changed", f"{name} is {var.dtype.name} {list(var.shape)}, "
                                          f"the manifest says {entry.dtype} {list(entry.shape)}"))
        elif outcome[0] != getattr(entry, kind):
            differences.append(Difference(name, "changed", f"{name}: its values differ from the manifest's"))
    by_digest: dict[tuple, list[str]] = {}  # a CRC-32C covers the elements alone: dtype and shape must agree too
    for name, (var, outcome) in extra.items():
        if not isinstance(outcome, BadInput):
            by_digest.setdefault((var.dtype.name, var.shape, outcome[0]), []).append(name)
    for entry in missing:
        candidates = by_digest.get((entry.dtype, entry.shape, getattr(entry, kind)))
        if candidates:
            new = candidates.pop(0)
            del extra[new]
            differences.append(Difference(entry.name, "renamed", f"{entry.name} is now {new} (same values)", new))
        else:
            differences.append(Difference(entry.name, "missing", f"{entry.name} is missing"))
    for name, (_var, outcome) in extra.items():
        what = f" (unreadable: {outcome.message})" if isinstance(outcome, BadInput) else ""
        differences.append(Difference(name, "extra", f"{name} is not in the manifest{what}"))
    return sorted(differences, key=lambda d: d.name)


def _files_mode(manifest: Manifest, target: Target, base: str) -> bool:
    """The target's files are the manifest's: the same format, and its main file listed under the same name."""
    main = target.prefix + ".index" if target.format == "v2" else target.prefix
    return target.format == manifest.checkpoint_format and _relative(base, main) in {f.path for f in manifest.files}


def require_crcs(manifest: Manifest, manifest_path: str = "") -> None:
    """Unsupported unless the manifest has CRC-32Cs for a quick check (version 2 on)."""
    if manifest.version < 2:
        raise Unsupported(f"{fs.basename(manifest_path or 'the manifest')} is a version-{manifest.version} manifest: "
                          "it has no CRC-32C for --quick to check",
                          hint="check its SHA-256s (without --quick), or write a new manifest with `ckpttool manifest`")


def check_manifest(target: str | Target, manifest: Manifest, manifest_path: str = "", *,
                   tensors: bool = False, ignore_names: bool = False, quick: bool = False,
                   on_progress: Callable[[int], None] | None = None) -> ManifestCheck:
    """Compare `target` with `manifest`: its files (when they are the manifest's; each file's
    pieces in parallel) or else, or with `tensors`, its tensors' digests. When a file differs, the
    tensors are compared too, to name those that changed. `ignore_names`: a tensor found under
    another name (same digest) is no difference. `quick`: CRC-32Cs instead of SHA-256s (a
    version-2 manifest; Unsupported for a version-1 one, before anything is read)."""
    if quick:
        require_crcs(manifest, manifest_path)
    if isinstance(target, str):
        target = resolve_target(target)
    base = _base(target)
    kind = CRC32C if quick else SHA256
    if not tensors and _files_mode(manifest, target, base):
        try:
            reader = open_target(target)
        except BadInput as exc:  # the index itself changed: the files say which, the tensors cannot
            differences, checked, read = _compare_files(manifest, base, None, not fs.is_url(target.prefix), quick)
            unread = Difference(fs.basename(target.prefix), "unreadable", f"tensors not compared: {exc.message}")
            return ManifestCheck(target.prefix, manifest_path, "files", checked, 0, read, tuple(differences),
                                 (unread,), ignore_names, kind)
        with reader:
            differences, checked, read = _compare_files(manifest, base, checkpoint_files(target, reader),
                                                        not fs.is_url(target.prefix), quick)
            if on_progress:
                on_progress(read)
            tensor_differences: list[Difference] = []
            if differences:  # name the tensors that changed
                tensor_differences = _tensor_pass(reader, manifest, kind)
        return ManifestCheck(target.prefix, manifest_path, "files", checked,
                             len(manifest.tensors) if not differences else len(_listed_tensors(reader)), read,
                             tuple(differences), tuple(tensor_differences), ignore_names, kind)
    with open_target(target) as reader:
        variables = _listed_tensors(reader)
        tensor_differences = _tensor_pass(reader, manifest, kind, on_progress)
    return ManifestCheck(target.prefix, manifest_path, "tensors", 0, len(variables),
                         sum(v.size_bytes for v in variables), (), tuple(tensor_differences), ignore_names, kind)


def _tensor_pass(reader, manifest: Manifest, kind: str,
                 on_progress: Callable[[int], None] | None = None) -> list[Difference]:
    variables = _listed_tensors(reader)
    digests = quick_digests(reader, variables, on_progress) if kind == CRC32C else \
        tensor_digests(reader, variables, on_progress)
    return _compare_tensors(manifest, list(digests), {v.name: v.name for v in variables}, kind)


# -- diff by hash ------------------------------------------------------------------------------------

def _digested_side(given: str | Target, regex, naming: str,
                   on_progress: Callable[[int], None] | None) -> tuple[str, dict[str, tuple[str, tuple, str]]]:
    """(what was read, {name: (dtype, shape, digest)}): a manifest's tensors as listed, or a
    checkpoint's, each read once (damage is BadInput, as `diff` raises it)."""
    from ckpttool.ops.tensors.model_names import reader_names

    if isinstance(given, str) and is_manifest_path(given):
        manifest = read_manifest(given)
        return given, {t.name: (t.dtype, t.shape, t.sha256) for t in manifest.tensors
                       if not regex or regex.search(t.name)}
    target = resolve_target(given) if isinstance(given, str) else given
    with open_target(target) as reader:
        shown = reader_names(reader, naming)
        variables = [v for v in _listed_tensors(reader) if not regex or regex.search(shown[v.name])]
        side = {}
        for var, outcome in tensor_digests(reader, variables, on_progress):
            if isinstance(outcome, BadInput):
                raise outcome
            side[shown[var.name]] = (var.dtype.name, var.shape, outcome[0])
    return target.prefix, side


def diff_by_hash(a: str | Target, b: str | Target, *, pattern: str | None = None, naming: str = "key",
                 on_progress: Callable[[int], None] | None = None):
    """`diff --by-hash`: which tensors were added, removed, changed in dtype or shape, or in value
    (their digests differ), each side read once; a side may be a manifest (nothing read)."""
    from ckpttool.ops.patterns import compile_optional
    from ckpttool.ops.tensors.diff import DiffReport, VariableDiff
    from ckpttool.ops.tensors.model_names import check_naming

    check_naming(naming)
    regex = compile_optional(pattern, "--filter")
    a_name, a_side = _digested_side(a, regex, naming, on_progress)
    b_name, b_side = _digested_side(b, regex, naming, on_progress)
    differences, compared = [], 0
    for name in sorted(set(a_side) | set(b_side)):
        sa, sb = a_side.get(name), b_side.get(name)
        if sb is None:
            differences.append(VariableDiff(name, "removed", a_dtype=sa[0], a_shape=sa[1], a_sha256=sa[2]))
        elif sa is None:
            differences.append(VariableDiff(name, "added", b_dtype=sb[0], b_shape=sb[1], b_sha256=sb[2]))
        elif sa[:2] != sb[:2]:
            change = "dtype" if sa[0] != sb[0] else "shape"
            differences.append(VariableDiff(name, change, sa[0], sb[0], sa[1], sb[1], a_sha256=sa[2], b_sha256=sb[2]))
        else:
            compared += 1
            if sa[2] != sb[2]:
                differences.append(VariableDiff(name, "value", sa[0], sb[0], sa[1], sb[1], a_sha256=sa[2],
                                                b_sha256=sb[2]))
    return DiffReport(a_name, b_name, compared, tuple(differences))
