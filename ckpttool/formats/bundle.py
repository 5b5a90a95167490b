"""Reader of TensorFlow's V2 checkpoint format (the tensor bundle).

A checkpoint prefix P has `P.index` (a table: header + one BundleEntryProto
per tensor) and data shards `P.data-SSSSS-of-NNNNN` holding the tensors'
bytes. Every read checks the stored CRC; fixed-width tensors can be streamed
in bounded chunks (FORMAT.md §3, §4).
"""
from __future__ import annotations

import os
from math import prod
from typing import Iterator

import numpy as np

from ckpttool.errors import CorruptCheckpoint, NotFound, Unsupported
from ckpttool.formats import crc32c as crc
from ckpttool.formats.dtypes import STRING, VARIANT, DType, dtype_from_code
from ckpttool.formats.messages import BundleHeader, extents_of, parse_header, parse_message, shape_of
from ckpttool.formats.ordered_code import encode_slice_key
from ckpttool.formats.protos import checkpoint_pb2 as pb
from ckpttool.formats.table import read_table_file
from ckpttool.formats.variables import OBJECT_GRAPH_KEY, StoredTensor, Variable, slice_bounds
from ckpttool.formats.wire import decode_fixed32, decode_varint, encode_fixed32, encode_fixed64

CHUNK_BYTES = 8 << 20
_U32_MAX = 0xFFFFFFFF


def data_file_path(prefix: str, shard_id: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


class Bundle:
    """An open V2 checkpoint. Construct with `open_bundle`; use as a context manager."""

    format = "v2"

    def __init__(self, prefix: str, header: BundleHeader, entries: dict[bytes, pb.BundleEntryProto]):
        self.prefix = prefix
        self.header = header
        self._entries = entries
        self._files: dict[int, object] = {}
        self.variables = self._collect_variables()
        self._by_name = {var.name: var for var in self.variables}

    # -- structure --------------------------------------------------------
    def _stored(self, key: bytes, entry: pb.BundleEntryProto) -> StoredTensor:
        name = key.decode("utf-8", "surrogateescape")
        dtype = dtype_from_code(entry.dtype)
        shape = shape_of(entry.shape, name)
        if not 0 <= entry.shard_id < self.header.num_shards:
            raise CorruptCheckpoint(f"{self.prefix}.index: tensor {name!r} names shard {entry.shard_id} "
                                    f"of {self.header.num_shards}")
        if entry.offset < 0 or entry.size < 0:
            raise CorruptCheckpoint(f"{self.prefix}.index: tensor {name!r} has a negative offset or size")
        if dtype.fixed_width and entry.size != prod(shape) * dtype.itemsize:
            raise CorruptCheckpoint(f"{self.prefix}.index: tensor {name!r} size {entry.size} does not match "
                                    f"its shape {list(shape)} and dtype {dtype.name}")
        return StoredTensor(key, dtype, shape, entry.shard_id, entry.offset, entry.size, entry.crc32c)

    def _collect_variables(self) -> list[Variable]:
        variables = []
        for key, entry in self._entries.items():
            if key.startswith(b"\x00"):
                continue  # a slice of a partitioned variable, listed under its full key
            name = key.decode("utf-8", "surrogateescape")
            if not entry.slices:
                part = self._stored(key, entry)
                variables.append(Variable(name, part.dtype, part.shape, (part,)))
                continue
            dtype = dtype_from_code(entry.dtype)
            shape = shape_of(entry.shape, name)
            slices, parts = [], []
            for slice_proto in entry.slices:
                extents = extents_of(slice_proto)
                if len(extents) != len(shape):
                    raise CorruptCheckpoint(f"{self.prefix}.index: slice of {name!r} has the wrong rank")
                slice_key = encode_slice_key(key, extents)
                slice_entry = self._entries.get(slice_key)
                if slice_entry is None:
                    raise CorruptCheckpoint(f"{self.prefix}.index: slice {extents} of {name!r} is missing")
                slices.append(extents)
                parts.append(self._stored(slice_key, slice_entry))
            variables.append(Variable(name, dtype, shape, tuple(parts), tuple(slices)))
        return variables

    def variable(self, name: str) -> Variable | None:
        return self._by_name.get(name)

    def data_files(self) -> list[str]:
        return [data_file_path(self.prefix, i, self.header.num_shards) for i in range(self.header.num_shards)]

    def raw_entries(self) -> dict[bytes, pb.BundleEntryProto]:
        """Every index entry by key, slice entries included (for writers and verify)."""
        return dict(self._entries)

    # -- bytes ------------------------------------------------------------
    def _file(self, shard_id: int):
        handle = self._files.get(shard_id)
        if handle is None:
            path = data_file_path(self.prefix, shard_id, self.header.num_shards)
            try:
                handle = open(path, "rb")
            except FileNotFoundError:
                raise NotFound(f"missing data shard {path}") from None
            except OSError as exc:
                raise NotFound(f"cannot read data shard {path}: {exc.strerror}") from None
            self._files[shard_id] = handle
        return handle

    def _shard_name(self, part: StoredTensor) -> str:
        return os.path.basename(data_file_path(self.prefix, part.shard_id, self.header.num_shards))

    def iter_raw(self, part: StoredTensor, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """The stored bytes of `part` in chunks; raises on a short file. No CRC check."""
        chunk_bytes = chunk_bytes or CHUNK_BYTES
        handle = self._file(part.shard_id)
        handle.seek(part.offset)
        remaining = part.size
        while remaining:
            chunk = handle.read(min(chunk_bytes, remaining))
            if not chunk:
                raise CorruptCheckpoint(
                    f"{self._shard_name(part)} is truncated: tensor {part.key.decode('utf-8', 'replace')!r} "
                    f"ends past the end of the file"
                )
            remaining -= len(chunk)
            yield chunk

    def _checksum_error(self, part: StoredTensor) -> CorruptCheckpoint:
        name = part.key.decode("utf-8", "replace")
        return CorruptCheckpoint(f"checksum mismatch for tensor {name!r} in {self._shard_name(part)}")

    def iter_fixed_chunks(self, part: StoredTensor, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        """Decoded 1-D chunks of a fixed-width tensor, CRC checked at the end (bounded memory)."""
        chunk_bytes = chunk_bytes or CHUNK_BYTES
        dtype = part.dtype
        storage = self._storage_dtype(dtype)
        step = max(dtype.itemsize, chunk_bytes - chunk_bytes % dtype.itemsize)
        running = 0
        for chunk in self.iter_raw(part, step):
            running = crc.extend(running, chunk)
            yield dtype.decode(np.frombuffer(chunk, dtype=storage))
        if crc.mask(running) != part.crc32c:
            raise self._checksum_error(part)

    def check(self, part: StoredTensor) -> None:
        """Read `part` and verify its checksum (and string framing) without keeping it."""
        if part.dtype.fixed_width:
            running = 0
            for chunk in self.iter_raw(part):
                running = crc.extend(running, chunk)
            if crc.mask(running) != part.crc32c:
                raise self._checksum_error(part)
        else:
            self.read_part(part)

    def read_part(self, part: StoredTensor) -> np.ndarray:
        """One stored tensor as a numpy array of its shape, CRC checked."""
        if part.dtype.fixed_width:
            chunks = list(self.iter_fixed_chunks(part))
            flat = np.concatenate(chunks) if len(chunks) > 1 else (
                chunks[0] if chunks else part.dtype.decode(np.empty(0, self._storage_dtype(part.dtype))))
            return flat.reshape(part.shape)
        data = b"".join(self.iter_raw(part))
        if part.dtype.code == STRING:
            items = self._decode_strings(part, data)
        elif part.dtype.code == VARIANT:
            items = self._decode_variants(part, data)
        else:  # pragma: no cover - every variable-width dtype is handled above
            raise Unsupported(f"cannot decode dtype {part.dtype.name}")
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape(part.shape)

    def _storage_dtype(self, dtype: DType) -> np.dtype:
        storage = np.dtype(dtype.storage)
        return storage.newbyteorder(">") if self.header.big_endian and storage.itemsize > 1 else storage

    def _decode_strings(self, part: StoredTensor, data: bytes) -> list[bytes]:
        count = part.num_elements
        what = f"string tensor {part.key.decode('utf-8', 'replace')!r}"
        lengths, pos = [], 0
        for _ in range(count):
            length, pos = decode_varint(data, pos, what)
            lengths.append(length)
        if pos + 4 > len(data):
            raise CorruptCheckpoint(f"{what} is truncated")
        length_words = b"".join(
            encode_fixed32(n) if n <= _U32_MAX else encode_fixed64(n) for n in lengths
        )
        stored_length_crc = decode_fixed32(data, pos)
        if crc.mask(crc.crc32c(length_words)) != stored_length_crc:
            raise self._checksum_error(part)
        body_start = pos + 4
        if body_start + sum(lengths) != len(data):
            raise CorruptCheckpoint(f"{what} has {len(data) - body_start} bytes of strings, "
                                    f"its lengths say {sum(lengths)}")
        running = crc.extend(crc.crc32c(length_words), data[pos:])
        if crc.mask(running) != part.crc32c:
            raise self._checksum_error(part)
        items, pos = [], body_start
        for length in lengths:
            items.append(data[pos : pos + length])
            pos += length
        return items

    def _decode_variants(self, part: StoredTensor, data: bytes) -> list[bytes]:
        what = f"variant tensor {part.key.decode('utf-8', 'replace')!r}"
        items, pos, running = [], 0, 0
        for _ in range(part.num_elements):
            length, pos = decode_varint(data, pos, what)
            if pos + length + 4 > len(data):
                raise CorruptCheckpoint(f"{what} is truncated")
            element = data[pos : pos + length]
            running = crc.extend(running, encode_fixed64(length))
            running = crc.extend(running, element)
            element_crc = data[pos + length : pos + length + 4]
            if decode_fixed32(element_crc, 0) != crc.mask(running):
                raise self._checksum_error(part)
            running = crc.extend(running, element_crc)
            items.append(element)
            pos += length + 4
        if crc.mask(running) != part.crc32c:
            raise self._checksum_error(part)
        return items

    def read(self, var: Variable) -> np.ndarray:
        """The whole variable, partitioned ones assembled from their slices."""
        if not var.partitioned:
            return self.read_part(var.parts[0])
        pieces = [(extents, self.read_part(part)) for extents, part in zip(var.slices, var.parts)]
        out = np.empty(var.shape, dtype=pieces[0][1].dtype if pieces else object)
        for extents, piece in pieces:
            out[slice_bounds(extents, var.shape)] = piece
        return out

    def iter_value_chunks(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        """The variable's values as 1-D chunks, slice by slice (order is not the logical order)."""
        for part in var.parts:
            if part.dtype.fixed_width:
                yield from self.iter_fixed_chunks(part, chunk_bytes)
            else:
                yield self.read_part(part).reshape(-1)

    def check_variable(self, var: Variable) -> int:
        """Read every stored part of `var`, checking CRCs; the number of bytes checked."""
        for part in var.parts:
            self.check(part)
        return sum(part.size for part in var.parts)

    def object_graph_bytes(self) -> bytes | None:
        var = self.variable(OBJECT_GRAPH_KEY)
        if var is None or var.dtype.code != STRING or var.shape != ():
            return None
        return self.read(var).item()

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_bundle(prefix: str) -> Bundle:
    index_path = prefix + ".index"
    items = read_table_file(index_path, "checkpoint index")
    source = os.path.basename(index_path)
    if not items or items[0][0] != b"":
        raise CorruptCheckpoint(f"{source}: no bundle header (is this a checkpoint index?)")
    header = parse_header(items[0][1], source)
    entries = {key: parse_message(pb.BundleEntryProto, value, f"{source}: entry {key!r}") for key, value in items[1:]}
    return Bundle(prefix, header, entries)
