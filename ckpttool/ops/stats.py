"""Summary statistics of a tensor computed chunk by chunk, so memory stays
bounded whatever the tensor's size (Chan's parallel mean/variance merge).

Each chunk is gone over in as few passes as numpy allows: min and max first
(a NaN or an infinity shows in them, so the all-finite common case needs no
mask), zeros counted, the sum in float64, then the squared deviations from
the chunk's mean summed in float64 over cache-sized blocks, so no float64
copy of a whole chunk is ever made.
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
        self.zero += chunk.size - int(np.count_nonzero(chunk))
        self.low = min(self.low, float(low))
        self.high = max(self.high, float(high))
        n_b = chunk.size
        mean_b = float(chunk.sum(dtype=np.float64)) / n_b
        m2_b = self._squared_deviations(chunk, mean_b)
        n_a = self.finite
        total = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / total
        self.m2 += m2_b + delta * delta * n_a * n_b / total
        self.finite = total

    def _squared_deviations(self, chunk: np.ndarray, mean: float) -> float:
        """Σ (x - mean)² in float64, a block at a time."""
        if self._scratch.size < min(chunk.size, _BLOCK):
            self._scratch = np.empty(min(chunk.size, _BLOCK), np.float64)
        total = 0.0
        for start in range(0, chunk.size, _BLOCK):
            block = chunk[start : start + _BLOCK]
            centered = np.subtract(block, mean, out=self._scratch[: block.size], dtype=np.float64)
            total += float(np.dot(centered, centered))
        return total

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
