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
        values = chunk.astype(np.float64, copy=False) if chunk.dtype != np.float64 else chunk
        self.count += values.size
        finite_mask = np.isfinite(values)
        finite = values[finite_mask] if not finite_mask.all() else values
        nan = int(np.isnan(values).sum()) if finite.size != values.size else 0
        self.nan += nan
        self.inf += values.size - finite.size - nan
        self.zero += int(np.count_nonzero(finite == 0))
        if not finite.size:
            return
        self.low = min(self.low, float(finite.min()))
        self.high = max(self.high, float(finite.max()))
        n_b = finite.size
        mean_b = float(finite.mean())
        m2_b = float(((finite - mean_b) ** 2).sum())
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
