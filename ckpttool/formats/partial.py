"""Partial reads: part of a tensor without reading all of its bytes (`Checkpoint.read(name, index=...)`).

A V2 bundle stores a tensor as its elements in C order, so the rows of its first axis are
contiguous runs of bytes: an index whose first item is an integer or a slice (`np.s_[0:10]`,
`np.s_[5]`, `np.s_[::100, 3]`) is read as the byte ranges of the selected rows only (one ranged
read per run of adjacent rows), and the rest of the index applied to those rows. Every other case
reads the whole tensor and indexes it as numpy does: other index forms (Ellipsis or None first,
integer or boolean arrays), scalars, string tensors, partitioned variables, and readers other than
V2 bundles (V1 files, safetensors, .npz, Keras files).

A partial read cannot check the tensor's CRC, which covers the whole tensor (`verify` does);
what it reads is checked to lie inside its shard, as every read is.
"""
from __future__ import annotations

import operator
from math import prod
from typing import TYPE_CHECKING, Any

from ckpttool.errors import Truncated
from ckpttool.formats.tf.bundle import Bundle
from ckpttool.formats.variables import Variable

if TYPE_CHECKING:
    import numpy as np


def _first_axis(index: Any, rows: int) -> tuple[range, bool, tuple] | None:
    """(the selected rows in index order, whether the first axis is dropped (an integer), the rest of
    the index) when the first item selects rows by an integer or a slice; None otherwise."""
    items = index if isinstance(index, tuple) else (index,)
    if not items:
        return None
    first, rest = items[0], items[1:]
    if isinstance(first, slice):
        return range(*first.indices(rows)), False, rest
    if isinstance(first, bool) or type(first).__name__ == "bool_":
        return None  # numpy reads a boolean as a mask, not as row 0 or 1
    try:
        row = operator.index(first)
    except TypeError:
        return None
    if not -rows <= row < rows:
        raise IndexError(f"index {row} is out of bounds for axis 0 with size {rows}")
    row %= rows
    return range(row, row + 1), True, rest


def _runs(selected: range) -> list[tuple[int, int]]:
    """[start, stop) runs of adjacent rows covering `selected`, ascending."""
    if not len(selected):
        return []
    if abs(selected.step) == 1:
        return [(min(selected), max(selected) + 1)]
    return [(row, row + 1) for row in sorted(selected)]


def read_index(reader, var: Variable, index: Any, raw: bool = False) -> "np.ndarray":
    """`var[index]`, reading only the bytes of the selected rows where the module docstring says so.
    `raw`: the stored elements (bfloat16 as its uint16 bits) instead of decoded values."""
    import numpy as np

    rows = _first_axis(index, var.shape[0]) if var.shape else None
    if rows is None or not isinstance(reader, Bundle) or var.partitioned or not var.dtype.fixed_width:
        from ckpttool.formats.raw import read_stored

        whole = read_stored(reader, var) if raw and var.dtype.fixed_width else reader.read(var)
        return whole[index]
    selected, drop_axis, rest = rows
    ((part, handle),) = reader.open_parts(var)  # shard present, the tensor's range inside it
    row_bytes = var.dtype.itemsize * prod(var.shape[1:])
    stored = np.dtype(var.dtype.storage)
    if reader.header.big_endian and stored.itemsize > 1:
        stored = stored.newbyteorder(">")
    pieces = []
    for start, stop in _runs(selected):
        length = (stop - start) * row_bytes
        data = handle.read_at(part.offset + start * row_bytes, length) if length else b""
        if len(data) != length:  # the file shrank since it was opened
            raise Truncated(f"{reader.prefix}: tensor {var.name!r} ends past the end of its data file")
        pieces.append(np.frombuffer(data, dtype=stored))
    flat = np.concatenate(pieces) if pieces else np.empty(0, dtype=stored)
    values = flat.astype(stored.newbyteorder("=")) if raw else var.dtype.decode(flat)
    block = values.reshape((-1,) + var.shape[1:])
    if selected.step < 0 and len(selected) > 1:
        block = block[::-1]  # read ascending, selected descending
    return block[(0,) + rest] if drop_axis else block[(slice(None),) + rest]
