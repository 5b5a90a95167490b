"""Summary statistics of a tensor computed chunk by chunk, so memory stays
bounded whatever the tensor's size (Chan's parallel mean/variance merge)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np


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
        finite = chunk
        if chunk.dtype.kind == "f":
            finite_mask = np.isfinite(chunk)
            if not finite_mask.all():  # rare: only then pay for masks and a compacted copy
                nan = int(np.isnan(chunk).sum())
                self.nan += nan
                self.inf += chunk.size - int(finite_mask.sum()) - nan
                finite = chunk[finite_mask]
        self.zero += finite.size - int(np.count_nonzero(finite))
        if not finite.size:
            return
        self.low = min(self.low, float(finite.min()))
        self.high = max(self.high, float(finite.max()))
        n_b = finite.size
        mean_b = float(finite.sum(dtype=np.float64)) / n_b
        centered = finite.astype(np.float64) - mean_b
        m2_b = float(np.dot(centered, centered))
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
