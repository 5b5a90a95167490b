"""Summary statistics of a tensor computed chunk by chunk, so memory stays
bounded whatever the tensor's size (Chan's parallel mean/variance merge).

Each chunk is gone over in few passes: min and max first (a NaN or an
infinity shows in them, so the all-finite common case needs no mask), zeros
counted, then blocks are converted to float64 once (into a reused scratch
buffer): their mean, then their squared deviations summed by dot
products of rows of _ROW elements (one pass instead of a square and a sum),
merged as Chan does. Float64 throughout, as before: a float32 sum of squares
is off by ~1e-7 relative, and the tests hold mean and std to 1e-9 of numpy's
float64 results. The dot products are BLAS's, on rows of 8192 elements:
OpenBLAS runs a dot product of more than 10,000 elements on several threads,
which on a loaded machine cost ten times what it saved (measured: 0.08 GiB/s
instead of 2.5).

One thread: sharing a tensor's pieces among worker threads (each reading,
checking and summarising its own, as verify's workers do) measured slower
and 6 MiB larger on this 2-core machine (probably the many short numpy
calls per chunk taking the GIL in turn).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

_BLOCK = 1 << 17  # elements converted to float64 at a time (1 MiB)
_ROW = 8192  # elements per dot product: OpenBLAS stays on one thread up to 10,000
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
        self._scratch = np.empty(0)  # float64 buffer, reused chunk after chunk

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
        if self._scratch.size < min(chunk.size, _BLOCK):
            self._scratch = np.empty(min(chunk.size, _BLOCK), np.float64)
        scratch = self._scratch
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


def stats_of_chunks(chunks: Iterable[np.ndarray]) -> TensorStats:
    """Statistics over numeric chunks (bool counts as 0/1). Population std, like numpy."""
    acc = _Accumulator()
    for chunk in chunks:
        acc.add(chunk)
    return acc.result()

