"""Writer of TensorFlow's V2 checkpoint format, read back by TensorFlow.

Two levels:
- `write_index`: a `.index` for entries whose bytes are already in data
  shards (rename-vars rewrites only the index); byte-identical to
  TensorFlow's when the entries are.
- `BundleWriter`: new tensors of any fixed-width dtype or strings, plain or
  partitioned, streamed into one or more shards, then the index.
Files are written under temporary names and renamed, data before the index,
so an interrupted write never leaves an index TensorFlow would pick up.
"""
from __future__ import annotations

import os
from math import prod
from typing import TYPE_CHECKING, Iterable

from ckpttool.formats.tf import crc32c as crc
from ckpttool.storage.atomic import StagedFile, commit_replacement, discard_replacement, prepare_replacement
from ckpttool.formats.tf.bundle import data_file_path
from ckpttool.errors import Unsupported
from ckpttool.formats.dtypes import INT64_MAX, STRING, DType
from ckpttool.formats.tf.ordered_code import encode_slice_key
from ckpttool.formats.tf.protos import checkpoint_pb2 as pb
from ckpttool.formats.tf.table import build_table
from ckpttool.formats.tf.wire import encode_fixed32, encode_fixed64, encode_varint

if TYPE_CHECKING:
    import numpy as np

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
    import numpy as np  # here, not at the top: rename-vars and convert to safetensors never need it

    data = np.ascontiguousarray(array, dtype=np.dtype(dtype.storage)).tobytes()
    return data, crc.mask(crc.crc32c(data))


def encode_tensor(dtype: DType, array) -> tuple[bytes, int]:
    if dtype.code == STRING:
        import numpy as np

        return encode_strings(np.asarray(array, dtype=object).reshape(-1))
    if not dtype.fixed_width:
        raise ValueError(f"cannot write dtype {dtype.name}")
    return encode_fixed(dtype, array)


def make_entry(dtype: DType, shape, shard_id: int, offset: int, size: int, checksum: int) -> pb.BundleEntryProto:
    entry = pb.BundleEntryProto(dtype=dtype.code, shard_id=shard_id, offset=offset, size=size, crc32c=checksum)
    entry.shape.SetInParent()  # TensorFlow always writes the shape, even for scalars
    if any(dim > INT64_MAX for dim in shape):
        raise Unsupported(f"shape {list(shape)} has a dimension over 2**63-1, which a TF checkpoint cannot hold")
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


class BundleWriter:
    """Streams tensors into shards; `finish()` commits the data files, then the index.

    Each shard is written straight to a temporary file as tensors are added
    (memory stays bounded by one chunk), under a name TensorFlow never reads.
    `abort()` (or leaving a `with` block by an exception) removes them.
    """

    def __init__(self, prefix: str, num_shards: int = 1):
        self.prefix = prefix
        self.num_shards = num_shards
        self._shards: list[StagedFile | None] = [None] * num_shards
        self._sizes = [0] * num_shards
        self._entries: dict[bytes, pb.BundleEntryProto] = {}

    def _write(self, shard: int, data: bytes) -> None:
        staged = self._shards[shard]
        if staged is None:
            # Unsynced, like TensorFlow's writer: the index, written last and synced, is the commit point.
            staged = self._shards[shard] = StagedFile(data_file_path(self.prefix, shard, self.num_shards), sync=False)
        staged.handle.write(data)
        self._sizes[shard] += len(data)

    def _append(self, key: bytes, dtype: DType, array, shard: int) -> pb.BundleEntryProto:
        data, checksum = encode_tensor(dtype, array)
        import numpy as np

        entry = make_entry(dtype, np.shape(array), shard, self._sizes[shard], len(data), checksum)
        self._write(shard, data)
        return entry

    def _claim(self, name: str) -> bytes:
        key = name.encode("utf-8", "surrogateescape")
        if key in self._entries or key.startswith(b"\x00"):
            raise ValueError(f"duplicate or reserved tensor name {name!r}")
        return key

    def add(self, name: str, dtype: DType, array, shard: int = 0) -> None:
        key = self._claim(name)
        self._entries[key] = self._append(key, dtype, array, shard)

    def add_stream(self, name: str, dtype: DType, shape, chunks: Iterable[bytes], shard: int = 0) -> int:
        """A fixed-width tensor from its little-endian C-order bytes, chunk by chunk; bytes written."""
        key = self._claim(name)
        if not dtype.fixed_width:
            raise ValueError(f"cannot stream dtype {dtype.name}")
        offset, running = self._sizes[shard], 0
        for chunk in chunks:
            running = crc.extend_view(running, chunk)  # a view of a reused read buffer: not copied
            self._write(shard, chunk)
        size = self._sizes[shard] - offset
        if size != prod(shape) * dtype.itemsize:
            raise ValueError(f"{name!r}: {size} bytes for shape {list(shape)} of {dtype.name}")
        self._entries[key] = make_entry(dtype, shape, shard, offset, size, crc.mask(running))
        return size

    def add_partitioned(self, name: str, dtype: DType, full_shape, pieces, shards=None) -> None:
        """`pieces`: (extents, array) per slice; extents (start, length), length -1 for a full dimension."""
        key = self._claim(name)
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
        """Commit every data file (empty shards too), then write the index."""
        committed: list[str] = []
        try:
            for shard_id in range(self.num_shards):
                if self._shards[shard_id] is None:
                    self._write(shard_id, b"")
            for shard_id, staged in enumerate(self._shards):
                staged.commit()
                self._shards[shard_id] = None
                committed.append(staged.path)
            write_index(self.prefix, self.num_shards, self._entries)
        except BaseException:
            # Data files without their index are orphans nobody would read: remove them too.
            for path in committed:
                discard_replacement(path)
            self.abort()
            raise

    def abort(self) -> None:
        """Remove the temporary shards written so far."""
        for staged in self._shards:
            if staged is not None:
                staged.discard()
        self._shards = [None] * self.num_shards

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abort()


def remove_checkpoint_files(prefix: str) -> None:
    """Delete a checkpoint's index first (so TensorFlow stops seeing it), then its data."""
    import glob

    for path in [prefix + ".index"] + sorted(glob.glob(glob.escape(prefix) + ".data-?????-of-?????")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
