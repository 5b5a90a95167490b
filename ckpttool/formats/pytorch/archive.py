"""PyTorch's two file layouts, told apart by their bytes and parsed into tensors and storages.

- zip (torch.save's default since 1.6): one top directory `<root>/` holding `data.pkl` (the pickle),
  `data/<key>` (one uncompressed record per storage, its raw bytes), `byteorder` ("little" or
  "big"; absent in files older than 1.10, which are little-endian) and version records.
- legacy (`_use_new_zipfile_serialization=False`): five pickles back to back (the magic number
  0x1950a86a20f9469cfc6c, the protocol version 1001, a sys_info dict, the object, the sorted list of
  storage keys), then each storage in that order: its element count (little-endian int64) and its
  raw bytes.

Every pickle goes through the allowlisting unpickler (unpickler.py), read from memory with a size
cap; storage bytes are located, never read here. A storage that is missing, compressed or shorter
than it is declared is recorded as a problem of its own (`verify` reports it for the tensors on it);
a tensor reaching past its storage's declared size is refused when the file is opened, as torch does.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
from dataclasses import dataclass
from math import prod

from ckpttool.errors import CkptError, CorruptCheckpoint, TooLarge, Truncated, Unsupported
from ckpttool.formats.dtypes import array_shape_problem
from ckpttool.formats.zips import ZIP_ERRORS, check_zip_member
from ckpttool.formats.pytorch.unpickler import StorageRef, TensorRef, named_tensors, unpickle
from ckpttool.storage import fs
from ckpttool.text import excerpt

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_MAGIC_PICKLE = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")  # LONG1 of 10 bytes: the magic number
PICKLE_LIMIT = 64 << 20  # a state dict's pickle is ~150 bytes a tensor: 64 MiB is ~400k tensors
_FIRST_WINDOW = 1 << 20  # legacy: the head read first, then 4x larger until the pickles fit
_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length (30 bytes)


@dataclass(frozen=True)
class StorageBytes:
    """Where one storage's bytes are in the file."""

    offset: int
    size: int  # bytes there (a zip record's size; a legacy storage's element count x itemsize)
    crc32: int | None = None  # the zip record's CRC-32; legacy files have none
    problem: str | None = None  # why its bytes cannot be read (missing, compressed, cut short)


@dataclass(frozen=True)
class PytorchArchive:
    kind: str  # "zip" | "legacy"
    tensors: dict[str, TensorRef]
    storages: dict[str, StorageBytes]  # by key, every storage a tensor uses


def legacy_head(head: bytes) -> bool:
    """Whether `head` starts a legacy torch.save file: its first pickle is the magic number."""
    if head[:1] == b"\x80":  # PROTO n
        head = head[2:]
    return head.startswith(_MAGIC_PICKLE)


def zip_root(names: list[str]) -> str | None:
    """`<root>/` of a PyTorch zip (the one top directory holding data.pkl), None if there is none."""
    roots = [name[: -len("data.pkl")] for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
    return roots[0] if len(roots) == 1 else None


PYTORCH_SUFFIXES = (".pt", ".pth", ".bin")


def sniff(path: str) -> str | None:
    """"zip" or "legacy" for a PyTorch file, by its bytes; None for anything else. A file named as
    PyTorch names them whose zip cannot be read (cut short, damaged) is "zip" too: its reader then
    says what is wrong with the archive, rather than that it is no checkpoint at all."""
    try:
        if not fs.is_file(path):
            return None
        head = fs.read_range(path, 0, 32, "file")
    except (CkptError, OSError):
        return None
    if legacy_head(head):
        return "legacy"
    if head[:4] != _ZIP_MAGIC:
        return None
    try:
        with fs.open_input(path, "zip archive") as handle, zipfile.ZipFile(handle) as archive:
            return "zip" if zip_root(archive.namelist()) is not None else None
    except ZIP_ERRORS + (OSError, CkptError):
        return "zip" if path.endswith(PYTORCH_SUFFIXES) else None


def tensor_span(ref: TensorRef) -> tuple[int, int, bool]:
    """(first byte, bytes spanned, C-contiguous) of a tensor inside its storage."""
    itemsize = ref.dtype.dtype.itemsize
    if prod(ref.shape) == 0:
        return ref.offset * itemsize, 0, True
    extent = 1 + sum((size - 1) * step for size, step in zip(ref.shape, ref.stride))
    contiguous, expected = True, 1
    for size, step in zip(reversed(ref.shape), reversed(ref.stride)):
        if size != 1 and step != expected:
            contiguous = False
        expected *= size
    return ref.offset * itemsize, extent * itemsize, contiguous


def _check_tensors(tensors: dict[str, TensorRef], what: str) -> None:
    """Each tensor's dtype known and its view inside its storage's declared size (torch's set_
    refuses a view past the storage too)."""
    for name, ref in tensors.items():
        try:
            dtype = ref.dtype.dtype
        except Unsupported as exc:
            raise Unsupported(f"{what}: tensor {excerpt(name, 80)!r}: {exc.message}") from None
        problem = array_shape_problem(ref.shape, dtype.itemsize)
        if problem:
            raise CorruptCheckpoint(f"{what}: tensor {excerpt(name, 80)!r} has a shape with {problem}")
        start, length, _ = tensor_span(ref)
        if length and start + length > ref.storage.nbytes:
            raise CorruptCheckpoint(f"{what}: tensor {excerpt(name, 80)!r} reaches byte {start + length} of its "
                                    f"storage, which holds {ref.storage.nbytes}")


def _used_storages(tensors: dict[str, TensorRef]) -> dict[str, StorageRef]:
    return {ref.storage.key: ref.storage for ref in tensors.values()}


def read_zip(path: str, handle) -> PytorchArchive:
    """A torch.save zip: `handle` (open_random_access) reads the storages' local headers."""
    what = os.path.basename(path)
    try:
        with fs.open_input(path, "PyTorch file") as stream, zipfile.ZipFile(stream) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            root = zip_root(list(infos))
            if root is None:
                raise CorruptCheckpoint(f"{what}: a zip archive without one <root>/data.pkl: not a PyTorch file")
            byteorder = infos.get(root + "byteorder")
            if byteorder is not None and byteorder.file_size <= 16 and archive.read(byteorder) != b"little":
                raise Unsupported(f"{what}: a big-endian PyTorch file; ckpttool reads little-endian ones")
            pickle_info = infos[root + "data.pkl"]
            check_zip_member(pickle_info, path)
            if pickle_info.file_size > PICKLE_LIMIT:
                raise TooLarge(f"{what}: its pickle is {pickle_info.file_size} bytes, more than the "
                               f"{PICKLE_LIMIT} ckpttool reads")
            data = archive.read(pickle_info)  # zipfile checks its CRC-32
    except ZIP_ERRORS + (OSError,) as exc:
        raise CorruptCheckpoint(f"{what}: not a readable zip archive ({excerpt(str(exc), 160)})") from None
    obj, _declared = unpickle(data, what)
    tensors = named_tensors(obj, what)
    _check_tensors(tensors, what)
    storages = {key: _zip_record(infos.get(f"{root}data/{key}"), ref, handle)
                for key, ref in _used_storages(tensors).items()}
    return PytorchArchive("zip", tensors, storages)


def _zip_record(info: zipfile.ZipInfo | None, ref: StorageRef, handle) -> StorageBytes:
    name = f"data/{excerpt(ref.key, 40)}"
    if info is None:
        return StorageBytes(0, 0, None, f"record {name} is missing")
    if info.compress_type != zipfile.ZIP_STORED:
        return StorageBytes(0, 0, info.CRC, f"record {name} is compressed (torch stores them uncompressed)")
    header = handle.read_at(info.header_offset, _LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != _ZIP_MAGIC:
        return StorageBytes(0, 0, info.CRC, f"record {name} has no local header where the zip directory says")
    _signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if info.file_size < ref.nbytes:
        return StorageBytes(offset, info.file_size, info.CRC, f"record {name} holds {info.file_size} bytes, "
                            f"its storage is declared {ref.nbytes}")
    if offset + info.file_size > handle.size:
        return StorageBytes(offset, info.file_size, info.CRC, f"record {name} runs past the end of the file "
                            f"(cut short at {handle.size} bytes)")
    return StorageBytes(offset, info.file_size, info.CRC)


def read_legacy(path: str, handle) -> PytorchArchive:
    """A legacy torch.save file. Its pickles have no stated length: the head of the file is read,
    and read again 4x larger while the pickles run past it (up to PICKLE_LIMIT)."""
    what = os.path.basename(path)
    available = min(handle.size, PICKLE_LIMIT)
    window = min(_FIRST_WINDOW, available)
    while True:
        head = handle.read_at(0, window)
        try:
            return _parse_legacy(io.BytesIO(head), handle, what)
        except Truncated:
            if window >= available:
                if handle.size > PICKLE_LIMIT:
                    raise TooLarge(f"{what}: its pickles run past the first {PICKLE_LIMIT} bytes, "
                                   "the most ckpttool reads") from None
                raise
            window = min(window * 4, available)


def _parse_legacy(stream: io.BytesIO, handle, what: str) -> PytorchArchive:
    magic, _ = unpickle(stream, what)
    protocol, _ = unpickle(stream, what)
    if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
        raise CorruptCheckpoint(f"{what}: not a legacy PyTorch file (magic number or protocol version wrong)")
    sys_info, _ = unpickle(stream, what)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise Unsupported(f"{what}: a PyTorch file saved on a big-endian machine (or without sys_info); "
                          "ckpttool reads little-endian ones")
    obj, declared = unpickle(stream, what)
    keys, _ = unpickle(stream, what)
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise CorruptCheckpoint(f"{what}: the list of storage keys is not a list of strings")
    tensors = named_tensors(obj, what)
    _check_tensors(tensors, what)
    position, located = stream.tell(), {}
    for key in keys:
        ref = declared.get(key)
        if ref is None:
            raise CorruptCheckpoint(f"{what}: storage {excerpt(key, 40)!r} is listed but no tensor declares it")
        located[key], position = _legacy_storage(ref, position, handle)
    storages = {key: located.get(key, StorageBytes(0, 0, None, f"storage {excerpt(key, 40)!r} is not in the "
                                                                   "file's list of storages"))
                for key in _used_storages(tensors)}
    return PytorchArchive("legacy", tensors, storages)


def _legacy_storage(ref: StorageRef, position: int, handle) -> tuple[StorageBytes, int]:
    """The storage at `position` (its int64 count, then its bytes), and where the next one starts."""
    name = f"storage {excerpt(ref.key, 40)!r}"
    count = handle.read_at(position, 8)
    if len(count) < 8:
        return StorageBytes(position, 0, None, f"{name} is missing (the file ends at {handle.size} bytes)"), position
    (numel,) = struct.unpack("<q", count)
    if numel != ref.numel:
        # Where the next storage starts depends on this count: a wrong one leaves the rest unplaced.
        return StorageBytes(position + 8, 0, None, f"{name} holds a count of {numel} elements, its tensors "
                            f"declare {ref.numel}"), handle.size + 1
    start = position + 8
    if start + ref.nbytes > handle.size:
        return StorageBytes(start, max(handle.size - start, 0), None, f"{name} is cut short: it needs "
                            f"{ref.nbytes} bytes from {start}, the file has {handle.size}"), start + ref.nbytes
    return StorageBytes(start, ref.nbytes), start + ref.nbytes
