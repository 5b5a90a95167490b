"""What every checkpoint reader returns: variables, their stored parts, and
the slice arithmetic used to reassemble partitioned variables."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ckpttool.formats.dtypes import DType
from ckpttool.formats.ordered_code import Extent

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
INTERNAL_NAMES = frozenset({OBJECT_GRAPH_KEY})


@dataclass(frozen=True)
class StoredTensor:
    """One tensor's bytes in a data shard: a whole variable or one slice of it."""

    key: bytes
    dtype: DType
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored

    @property
    def num_elements(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class Variable:
    """A logical variable: plain (one part) or partitioned (one part per slice)."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    parts: tuple[StoredTensor, ...]
    slices: tuple[tuple[Extent, ...], ...] = ()  # non-empty only for partitioned variables

    @property
    def partitioned(self) -> bool:
        return bool(self.slices)

    @property
    def internal(self) -> bool:
        return self.name in INTERNAL_NAMES

    @property
    def num_elements(self) -> int:
        return prod(self.shape)

    @property
    def size_bytes(self) -> int:
        if self.dtype.fixed_width:
            return self.num_elements * self.dtype.itemsize
        return sum(part.size for part in self.parts)


def slice_bounds(extents: tuple[Extent, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """numpy index of a slice; length -1 means the whole dimension."""
    return tuple(
        slice(0, size) if length == -1 else slice(start, start + length)
        for (start, length), size in zip(extents, shape)
    )


def slice_shape(extents: tuple[Extent, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(size if length == -1 else length for (_start, length), size in zip(extents, shape))


def format_slice(extents: tuple[Extent, ...]) -> str:
    """TensorFlow's slice spec string: `start,length:...` with `-` for a full dimension."""
    return ":".join("-" if length == -1 else f"{start},{length}" for start, length in extents)
