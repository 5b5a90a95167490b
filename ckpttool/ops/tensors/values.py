"""What `inspect --values` shows people of a large tensor: the elements numpy
shows when it summarises an array (the first and last EDGE_ITEMS along each
axis), read in one streaming pass over the stored chunks, so memory stays
bounded whatever the tensor's size.

The corners are laid out so that numpy's own printing elides exactly what it
would elide in the whole array: along a long axis they hold EDGE_ITEMS
leading elements, one placeholder (never shown) and EDGE_ITEMS trailing ones,
and `format_values` prints them with numpy's summarisation. The text is the
same as numpy's for the whole tensor.
"""
from __future__ import annotations

import sys
from math import prod

import numpy as np

from ckpttool.errors import Unsupported
from ckpttool.formats.dtypes import array_shape_problem
from ckpttool.formats.variables import Variable, slice_shape

SUMMARY_THRESHOLD = 1000  # numpy's print threshold: larger tensors are summarised
EDGE_ITEMS = 3  # numpy's edgeitems
_ELEMENT_CHARS = 200  # a longer string element is cut in a summary


def check_value_shape(var: Variable) -> None:
    """Unsupported for a variable whose value no numpy array can hold (rank 301, a dimension of
    10**30 beside a 0): the file may list it, but there is no value to show."""
    problem = array_shape_problem(var.shape, var.dtype.itemsize)
    if problem:
        raise Unsupported(f"{var.name!r} has a shape with {problem}: numpy cannot hold its value",
                          hint="list it without --values")


def needs_summary(var: Variable) -> bool:
    return var.num_elements > SUMMARY_THRESHOLD


def _axis_picks(size: int) -> np.ndarray:
    """Indexes kept along one axis: all of a short one; else the edges around a placeholder (0)."""
    if size <= 2 * EDGE_ITEMS:
        return np.arange(size)
    return np.r_[0:EDGE_ITEMS, 0, size - EDGE_ITEMS:size]


def _stored_boxes(var: Variable) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(start, shape) of each stored part, in the order iter_value_chunks streams them."""
    if not var.partitioned:
        return [((0,) * len(var.shape), var.shape)]
    return [(tuple(start for start, _length in extents), slice_shape(extents, var.shape)) for extents in var.slices]


def read_corners(reader, var: Variable) -> np.ndarray:
    """The summarised view of `var` (see the module docstring), read chunk by chunk."""
    picks = [_axis_picks(size) for size in var.shape]
    out_shape = tuple(len(p) for p in picks)
    positions, destinations, base = [], [], 0
    for starts, shape in _stored_boxes(var):
        inside = [np.nonzero((p >= s) & (p < s + n))[0] for p, s, n in zip(picks, starts, shape)]
        if all(len(i) for i in inside):
            local = [picks[axis][i] - starts[axis] for axis, i in enumerate(inside)]
            positions.append(np.ravel_multi_index(np.ix_(*local), shape).ravel() + base)
            destinations.append(np.ravel_multi_index(np.ix_(*inside), out_shape).ravel())
        base += prod(shape)
    positions, destinations = np.concatenate(positions), np.concatenate(destinations)
    order = np.argsort(positions, kind="stable")
    positions, destinations = positions[order], destinations[order]
    out, offset, done = None, 0, 0
    # Every chunk is read (not only those holding corners): the stored checksums are checked on the way.
    for chunk in reader.iter_value_chunks(var):
        if out is None:
            out = np.empty(prod(out_shape), dtype=chunk.dtype)
        end = offset + chunk.size
        upto = int(np.searchsorted(positions, end))
        out[destinations[done:upto]] = chunk[positions[done:upto] - offset]
        done, offset = upto, end
    return out.reshape(out_shape)


def _short_element(value) -> str:
    text = repr(value)
    return text if len(text) <= _ELEMENT_CHARS else f"{text[:_ELEMENT_CHARS]}... ({len(text) - _ELEMENT_CHARS} more)"


def format_values(value: np.ndarray, summarized: bool, full: bool = False) -> str:
    """numpy's text for a value: `summarized` for read_corners' view; `full` for every
    element (and every string element whole)."""
    options = {"separator": ", "}
    if summarized:
        options.update(threshold=0, edgeitems=EDGE_ITEMS)
    else:
        options.update(threshold=sys.maxsize if full else SUMMARY_THRESHOLD)
    if value.dtype == object and not full:
        options["formatter"] = {"object": _short_element}
    return np.array2string(value, **options)
