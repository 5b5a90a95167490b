"""safetensors files, read and written by streaming, without the safetensors library.

Layout: a little-endian u64 N, N bytes of JSON header, then the byte buffer.
The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
end]} (offsets relative to the buffer) and may hold "__metadata__", a map of
strings. A sharded set is several such files plus `NAME.safetensors.index.json`
({"metadata": {...}, "weight_map": {tensor: file}}), as Hugging Face writes.

Nothing a header claims is trusted: its size is capped, every offset must lie
inside the file, the tensors must tile the buffer exactly (contiguous, no
overlap, no gap), each size must equal elements x itemsize and every dtype must
be known, so a lying header is a CorruptCheckpoint, never a huge allocation.
"""
from __future__ import annotations

import json
import os
import struct
from math import prod
from typing import BinaryIO, Callable, Iterable, Iterator

from ckpttool.errors import BadInput, CkptError, CorruptCheckpoint, Unsupported
from ckpttool.formats.dtypes import DType, check_bool_bytes, dtype_from_name
from ckpttool.storage.fs import leaves_its_directory, open_random_access, read_capped
from ckpttool.formats.variables import FileSetReader, StoredTensor, Variable


HEADER_LIMIT = 100_000_000  # the safetensors library refuses larger headers too
INDEX_LIMIT = 64 << 20
INDEX_SUFFIX = ".safetensors.index.json"
METADATA_KEY = "__metadata__"
CHUNK_BYTES = 8 << 20

# safetensors dtype -> TensorFlow dtype name; only exact equivalents.
_TF_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
    "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
    "F64": "float64", "C64": "complex64", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
}
_SAFETENSORS_NAMES = {tf: st for st, tf in _TF_NAMES.items()}
# Dtypes the format defines (safetensors 0.6+) that ckpttool does not read: F4 packs two
# float4_e2m1fn values in a byte (TensorFlow stores one a byte), F6_* pack 6-bit floats and
# F8_E8M0 (the MX scale type) has no TensorFlow dtype. Refused, naming them.
_UNREAD = {"F4": "float4_e2m1fn, two values a byte", "F6_E2M3": "float6_e2m3fn, packed",
           "F6_E3M2": "float6_e3m2fn, packed", "F8_E8M0": "float8_e8m0fnu, which TensorFlow has no dtype for"}


def safetensors_dtype(dtype: DType) -> str | None:
    """The safetensors name of a TensorFlow dtype, None if safetensors cannot hold it."""
    return _SAFETENSORS_NAMES.get(dtype.name)


def is_safetensors_path(path: str) -> bool:
    return path.endswith((".safetensors", INDEX_SUFFIX))


# -- reading ----------------------------------------------------------------

def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


_JSON_KINDS = {dict: "object", list: "array", type(None): "null", bool: "boolean", int: "number", float: "number"}


def _int_list(value, length: int | None = None) -> bool:
    """A list of u64 values (the library's usize), as the safetensors library accepts."""
    return (isinstance(value, list) and (length is None or len(value) == length)
            and all(type(v) is int and 0 <= v < 1 << 64 for v in value))


def _is_utf8(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON's "\\ud800"), which is no UTF-8 text:
    the safetensors library refuses such a header, and no name may hold one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _header_of(handle, corrupt: Callable[[str], CorruptCheckpoint]) -> tuple[dict, int]:
    """(the JSON header, its length) of an open file, its length checked against the file's size."""
    file_size = handle.size
    head = handle.read_at(0, 8)
    if len(head) < 8:
        raise corrupt(f"too short to be a safetensors file ({file_size} bytes)")
    (length,) = struct.unpack("<Q", head)
    # The length is never quoted: for a file that is not safetensors it is its first 8 bytes.
    if length > HEADER_LIMIT:
        raise corrupt(f"not a safetensors file (its header length is over the {HEADER_LIMIT}-byte limit)")
    if 8 + length > file_size:
        raise corrupt(f"not a safetensors file (its header length runs past the end of the file, {file_size} bytes)")
    raw = handle.read_at(8, length)
    if len(raw) < length:
        raise corrupt("the file was truncated while its header was read")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise corrupt(f"header is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    return header, length


def size_problem(path: str) -> str | None:
    """Why the safetensors file at `path` is not whole (its header, or the byte buffer its tensors'
    offsets end at, runs past the file or stops short of it), else None: what `ls` asks of an HF
    step's weights, reading the header only."""
    try:
        handle = open_random_access(path, "safetensors file")
    except (CkptError, OSError) as exc:
        return f"cannot be read ({exc})"
    try:
        header, length = _header_of(handle, CorruptCheckpoint)
        buffer_size = handle.size - 8 - length
        ends = [info["data_offsets"][1] for name, info in header.items() if name != METADATA_KEY
                and isinstance(info, dict) and _int_list(info.get("data_offsets"), 2)]
    except (CkptError, OSError) as exc:
        return str(exc)
    finally:
        handle.close()
    end = max(ends, default=0)
    if end > buffer_size:
        return f"cut short: its header places tensors up to byte {8 + length + end}, the file holds {handle.size}"
    if end < buffer_size:
        return f"{buffer_size - end} bytes after the last tensor belong to none"
    return None


class SafetensorsFile:
    """One validated .safetensors file: its tensors (absolute offsets) and metadata.

    Read at offsets only (pread, or ranged GETs), never through a shared file
    position, so threads may read one file at once."""

    def __init__(self, path: str, shard_id: int = 0):
        self.path = path
        self.handle = open_random_access(path, "safetensors file")
        try:
            self.tensors, self.metadata = self._read_header(shard_id)
        except BaseException:
            self.handle.close()
            raise

    def _corrupt(self, problem: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(f"{os.path.basename(self.path)}: {problem}")

    def _read_header(self, shard_id: int) -> tuple[dict[str, StoredTensor], dict[str, str]]:
        file_size = self.handle.size
        header, length = _header_of(self.handle, self._corrupt)
        metadata = header.pop(METADATA_KEY, None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) and _is_utf8(v) and _is_utf8(k)
                                                         for k, v in metadata.items()):
            raise self._corrupt("__metadata__ must map strings to strings")
        data_start = 8 + length
        buffer_size = file_size - data_start
        tensors: dict[str, StoredTensor] = {}
        spans = []
        for name, info in header.items():
            if not _is_utf8(name):
                raise self._corrupt(f"tensor name {name!r} holds a lone surrogate, which is not UTF-8 text")
            if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
                raise self._corrupt(f"tensor {name!r}: expected exactly dtype, shape and data_offsets")
            st_dtype = info["dtype"]
            if isinstance(st_dtype, str) and st_dtype in _UNREAD:
                raise Unsupported(f"{os.path.basename(self.path)}: tensor {name!r} has safetensors dtype {st_dtype} "
                                  f"({_UNREAD[st_dtype]}), which ckpttool cannot read")
            if not isinstance(st_dtype, str) or st_dtype not in _TF_NAMES:
                kind = _JSON_KINDS.get(type(st_dtype), "value")
                shown_dtype = repr(st_dtype[:40]) if isinstance(st_dtype, str) else f"a JSON {kind}"
                raise (Unsupported if isinstance(st_dtype, str) and st_dtype.isupper() else CorruptCheckpoint)(
                    f"{os.path.basename(self.path)}: tensor {name!r} has dtype {shown_dtype}, which "
                    "has no TensorFlow equivalent")
            dtype = dtype_from_name(_TF_NAMES[st_dtype])
            if not _int_list(info["shape"]) or not _int_list(info["data_offsets"], 2):
                raise self._corrupt(f"tensor {name!r}: shape and data_offsets must be lists of integers "
                                    "from 0 to 2**64-1")
            shape = tuple(info["shape"])
            begin, end = info["data_offsets"]
            if begin > end or end > buffer_size:
                raise self._corrupt(f"tensor {name!r}: data_offsets [{begin}, {end}] lie outside the "
                                    f"{buffer_size}-byte buffer")
            if end - begin != prod(shape) * dtype.itemsize:
                raise self._corrupt(f"tensor {name!r}: {end - begin} bytes for shape {list(shape)} of {st_dtype}")
            spans.append((begin, end, name))
            tensors[name] = StoredTensor(name.encode("utf-8", "surrogateescape"), dtype, shape, shard_id,
                                         data_start + begin, end - begin, 0)
        position = 0
        for begin, end, name in sorted(spans):
            if begin != position:
                problem = "overlaps the tensor before it" if begin < position else f"leaves a gap at {position}"
                raise self._corrupt(f"tensor {name!r} {problem} (data_offsets must tile the buffer)")
            position = end
        if position != buffer_size:
            raise self._corrupt(f"{buffer_size - position} bytes after the last tensor belong to none")
        return tensors, metadata

    def close(self) -> None:
        self.handle.close()


def read_weight_map(path: str, what: str = "safetensors index") -> dict[str, str]:
    """weight_map of a sharded set (Hugging Face's index, for safetensors and PyTorch shards alike),
    checked: plain file names beside the index only."""
    try:
        index = json.loads(read_capped(path, INDEX_LIMIT, what).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptCheckpoint(f"{os.path.basename(path)}: not valid JSON ({str(exc)[:200]})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CorruptCheckpoint(f"{os.path.basename(path)}: no weight_map of tensor names to file names")
    if not all(_is_utf8(name) for name in weight_map):
        raise CorruptCheckpoint(f"{os.path.basename(path)}: a tensor name holds a lone surrogate, "
                                "which is not UTF-8 text")
    for filename in set(weight_map.values()):
        if not _is_utf8(filename) or "\x00" in filename:
            raise CorruptCheckpoint(f"{os.path.basename(path)}: shard name {filename[:200]!r} is not a file name "
                                    "(a NUL byte or a lone surrogate)")
        if os.path.basename(filename) != filename or filename in ("", ".", ".."):
            raise BadInput(f"{os.path.basename(path)}: shard {filename[:200]!r} is not a file beside the index; "
                           "refusing to read outside its directory")
    return weight_map


def refuse_leaving(index: str, shard: str) -> None:
    """A shard that is a symlink resolving outside the index's directory is refused, as `../`
    is: an index must not make ckpttool read (and describe) /etc/shadow."""
    if leaves_its_directory(shard):
        raise BadInput(f"{os.path.basename(index)}: shard {os.path.basename(shard)!r} is a link to a file outside "
                       "the index's directory; refusing to read outside its directory")


class SafetensorsReader(FileSetReader):
    """A .safetensors file or a sharded set (through its index), as a checkpoint reader."""

    format = "safetensors"

    def _open(self, path: str) -> None:
        if path.endswith(INDEX_SUFFIX):
            weight_map = read_weight_map(path)
            directory = os.path.dirname(path)
            shard_names = sorted(set(weight_map.values()))
            for shard_id, filename in enumerate(shard_names):
                shard = os.path.join(directory, filename)
                refuse_leaving(path, shard)
                self._files.append(SafetensorsFile(shard, shard_id))
            for name, filename in weight_map.items():
                if name not in self._files[shard_names.index(filename)].tensors:
                    raise CorruptCheckpoint(f"{os.path.basename(path)}: {filename} does not hold {name!r}")
        else:
            weight_map = None
            self._files.append(SafetensorsFile(path))
        parts: dict[str, StoredTensor] = {}
        for file in self._files:
            for name, part in file.tensors.items():
                if weight_map is not None and weight_map.get(name) != os.path.basename(file.path):
                    raise CorruptCheckpoint(f"{os.path.basename(file.path)} holds {name!r}, which the index "
                                            "does not place there")
                parts[name] = part
        self.metadata: dict[str, str] = dict(self._files[0].metadata) if len(self._files) == 1 else {}
        self.variables = [Variable(name, part.dtype, part.shape, (part,))
                          for name, part in sorted(parts.items(), key=lambda item: item[1].key)]

    def iter_stored_bytes(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """The tensor's bytes as stored (little-endian, C order), in chunks."""
        part = var.parts[0]
        file = self._files[part.shard_id]
        yield from self.byte_range(file.handle, part.offset, part.size, part.dtype.itemsize,
                                   chunk_bytes or CHUNK_BYTES, f"{os.path.basename(file.path)}, reading {var.name!r}")

    def check_variable(self, var: Variable) -> int:
        """Read every byte (the format has no checksums); booleans must be 0 or 1."""
        for chunk in self.iter_stored_bytes(var):
            check_bool_bytes(var.name, var.dtype, chunk)
        return var.parts[0].size


# -- writing ----------------------------------------------------------------

def _alignment_order(item: tuple[str, DType, tuple[int, ...]]):
    name, dtype, _shape = item
    return (-dtype.itemsize, name)  # widest first keeps every tensor aligned, as the library does


def write_safetensors(handle: BinaryIO, items: list[tuple[str, DType, tuple[int, ...]]],
                      chunks_of: Callable[[str], Iterable[bytes]], metadata: dict[str, str] | None = None) -> int:
    """Write one file to `handle`: the header for `items` (name, dtype, shape), then
    each tensor's bytes from `chunks_of(name)`, streamed. Bytes written."""
    ordered = sorted(items, key=_alignment_order)
    header: dict[str, object] = {METADATA_KEY: dict(metadata)} if metadata else {}
    offset = 0
    for name, dtype, shape in ordered:
        size = prod(shape) * dtype.itemsize
        header[name] = {"dtype": _SAFETENSORS_NAMES[dtype.name], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the buffer starts 8-byte aligned
    handle.write(struct.pack("<Q", len(text)) + text)
    for name, dtype, shape in ordered:
        expected, written = prod(shape) * dtype.itemsize, 0
        for chunk in chunks_of(name):
            handle.write(chunk)
            written += len(chunk)
        if written != expected:
            raise CorruptCheckpoint(f"{name!r}: the source gave {written} bytes, its header says {expected}")
    return 8 + len(text) + offset


def index_document(weight_map: dict[str, str], total_size: int, metadata: dict[str, str]) -> bytes:
    """`model.safetensors.index.json` as Hugging Face loaders read it."""
    document = {"metadata": {"total_size": total_size, **metadata},
                "weight_map": dict(sorted(weight_map.items()))}
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
