"""Reader of TensorFlow's V2 checkpoint format (the tensor bundle).

A checkpoint prefix P has `P.index` (a table: header + one BundleEntryProto
per tensor) and data shards `P.data-SSSSS-of-NNNNN` holding the tensors'
bytes. Every read checks the stored CRC; fixed-width tensors can be streamed
in bounded chunks (FORMAT.md §3, §4).

Nothing the index claims is trusted before it is checked against the files:
a tensor's bytes must lie inside its shard and overlap no other tensor's (so
what is read never exceeds what is on disk), a string tensor needs at least
a byte per element, a partitioned variable's slices must tile its shape
before it is assembled, and the header's shard count is never used to size
anything (a 100-byte index may claim 2^31 shards).
"""
from __future__ import annotations

import os
from math import prod
from typing import TYPE_CHECKING, Callable, Iterator

from ckpttool.errors import BadInput, ChecksumMismatch, CorruptCheckpoint, Truncated, Unsupported
from ckpttool.formats.tf import crc32c as crc
from ckpttool.formats.dtypes import STRING, VARIANT, DType, check_bool_bytes, dtype_from_code
from ckpttool.storage.fs import open_random_access
from ckpttool.formats.tf.messages import (BundleHeader, EntryFields, checked_shape, parse_entry, parse_header,
                                       parse_message)
from ckpttool.formats.tf.ordered_code import decode_slice_key, encode_slice_key
from ckpttool.formats.tf.shards import data_file_path, furthest_ends  # noqa: F401 - writers import data_file_path
from ckpttool.formats.tf.table import read_table_file
from ckpttool.text import quote
from ckpttool.formats.variables import (
    OBJECT_GRAPH_KEY,
    StoredTensor,
    Variable,
    check_tiling,
    format_slice,
    slice_bounds,
    slice_shape,
)
from ckpttool.formats.tf.wire import decode_fixed32, decode_varint, encode_fixed32, encode_fixed64

if TYPE_CHECKING:  # numpy is imported where tensors are decoded, not to list or verify them
    import numpy as np

    from ckpttool.formats.tf.protos import checkpoint_pb2 as pb

# Bytes per read when a caller names no size: None lets the input choose (a
# cache-sized piece locally, one ranged GET remotely).
CHUNK_BYTES: int | None = None
_U32_MAX = 0xFFFFFFFF
_VARIANT_MIN_ELEMENT_BYTES = 5  # a length varint and a 4-byte checksum


def _tensor_name(key: bytes) -> str:
    """A stored tensor for messages; a slice key as its variable and slice."""
    if key.startswith(b"\0"):
        try:
            name, extents = decode_slice_key(key)
            return f"{quote(name)} (slice {format_slice(extents)})"
        except CorruptCheckpoint:
            pass
    return quote(key)


class _Shard:
    """An open data shard: its file, and the tensors whose stored ranges it
    cannot hold (past its end, or overlapping another tensor's)."""

    def __init__(self, handle, bad: dict[bytes, Exception]):
        self.handle = handle
        self.bad = bad


class Bundle:
    """An open V2 checkpoint. Construct with `open_bundle`; use as a context manager."""

    format = "v2"
    # Called with a count of bytes as `check` and verify's pieces are read (a progress bar
    # moves while one large tensor is read); None: nobody asked.
    on_bytes: Callable[[int], None] | None = None

    def __init__(self, prefix: str, header: BundleHeader, entries: dict[bytes, EntryFields],
                 encoded: dict[bytes, bytes]):
        self.prefix = prefix
        self.header = header
        self._entries = entries
        self._encoded = encoded  # each entry's bytes as stored, for raw_entries()
        self._shards: dict[int, _Shard] = {}
        self._parts_by_shard: dict[int, list[StoredTensor]] | None = None
        self._tiled: set[str] = set()
        self.variables = self._collect_variables()
        self._by_name = {var.name: var for var in self.variables}

    # -- structure --------------------------------------------------------
    def _stored(self, key: bytes, entry: EntryFields) -> StoredTensor:
        def where() -> str:
            return f"{self.prefix}.index: tensor {_tensor_name(key)}"

        dtype_code, dims, unknown_rank, shard_id, offset, size, checksum, _slices = entry
        dtype = dtype_from_code(dtype_code)
        shape = checked_shape(dims, unknown_rank, where)
        if not 0 <= shard_id < self.header.num_shards:
            raise CorruptCheckpoint(f"{where()} names shard {shard_id} of {self.header.num_shards}")
        if offset < 0 or size < 0:
            raise CorruptCheckpoint(f"{where()} has a negative offset or size")
        count = prod(shape)
        if dtype.fixed_width:
            if size != count * dtype.itemsize:
                raise CorruptCheckpoint(f"{where()}: size {size} does not match its shape {list(shape)} "
                                        f"and dtype {dtype.name}")
        # Every string element takes at least its length byte, every variant
        # element its length and checksum (TensorFlow checks the first too).
        elif size < count * (_VARIANT_MIN_ELEMENT_BYTES if dtype.code == VARIANT else 1):
            raise CorruptCheckpoint(f"{where()}: {size} bytes cannot hold the {count} elements of "
                                    f"its shape {list(shape)}")
        return StoredTensor(key, dtype, shape, shard_id, offset, size, checksum)

    def _collect_variables(self) -> list[Variable]:
        variables = []
        for key, entry in self._entries.items():
            if key[:1] == b"\x00":
                continue  # a slice of a partitioned variable, listed under its full key
            name = key.decode("utf-8", "surrogateescape")
            if not entry.slices:
                part = self._stored(key, entry)
                variables.append(Variable(name, part.dtype, part.shape, (part,)))
                continue
            dtype = dtype_from_code(entry.dtype)
            shape = checked_shape(entry.dims, entry.unknown_rank,
                                  lambda: f"{self.prefix}.index: tensor {quote(name)}")
            slices, parts = [], []
            for extents in entry.slices:
                if len(extents) != len(shape):
                    raise CorruptCheckpoint(f"{self.prefix}.index: slice of {quote(name)} has the wrong rank")
                slice_key = encode_slice_key(key, extents)
                slice_entry = self._entries.get(slice_key)
                if slice_entry is None:
                    raise CorruptCheckpoint(f"{self.prefix}.index: slice {format_slice(extents)} of "
                                            f"{quote(name)} is missing")
                slices.append(extents)
                parts.append(self._stored(slice_key, slice_entry))
            variables.append(Variable(name, dtype, shape, tuple(parts), tuple(slices)))
        return variables

    def variable(self, name: str) -> Variable | None:
        return self._by_name.get(name)

    def shard_path(self, shard_id: int) -> str:
        return data_file_path(self.prefix, shard_id, self.header.num_shards)

    def data_files(self) -> list[str]:
        """Every data shard's path. A header claiming more shards than the index
        has tensors is refused here, before a list that long is made."""
        stored = sum(len(var.parts) for var in self.variables)
        if self.header.num_shards > max(1, stored):
            raise CorruptCheckpoint(f"{self.prefix}.index: its header claims {self.header.num_shards} data "
                                    f"shards for {stored} stored tensor(s)")
        return [self.shard_path(i) for i in range(self.header.num_shards)]

    def shard_ends(self) -> dict[int, int]:
        """Where the last tensor stored in each referenced shard ends."""
        return furthest_ends(part for var in self.variables for part in var.parts)

    def raw_entries(self) -> dict[bytes, pb.BundleEntryProto]:
        """Every index entry by key as a protobuf message, slice entries included (for writers)."""
        from ckpttool.formats.tf.protos import checkpoint_pb2 as pb

        return {key: parse_message(pb.BundleEntryProto, value, "index entry") for key, value in self._encoded.items()}

    # -- bytes ------------------------------------------------------------
    def _shard(self, shard_id: int) -> _Shard:
        shard = self._shards.get(shard_id)
        if shard is None:
            # Never a link leaving the checkpoint's directory: a partial read checks no CRC, and would
            # return that file's bytes as tensor values.
            handle = open_random_access(self.shard_path(shard_id), "data shard", inside=True)
            shard = _Shard(handle, self._misplaced(shard_id, handle.size))
            self._shards[shard_id] = shard
        return shard

    def _misplaced(self, shard_id: int, size: int) -> dict[bytes, Exception]:
        """Tensors of this shard whose stored range the file cannot hold: past its
        end (truncated), or overlapping another tensor's range (no writer does that)."""
        if self._parts_by_shard is None:
            self._parts_by_shard = {}
            for var in self.variables:
                for part in var.parts:
                    if part.size:
                        self._parts_by_shard.setdefault(part.shard_id, []).append(part)
        name = os.path.basename(self.shard_path(shard_id))
        parts = sorted(self._parts_by_shard.get(shard_id, ()), key=lambda p: p.offset)
        bad: dict[bytes, Exception] = {}
        reach: StoredTensor | None = None  # the part reaching furthest so far
        for part in parts:
            if part.offset + part.size > size:
                bad[part.key] = Truncated(f"{name} is truncated: tensor {_tensor_name(part.key)} ends at byte "
                                          f"{part.offset + part.size}, the file has {size}")
                continue
            if reach is not None and part.offset < reach.offset + reach.size:
                for one, other in ((part, reach), (reach, part)):
                    bad.setdefault(one.key, CorruptCheckpoint(
                        f"{name}: tensors {_tensor_name(one.key)} and {_tensor_name(other.key)} claim the same bytes"))
            if reach is None or part.offset + part.size > reach.offset + reach.size:
                reach = part
        return bad

    def _shard_name(self, part: StoredTensor) -> str:
        return os.path.basename(self.shard_path(part.shard_id))

    def iter_raw(self, part: StoredTensor, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """The stored bytes of `part` in chunks, checked against the shard first. No CRC check."""
        shard = self._shard(part.shard_id)
        problem = shard.bad.get(part.key)
        if problem is not None:
            raise problem
        remaining = part.size
        for chunk in shard.handle.iter_range(part.offset, part.size, chunk_bytes or CHUNK_BYTES):
            remaining -= len(chunk)
            yield chunk
        if remaining:  # the file shrank while we read it
            raise self._truncated(part)

    def iter_raw_into(self, part: StoredTensor, buffer: memoryview) -> Iterator[memoryview | bytes]:
        """As iter_raw, read into `buffer` (a writable memoryview the caller reuses): each piece is a
        slice of it, valid only until the next is asked for. A shard in a bucket hands out new bytes."""
        shard = self._shard(part.shard_id)
        problem = shard.bad.get(part.key)
        if problem is not None:
            raise problem
        read_into = getattr(shard.handle, "read_into", None)
        if read_into is None:
            yield from self.iter_raw(part, len(buffer))
            return
        offset, end = part.offset, part.offset + part.size
        while offset < end:
            piece = buffer[:min(len(buffer), end - offset)]
            got = read_into(offset, piece)
            if not got:  # the file shrank while we read it
                raise self._truncated(part)
            offset += got
            yield piece[:got]

    def _truncated(self, part: StoredTensor) -> Truncated:
        return Truncated(f"{self._shard_name(part)} is truncated: tensor {_tensor_name(part.key)} "
                         "ends past the end of the file")

    def _checksum_error(self, part: StoredTensor) -> CorruptCheckpoint:
        return ChecksumMismatch(f"checksum mismatch for tensor {_tensor_name(part.key)} in {self._shard_name(part)}")

    def iter_fixed_chunks(self, part: StoredTensor, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        """Decoded 1-D chunks of a fixed-width tensor, CRC checked at the end (bounded memory)."""
        import numpy as np

        chunk_bytes = chunk_bytes or CHUNK_BYTES
        dtype = part.dtype
        storage = self._storage_dtype(dtype)
        step = max(dtype.itemsize, chunk_bytes - chunk_bytes % dtype.itemsize) if chunk_bytes else None
        running = 0
        for chunk in self.iter_raw(part, step):
            running = crc.extend(running, chunk)
            yield dtype.decode(np.frombuffer(chunk, dtype=storage))
        if crc.mask(running) != part.crc32c:
            raise self._checksum_error(part)

    def check(self, part: StoredTensor) -> None:
        """Read `part` and verify its checksum (and string framing) without keeping it; a bool
        byte other than 0 and 1 is damage too, reported once the checksum holds."""
        if part.dtype.fixed_width:
            running, bad_bool = 0, None
            for chunk in self.iter_raw(part):
                running = crc.extend(running, chunk)
                if bad_bool is None and part.dtype.name == "bool":
                    try:
                        check_bool_bytes("", part.dtype, chunk, shown=_tensor_name(part.key))
                    except CorruptCheckpoint as exc:
                        bad_bool = exc
                if self.on_bytes:
                    self.on_bytes(len(chunk))
            if crc.mask(running) != part.crc32c:
                raise self._checksum_error(part)
            if bad_bool is not None:
                raise bad_bool
        else:
            self._decoded_items(part)

    def open_parts(self, var: Variable) -> list[tuple[StoredTensor, object]]:
        """Each stored part of `var` with its open shard file (`fs.open_random_access`), after
        the checks made before reading: slices tile the shape, ranges lie inside the shard."""
        self._check_slices(var)
        opened = []
        for part in var.parts:
            shard = self._shard(part.shard_id)
            problem = shard.bad.get(part.key)
            if problem is not None:
                raise problem
            opened.append((part, shard.handle))
        return opened

    def check_read(self, part: StoredTensor, crc32c: int, bytes_read: int) -> None:
        """Raise what `check` raises for a fixed-width part that read as `bytes_read` bytes with
        this (unmasked) CRC."""
        if bytes_read != part.size:
            raise self._truncated(part)
        if crc.mask(crc32c) != part.crc32c:
            raise self._checksum_error(part)

    def _decoded_items(self, part: StoredTensor) -> list[bytes]:
        """The elements of a string or variant tensor, CRC checked, as a flat list."""
        data = b"".join(self.iter_raw(part))
        if part.dtype.code == STRING:
            return self._decode_strings(part, data)
        if part.dtype.code == VARIANT:
            return self._decode_variants(part, data)
        raise Unsupported(f"cannot decode dtype {part.dtype.name}")  # pragma: no cover - none other

    def read_part(self, part: StoredTensor) -> np.ndarray:
        """One stored tensor as a numpy array of its shape, CRC checked."""
        import numpy as np

        if part.dtype.fixed_width:
            chunks = list(self.iter_fixed_chunks(part))
            flat = np.concatenate(chunks) if len(chunks) > 1 else (
                chunks[0] if chunks else part.dtype.decode(np.empty(0, self._storage_dtype(part.dtype))))
            return flat.reshape(part.shape)
        items = self._decoded_items(part)
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape(part.shape)

    def _storage_dtype(self, dtype: DType) -> np.dtype:
        import numpy as np

        storage = np.dtype(dtype.storage)
        return storage.newbyteorder(">") if self.header.big_endian and storage.itemsize > 1 else storage

    def _decode_strings(self, part: StoredTensor, data: bytes) -> list[bytes]:
        count = part.num_elements
        what = f"string tensor {_tensor_name(part.key)}"
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
        what = f"variant tensor {_tensor_name(part.key)}"
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

    def _check_slices(self, var: Variable) -> None:
        """A partitioned variable's slices tile its shape, each stored with the
        variable's dtype and the slice's shape, all inside their shards."""
        if not var.partitioned or var.name in self._tiled:
            return
        check_tiling(var.name, var.shape, var.slices)
        for extents, part in zip(var.slices, var.parts):
            if part.dtype != var.dtype or part.shape != slice_shape(extents, var.shape):
                raise CorruptCheckpoint(f"slice {format_slice(extents)} of {quote(var.name)} is stored as "
                                        f"{part.dtype.name} {list(part.shape)}, not as a slice of "
                                        f"{var.dtype.name} {list(var.shape)}")
        for part in var.parts:
            problem = self._shard(part.shard_id).bad.get(part.key)
            if problem is not None:
                raise problem
        self._tiled.add(var.name)

    def read(self, var: Variable) -> np.ndarray:
        """The whole variable, partitioned ones assembled from their slices."""
        import numpy as np

        if not var.partitioned:
            return self.read_part(var.parts[0])
        self._check_slices(var)  # before allocating what the shape claims
        out = None
        for extents, part in zip(var.slices, var.parts):
            piece = self.read_part(part)
            if out is None:
                out = np.empty(var.shape, dtype=piece.dtype)
            out[slice_bounds(extents, var.shape)] = piece
        return out if out is not None else np.empty(var.shape, dtype=object)

    def iter_value_chunks(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        """The variable's values as 1-D chunks, slice by slice (order is not the logical order)."""
        self._check_slices(var)
        for part in var.parts:
            if part.dtype.fixed_width:
                yield from self.iter_fixed_chunks(part, chunk_bytes)
            else:
                yield self.read_part(part).reshape(-1)

    def check_variable(self, var: Variable) -> int:
        """Read every stored part of `var`, checking CRCs; the number of bytes checked."""
        self._check_slices(var)
        for part in var.parts:
            self.check(part)
        return sum(part.size for part in var.parts)

    def check_variables(self, variables: list[Variable]) -> Iterator[tuple[Variable, int | BadInput]]:
        """(variable, bytes checked or the damage found) for each of `variables`, in order: what
        `check_variable` gives, with large local tensors read and checksummed in pieces by
        several threads (the shards of a sharded checkpoint among them)."""
        from ckpttool.formats.tf.parallel_check import check_in_parallel

        return check_in_parallel(self, variables)

    def object_graph_bytes(self) -> bytes | None:
        var = self.variable(OBJECT_GRAPH_KEY)
        if var is None or var.dtype.code != STRING or var.shape != ():
            return None
        if var.partitioned:
            return self.read(var).item()
        return self._decoded_items(var.parts[0])[0]

    def close(self) -> None:
        for shard in self._shards.values():
            shard.handle.close()
        self._shards.clear()

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
    encoded = dict(items[1:])
    entries = {key: parse_entry(value, lambda key=key: f"{source}: entry {_tensor_name(key)}")
               for key, value in encoded.items()}
    return Bundle(prefix, header, entries, encoded)
