"""What every checkpoint reader returns: variables, their stored parts, and
the slice arithmetic used to reassemble partitioned variables."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Iterator

from ckpttool.errors import BadSlices, Truncated
from ckpttool.formats.dtypes import DType
from ckpttool.formats.tf.ordered_code import Extent
from ckpttool.text import quote

if TYPE_CHECKING:  # numpy is imported where values are decoded
    import numpy as np

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


class FileSetReader:
    """What a reader over a list of open files (`_files`, each with close()) whose
    `iter_stored_bytes` gives a tensor's little-endian C-order bytes shares: values decoded from
    those bytes, no object graph, closing (safetensors and PyTorch files)."""

    _files: list
    variables: list[Variable]

    def __init__(self, path: str):
        self.prefix = path
        self._files = []
        try:
            self._open(path)  # fills _files and variables
        except BaseException:
            self.close()
            raise
        self._by_name = {v.name: v for v in self.variables}

    def _open(self, path: str) -> None:
        raise NotImplementedError

    def variable(self, name: str) -> Variable | None:
        return self._by_name.get(name)

    def data_files(self) -> list[str]:
        return [file.path for file in self._files]

    def iter_stored_bytes(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes]:
        raise NotImplementedError

    @staticmethod
    def byte_range(handle, offset: int, size: int, itemsize: int, chunk_bytes: int, where: str) -> Iterator[bytes]:
        """Bytes [offset, offset+size) of an open file (`read_at`/`iter_range`), in chunks of whole
        elements whatever lengths the reads return; Truncated (`where` says what was read) when the
        file ends first. Positional reads: threads reading one file get their own bytes."""
        step = max(itemsize, chunk_bytes // itemsize * itemsize)
        remaining, pending = size, b""
        for data in handle.iter_range(offset, size, step):
            remaining -= len(data)
            if pending or len(data) % itemsize:
                data, pending = pending + data, b""
                cut = len(data) - len(data) % itemsize
                data, pending = data[:cut], data[cut:]
            if data:
                yield data
        if remaining or pending:
            raise Truncated(f"{where}: the file was cut short")

    def iter_value_chunks(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        import numpy as np

        storage = np.dtype(var.dtype.storage)
        for chunk in self.iter_stored_bytes(var, chunk_bytes):
            yield var.dtype.decode(np.frombuffer(chunk, dtype=storage))

    def read(self, var: Variable) -> np.ndarray:
        import numpy as np

        flat = np.frombuffer(b"".join(self.iter_stored_bytes(var)), dtype=np.dtype(var.dtype.storage))
        return var.dtype.decode(flat).reshape(var.shape)

    def object_graph_bytes(self) -> bytes | None:
        return None

    def close(self) -> None:
        for file in self._files:
            file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


def check_tiling(name: str, shape: tuple[int, ...], slices: tuple[tuple[Extent, ...], ...]) -> None:
    """Raise BadSlices unless the slices tile `shape` exactly: each inside it,
    none overlapping another, together covering every element (as TensorFlow
    requires before it assembles a partitioned variable)."""
    boxes = []
    for extents in slices:
        if len(extents) != len(shape):
            raise BadSlices(f"slice {format_slice(extents)} of {quote(name)} has rank {len(extents)}, "
                            f"its variable {len(shape)}")
        starts, ends = [], []
        for (start, length), size in zip(extents, shape):
            end = size if length == -1 else start + length
            if start < 0 or end > size or end < start or (length == -1 and start != 0):
                raise BadSlices(f"slice {format_slice(extents)} of {quote(name)} falls outside its shape "
                                f"{list(shape)}")
            starts.append(start)
            ends.append(end)
        if all(end > start for start, end in zip(starts, ends)):
            boxes.append((tuple(starts), tuple(ends), extents))
    covered = sum(prod(end - start for start, end in zip(starts, ends)) for starts, ends, _ in boxes)
    total = prod(shape)
    if covered < total:
        raise BadSlices(f"the slices of {quote(name)} do not cover its shape {list(shape)} "
                        f"({covered} of {total} elements)")
    _check_disjoint(name, boxes)


def _check_disjoint(name: str, boxes: list) -> None:
    """Sweep along the axis where the boxes' starts differ most, comparing each
    box only with those still open there: about n log n for the one-axis
    partitions TensorFlow's partitioners write."""
    if len(boxes) < 2:
        return
    rank = len(boxes[0][0])
    axis = max(range(rank), key=lambda d: len({box[0][d] for box in boxes}))
    boxes = sorted(boxes, key=lambda box: box[0][axis])
    active: list = []
    for box in boxes:
        starts, ends, extents = box
        active = [other for other in active if other[1][axis] > starts[axis]]
        for other in active:
            if all(starts[d] < other[1][d] and other[0][d] < ends[d] for d in range(rank)):
                raise BadSlices(f"slices {format_slice(other[2])} and {format_slice(extents)} of {quote(name)} "
                                "overlap")
        active.append(box)
