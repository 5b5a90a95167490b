"""Summary statistics of a tensor computed chunk by chunk, so memory stays
bounded whatever the tensor's size (Chan's parallel mean/variance merge).

Each chunk is gone over in few passes: min and max first (a NaN or an
infinity shows in them, so the all-finite common case needs no mask), zeros
counted only when min <= 0 <= max, then blocks are converted to float64 once
(into a reused scratch buffer): their sum, and their sum of squares by dot
products of rows of _ROW elements, merged as Chan does. Sum and sum of
squares give a block's squared deviations (sumsq - sum * mean) without a
pass over its deviations; where that subtraction cancels more than
_CANCELLATION of the sum of squares (a mean far above the spread, or an
overflow), the block's deviations are summed instead (as before: one
subtraction pass), so the error stays below 2 * _ROW * eps / _CANCELLATION
relative (about 1e-10), whatever the data. Float64 throughout: a float32 sum
of squares is off by ~1e-7 relative, and the tests hold mean and std to 1e-9
of numpy's float64 results. The dot products are BLAS's, on rows of 8192
elements: OpenBLAS runs a dot product of more than 10,000 elements on several
threads, which on a loaded machine cost ten times what it saved (measured:
0.08 GiB/s instead of 2.5).

One thread: sharing a tensor's pieces among worker threads (each reading,
checking and summarising its own 16 MiB piece, as verify's workers do, the
pieces' statistics merged in order) measured slower and larger on this 2-core
machine shared with other jobs: 1.12x the time and 41 MiB against 32 for 1 GiB
(issue 29, load 7; before that, at load 3.5, with 1 MiB pieces: 1.02-1.16 s
against 0.76-0.82 s and 6 MiB larger). A thread holding the GIL is often
preempted there, and every worker keeps its own buffers. A reader thread one
chunk ahead (pread, CRC and decoding there, two handovers of the GIL a chunk)
measured the same time at 8% more CPU and 1.5 MiB more (paired, load 5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

_BLOCK = 1 << 17  # elements converted to float64 at a time (1 MiB)
_ROW = 8192  # elements per dot product: OpenBLAS stays on one thread up to 10,000
# A block whose sumsq - sum * mean keeps less than this share of sumsq (8 bits lost) is summed again
# from its deviations.
_CANCELLATION = 2.0 ** -8
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
        if low <= 0 <= high:  # else no element is zero: no pass to count them
            self.zero += int(np.count_nonzero(chunk == 0))  # faster than counting the non-zeros of floats
        self.low = min(self.low, float(low))
        self.high = max(self.high, float(high))
        with np.errstate(over="ignore", invalid="ignore"):  # squares that overflow are summed again, or inf
            self._add_blocks(chunk)

    def _add_blocks(self, chunk: np.ndarray) -> None:
        if self._scratch.size < min(chunk.size, _BLOCK):
            self._scratch = np.empty(min(chunk.size, _BLOCK), np.float64)
        scratch = self._scratch
        for start in range(0, chunk.size, _BLOCK):
            block = chunk[start : start + _BLOCK]
            values = scratch[: block.size]
            np.copyto(values, block)
            total = float(values.sum())
            mean_b = total / block.size
            squares = _sum_of_squares(values)
            m2_b = squares - total * mean_b
            if not squares * _CANCELLATION <= m2_b < math.inf:  # cancelled (or overflowed, NaN): deviations
                values -= mean_b
                m2_b = _sum_of_squares(values)
            self._merge(block.size, mean_b, m2_b)

    def _merge(self, n_b: int, mean_b: float, m2_b: float) -> None:
        """Chan's merge of a group of n_b values with mean mean_b and squared deviations m2_b."""
        n_a = self.finite
        total = n_a + n_b
        if not n_a:  # the first group as it is: delta * delta * 0 is NaN where delta squared overflows
            self.mean, self.m2, self.finite = mean_b, m2_b, total
            return
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


def _sum_of_squares(values: np.ndarray) -> float:
    """Sum of squares of a float64 block, by dot products of _ROW-element rows."""
    whole = values.size - values.size % _ROW
    rows = values[:whole].reshape(-1, _ROW)
    rest = values[whole:]
    return (float(_rows_dot(rows, rows).sum()) if whole else 0.0) + float(rest @ rest)


def stats_of_chunks(chunks: Iterable[np.ndarray]) -> TensorStats:
    """Statistics over numeric chunks (bool counts as 0/1). Population std, like numpy."""
    acc = _Accumulator()
    for chunk in chunks:
        acc.add(chunk)
    return acc.result()

