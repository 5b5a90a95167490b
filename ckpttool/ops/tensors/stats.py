"""Summary statistics of a tensor computed chunk by chunk, so memory stays
bounded whatever the tensor's size (Chan's parallel mean/variance merge).

Each chunk is gone over in few passes: min and max first (a NaN or an
infinity shows in them, so the all-finite common case needs no mask), zeros
counted, then blocks that fit the CPU's cache are converted to float64 once
and give their mean and squared deviations, merged as Chan does. No float64
copy of a whole chunk is made, and no BLAS call (slow to start on small
vectors). One thread: sharing the chunks of a tensor among worker threads
cost more CPU than it saved (the chunks moved between the cores' caches).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

_BLOCK = 1 << 16  # elements converted to float64 at a time (512 KiB)


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
        self._scratch = np.empty(0)

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
        for start in range(0, chunk.size, _BLOCK):
            block = chunk[start : start + _BLOCK]
            values = self._scratch[: block.size]
            np.copyto(values, block)
            n_b = block.size
            mean_b = float(values.sum()) / n_b
            values -= mean_b
            np.multiply(values, values, out=values)
            self._merge(n_b, mean_b, float(values.sum()))

    def _merge(self, n_b: int, mean_b: float, m2_b: float) -> None:
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
