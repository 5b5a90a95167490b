"""Writer of TensorFlow's V2 checkpoint format, read back by TensorFlow.

Two levels:
- `write_index`: a `.index` for entries whose bytes are already in data
  shards (rename-vars rewrites only the index); byte-identical to
  TensorFlow's when the entries are.
- `BundleWriter`: new tensors of any fixed-width dtype or strings, plain or
  partitioned, into one or more shards, then the index.
Files are written under temporary names and renamed, data before the index,
so an interrupted write never leaves an index TensorFlow would pick up.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ckpttool.formats import crc32c as crc
from ckpttool.formats.atomic import commit_replacement, discard_replacement, prepare_replacement
from ckpttool.formats.bundle import data_file_path
from ckpttool.formats.dtypes import STRING, DType
from ckpttool.formats.ordered_code import encode_slice_key
from ckpttool.formats.protos import checkpoint_pb2 as pb
from ckpttool.formats.table import build_table
from ckpttool.formats.wire import encode_fixed32, encode_fixed64, encode_varint

_U32_MAX = 0xFFFFFFFF


def encode_strings(items) -> tuple[bytes, int]:
    """Bytes of a string tensor and its masked CRC (FORMAT.md §4, DT_STRING)."""
    items = [bytes(i) for i in items]
    length_words = b"".join(encode_fixed32(len(i)) if len(i) <= _U32_MAX else encode_fixed64(len(i)) for i in items)
    length_crc = encode_fixed32(crc.mask(crc.crc32c(length_words)))
    body = b"".join(items)
    data = b"".join(encode_varint(len(i)) for i in items) + length_crc + body
    checksum = crc.extend(crc.extend(crc.crc32c(length_words), length_crc), body)
    return data, crc.mask(checksum)


def encode_fixed(dtype: DType, array: np.ndarray) -> tuple[bytes, int]:
    """Little-endian C-order bytes of a fixed-width tensor and their masked CRC."""
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype.storage)).tobytes()
    return data, crc.mask(crc.crc32c(data))


def encode_tensor(dtype: DType, array) -> tuple[bytes, int]:
    if dtype.code == STRING:
        return encode_strings(np.asarray(array, dtype=object).reshape(-1))
    if not dtype.fixed_width:
        raise ValueError(f"cannot write dtype {dtype.name}")
    return encode_fixed(dtype, array)


def make_entry(dtype: DType, shape, shard_id: int, offset: int, size: int, checksum: int) -> pb.BundleEntryProto:
    entry = pb.BundleEntryProto(dtype=dtype.code, shard_id=shard_id, offset=offset, size=size, crc32c=checksum)
    entry.shape.SetInParent()  # TensorFlow always writes the shape, even for scalars
    for dim in shape:
        entry.shape.dim.add(size=dim)
    return entry


def header_bytes(num_shards: int) -> bytes:
    header = pb.BundleHeaderProto(num_shards=num_shards)
    header.version.producer = 1
    return header.SerializeToString()


def serialize_index(num_shards: int, entries: dict[bytes, pb.BundleEntryProto]) -> bytes:
    items = [(b"", header_bytes(num_shards))]
    items += [(key, entries[key].SerializeToString(deterministic=True)) for key in sorted(entries)]
    return build_table(items)


def write_index(prefix: str, num_shards: int, entries: dict[bytes, pb.BundleEntryProto]) -> int:
    """Write `prefix.index` atomically; the number of bytes written."""
    data = serialize_index(num_shards, entries)
    tmp = prepare_replacement(prefix + ".index", data)
    try:
        commit_replacement(tmp, prefix + ".index")
    except BaseException:
        discard_replacement(tmp)
        raise
    return len(data)


@dataclass
class _Shard:
    buffer: bytearray = field(default_factory=bytearray)


class BundleWriter:
    """Collects tensors into shards; `finish()` writes data files, then the index."""

    def __init__(self, prefix: str, num_shards: int = 1):
        self.prefix = prefix
        self.num_shards = num_shards
        self._shards = [_Shard() for _ in range(num_shards)]
        self._entries: dict[bytes, pb.BundleEntryProto] = {}

    def _append(self, key: bytes, dtype: DType, array, shard: int) -> pb.BundleEntryProto:
        data, checksum = encode_tensor(dtype, array)
        buffer = self._shards[shard].buffer
        entry = make_entry(dtype, np.shape(array), shard, len(buffer), len(data), checksum)
        buffer += data
        return entry

    def add(self, name: str, dtype: DType, array, shard: int = 0) -> None:
        key = name.encode("utf-8", "surrogateescape")
        if key in self._entries or key.startswith(b"\x00"):
            raise ValueError(f"duplicate or reserved tensor name {name!r}")
        self._entries[key] = self._append(key, dtype, array, shard)

    def add_partitioned(self, name: str, dtype: DType, full_shape, pieces, shards=None) -> None:
        """`pieces`: (extents, array) per slice; extents (start, length), length -1 for a full dimension."""
        key = name.encode("utf-8", "surrogateescape")
        full = make_entry(dtype, full_shape, 0, 0, 0, 0)
        for i, (extents, array) in enumerate(pieces):
            slice_proto = full.slices.add()
            for start, length in extents:
                extent = slice_proto.extent.add()
                extent.start = start
                if length != -1:
                    extent.length = length
            self._entries[encode_slice_key(key, extents)] = self._append(
                key, dtype, array, shards[i] if shards else 0)
        full.ClearField("shard_id")
        self._entries[key] = full

    def finish(self) -> None:
        written = []
        try:
            for shard_id, shard in enumerate(self._shards):
                path = data_file_path(self.prefix, shard_id, self.num_shards)
                tmp = prepare_replacement(path, bytes(shard.buffer))
                written.append((tmp, path))
            for tmp, path in written:
                commit_replacement(tmp, path)
            written = []
            write_index(self.prefix, self.num_shards, self._entries)
        finally:
            for tmp, _path in written:
                discard_replacement(tmp)


def remove_checkpoint_files(prefix: str) -> None:
    """Delete a checkpoint's index first (so TensorFlow stops seeing it), then its data."""
    import glob

    for path in [prefix + ".index"] + sorted(glob.glob(glob.escape(prefix) + ".data-?????-of-?????")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
