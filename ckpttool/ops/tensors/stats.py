"""Summary statistics of a tensor computed chunk by chunk, so memory stays
bounded whatever the tensor's size (Chan's parallel mean/variance merge).

Each chunk is gone over in few passes: min and max first (a NaN or an
infinity shows in them, so the all-finite common case needs no mask), zeros
counted, then blocks are converted to float64 once (into a scratch buffer
each thread reuses): their mean, then their squared deviations summed by dot
products of rows of _ROW elements (one pass instead of a square and a sum),
merged as Chan does. Float64 throughout, as before: a float32 sum of squares
is off by ~1e-7 relative, and the tests hold mean and std to 1e-9 of numpy's
float64 results. The dot products are BLAS's, on rows of 8192 elements:
OpenBLAS runs a dot product of more than 10,000 elements on several threads,
which on a loaded machine (and beside our own threads) cost ten times what it
saved (measured: 0.08 GiB/s instead of 2.5).

A large tensor of a local TF bundle is read in pieces by worker threads
(formats/tf/parallel_check.fold_in_pieces): each worker reads, checks the CRC
of and summarises its own piece in its core's cache; the pieces' summaries
are merged in order, so the result never depends on the threads' timing.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterable

import numpy as np

_BLOCK = 1 << 17  # elements converted to float64 at a time (1 MiB)
_ROW = 8192  # elements per dot product: OpenBLAS stays on one thread up to 10,000
_scratch = threading.local()  # each thread's float64 buffer, reused chunk after chunk
_rows_dot = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("ij,ij->i", a, b))  # numpy < 2: einsum


@dataclass(frozen=True)
class TensorStats:
    count: int
    finite_count: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    nan_count: int
    inf_count: int
    zero_count: int


class _Accumulator:
    def __init__(self) -> None:
        self.count = self.finite = self.nan = self.inf = self.zero = 0
        self.mean = self.m2 = 0.0
        self.low = math.inf
        self.high = -math.inf

    def add(self, chunk: np.ndarray) -> None:
        if chunk.dtype.kind == "b":
            chunk = chunk.view(np.uint8)
        self.count += chunk.size
        if not chunk.size:
            return
        low, high = chunk.min(), chunk.max()
        if chunk.dtype.kind == "f" and not (math.isfinite(low) and math.isfinite(high)):
            # rare: only now pay for masks and a compacted copy
            finite_mask = np.isfinite(chunk)
            nan = int(np.isnan(chunk).sum())
            self.nan += nan
            self.inf += chunk.size - int(finite_mask.sum()) - nan
            chunk = chunk[finite_mask]
            if not chunk.size:
                return
            low, high = chunk.min(), chunk.max()
        self.zero += int(np.count_nonzero(chunk == 0))  # faster than counting the non-zeros of floats
        self.low = min(self.low, float(low))
        self.high = max(self.high, float(high))
        scratch = getattr(_scratch, "values", None)
        if scratch is None or scratch.size < min(chunk.size, _BLOCK):
            scratch = _scratch.values = np.empty(min(chunk.size, _BLOCK), np.float64)
        for start in range(0, chunk.size, _BLOCK):
            block = chunk[start : start + _BLOCK]
            values = scratch[: block.size]
            np.copyto(values, block)
            mean_b = float(values.sum()) / block.size
            values -= mean_b
            whole = block.size - block.size % _ROW
            m2_b = float(_rows_dot(*[values[:whole].reshape(-1, _ROW)] * 2).sum()) if whole else 0.0
            rest = values[whole:]
            self._merge(block.size, mean_b, m2_b + float(rest @ rest))

    def _merge(self, n_b: int, mean_b: float, m2_b: float) -> None:
        """Chan's merge of a group of n_b values with mean mean_b and squared deviations m2_b."""
        n_a = self.finite
        total = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / total
        self.m2 += m2_b + delta * delta * n_a * n_b / total
        self.finite = total

    def result(self) -> TensorStats:
        has = self.finite > 0
        return TensorStats(
            count=self.count,
            finite_count=self.finite,
            min=self.low if has else None,
            max=self.high if has else None,
            mean=self.mean if has else None,
            std=math.sqrt(self.m2 / self.finite) if has else None,
            nan_count=self.nan,
            inf_count=self.inf,
            zero_count=self.zero,
        )


    def absorb(self, other: "_Accumulator") -> None:
        """Take in what `other` summarised (values that came after this one's)."""
        self.count += other.count
        self.nan += other.nan
        self.inf += other.inf
        self.zero += other.zero
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        if other.finite:
            self._merge(other.finite, other.mean, other.m2)


def stats_of_chunks(chunks: Iterable[np.ndarray]) -> TensorStats:
    """Statistics over numeric chunks (bool counts as 0/1). Population std, like numpy."""
    acc = _Accumulator()
    for chunk in chunks:
        acc.add(chunk)
    return acc.result()


def variable_stats(reader, var) -> TensorStats:
    """Statistics of one variable of `reader`: a large one of a local TF bundle by worker threads
    in pieces, else chunk by chunk in this thread. The same damage is found either way (CRCs)."""
    fold_pieces = getattr(reader, "fold_value_pieces", None)
    pieces = fold_pieces(var, _Accumulator, _Accumulator.add) if fold_pieces else None
    if pieces is None:
        return stats_of_chunks(reader.iter_value_chunks(var))
    acc = _Accumulator()
    for piece in pieces:
        acc.absorb(piece)
    return acc.result()
