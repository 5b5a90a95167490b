"""A variable's stored bytes, for conversion: the elements in their storage
dtype (bfloat16 as its 16 bits, int4 as one byte per element, float8 as its
byte ...), little-endian, C order, partitioned variables reassembled.

`read()` on the readers decodes some dtypes for people (bfloat16 -> float32);
conversion must move the bits instead, so it reads through here. Bundles are
CRC checked on the way and byte-swapped when written big-endian.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator

from ckpttool.errors import CorruptCheckpoint, Unsupported
from ckpttool.formats.dtypes import check_bool_bytes
from ckpttool.formats.tf import crc32c as crc
from ckpttool.formats.tf.bundle import Bundle
from ckpttool.formats.variables import StoredTensor, Variable, slice_bounds, slice_shape

if TYPE_CHECKING:  # numpy only to swap bytes or reassemble slices: a plain copy needs none
    import numpy as np

# A copy reads, checks and writes pieces small enough to stay in the CPU's
# cache from the read to the write (1 GiB: 256 KiB pieces took 0.6 s here,
# 1 MiB 0.8 s, 8 MiB 1.2 s; writing on a second thread was slower still on
# two shared cores). A remote input still fetches in large ranged GETs.
CHUNK_BYTES = 256 << 10


def _bundle_part(bundle: Bundle, part: StoredTensor, chunk_bytes: int) -> Iterator[bytes]:
    itemsize = part.dtype.itemsize
    step = max(itemsize, chunk_bytes // itemsize * itemsize)
    swap = bundle.header.big_endian and itemsize > 1
    if swap:
        import numpy as np

        stored, native = np.dtype(part.dtype.storage).newbyteorder(">"), np.dtype(part.dtype.storage)
    running = 0
    for chunk in bundle.iter_raw(part, step):
        running = crc.extend(running, chunk)
        yield np.frombuffer(chunk, stored).astype(native).tobytes() if swap else chunk
    if crc.mask(running) != part.crc32c:
        raise _checksum_mismatch(bundle, part)


def _rows_in_order(var: Variable) -> list[int] | None:
    """Part indexes in output order when every slice spans whole rows (split on the
    first axis only) and together they tile it; None otherwise."""
    if not var.shape:
        return None
    for extents in var.slices:
        if any(length != -1 and (start, length) != (0, size)
               for (start, length), size in zip(extents[1:], var.shape[1:])):
            return None
    spans = sorted((slice_bounds(extents, var.shape)[0].start, slice_bounds(extents, var.shape)[0].stop, i)
                   for i, extents in enumerate(var.slices))
    position = 0
    for start, stop, _i in spans:
        if start != position:
            raise CorruptCheckpoint(f"the slices of {var.name!r} do not cover its shape {list(var.shape)} exactly")
        position = stop
    if position != var.shape[0]:
        raise CorruptCheckpoint(f"the slices of {var.name!r} do not cover its shape {list(var.shape)} exactly")
    return [i for _start, _stop, i in spans]


def _assembled(bundle: Bundle, var: Variable) -> np.ndarray:
    """A partitioned variable split on other axes, assembled in memory in its storage dtype."""
    import numpy as np

    storage = np.dtype(var.dtype.storage)
    out = np.empty(var.shape, dtype=storage)
    covered = np.zeros(var.shape, dtype=np.uint8)
    for extents, part in zip(var.slices, var.parts):
        piece = np.frombuffer(b"".join(_bundle_part(bundle, part, CHUNK_BYTES)), dtype=storage)
        bounds = slice_bounds(extents, var.shape)
        out[bounds] = piece.reshape(slice_shape(extents, var.shape))
        covered[bounds] += 1
    if not (covered == 1).all():
        raise CorruptCheckpoint(f"the slices of {var.name!r} do not cover its shape {list(var.shape)} exactly")
    return out


def _bundle_bytes(bundle: Bundle, var: Variable, chunk_bytes: int) -> Iterator[bytes]:
    if not var.partitioned:
        yield from _bundle_part(bundle, var.parts[0], chunk_bytes)
        return
    order = _rows_in_order(var)
    if order is not None:
        for i in order:  # each slice is a run of whole rows: its bytes are contiguous in the output
            yield from _bundle_part(bundle, var.parts[i], chunk_bytes)
        return
    data = memoryview(_assembled(bundle, var).reshape(-1).view("u1"))
    for start in range(0, len(data), chunk_bytes):
        yield bytes(data[start:start + chunk_bytes])


def check_stored_readable(reader, var: Variable) -> None:
    """Raise Unsupported now for a variable whose stored bytes cannot be had exactly."""
    if not var.dtype.fixed_width:
        raise Unsupported(f"{var.name!r} is a {var.dtype.name} tensor, which has no fixed-width bytes")
    if isinstance(reader, Bundle) or hasattr(reader, "iter_stored_bytes"):
        return
    # V1 files: the reader's values are the stored ones for every dtype V1 can hold.
    hint = "restore it with tf.compat.v1.train.Saver and re-save in the V2 format"
    if var.partitioned:
        raise Unsupported(f"{var.name!r} is sliced (partitioned) in a V1 checkpoint, which ckpttool does not "
                          "reassemble", hint=hint)
    if var.dtype.decoder is not None:
        raise Unsupported(f"{var.name!r}: {var.dtype.name} values cannot be taken bit-exactly from a V1 "
                          "checkpoint", hint=hint)


def iter_stored_bytes(reader, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes]:
    """The fixed-width variable's elements as stored: little-endian C-order bytes, in chunks. A bool
    byte other than 0 and 1 is CorruptCheckpoint, from every format: the libraries hand such bytes on
    (numpy, safetensors, h5py, TensorFlow's reader) and TensorFlow then computes with them
    (logical_not of 2 is 3, still true), so nothing is written from them."""
    check_stored_readable(reader, var)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    if isinstance(reader, Bundle):
        chunks = _bundle_bytes(reader, var, chunk_bytes)
    elif hasattr(reader, "iter_stored_bytes"):
        chunks = reader.iter_stored_bytes(var, chunk_bytes)
    else:
        import numpy as np

        chunks = iter([np.ascontiguousarray(reader.read(var), dtype=np.dtype(var.dtype.storage)).tobytes()])
    return _bools_checked(var, chunks) if var.dtype.name == "bool" else chunks


def iter_stored_views(reader, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes | memoryview]:
    """As iter_stored_bytes, for a caller that writes or copies each piece before it asks for the
    next: a V2 bundle's tensor whose stored bytes are its written ones (little-endian; one part, or
    slices of whole rows; not bool, whose bytes are checked) is read into one reused buffer and
    handed out as memoryviews of it: no new object and no fresh pages per piece. CRC checked as
    read, as iter_stored_bytes."""
    plain = (isinstance(reader, Bundle) and var.dtype.fixed_width and var.dtype.name != "bool"
             and not reader.header.big_endian)
    if not plain:
        return iter_stored_bytes(reader, var, chunk_bytes)
    itemsize = var.dtype.itemsize
    return _bundle_views(reader, var, max(itemsize, (chunk_bytes or CHUNK_BYTES) // itemsize * itemsize))


def _bundle_views(bundle: Bundle, var: Variable, chunk_bytes: int) -> Iterator[bytes | memoryview]:
    order = _rows_in_order(var) if var.partitioned else [0]
    if order is None:  # slices on other axes: assembled in memory
        yield from _bundle_bytes(bundle, var, chunk_bytes)
        return
    import ctypes  # a buffer google-crc32c checksums in place (crc32c.extend_view), without numpy

    buffer = memoryview((ctypes.c_char * chunk_bytes)()).cast("B")
    for i in order:
        part = var.parts[i]
        running = 0
        for piece in bundle.iter_raw_into(part, buffer):
            running = crc.extend_view(running, piece)
            yield piece
        if crc.mask(running) != part.crc32c:
            raise _checksum_mismatch(bundle, part)


def _checksum_mismatch(bundle: Bundle, part: StoredTensor) -> CorruptCheckpoint:
    name = part.key.decode("utf-8", "replace")
    return CorruptCheckpoint(f"checksum mismatch for tensor {name!r} in "
                             f"{os.path.basename(bundle.data_files()[part.shard_id])}")


def _bools_checked(var: Variable, chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        check_bool_bytes(var.name, var.dtype, chunk)
        yield chunk


def read_stored(reader, var: Variable) -> np.ndarray:
    """The whole variable in its storage dtype (e.g. uint16 bits for bfloat16), shaped."""
    import numpy as np

    data = b"".join(iter_stored_bytes(reader, var))
    return np.frombuffer(data, dtype=np.dtype(var.dtype.storage)).reshape(var.shape)
