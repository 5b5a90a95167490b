"""Summary statistics of a tensor computed chunk by chunk, so memory stays
bounded whatever the tensor's size (Chan's parallel mean/variance merge).

Each chunk is gone over in few passes: min and max first (a NaN or an
infinity shows in them, so the all-finite common case needs no mask), zeros
counted, then blocks that fit the CPU's cache are converted to float64 once
and give their mean and squared deviations, merged as Chan does. No float64
copy of a whole chunk is made, and no BLAS call (slow to start on small
vectors). A tensor of several chunks is shared among worker threads (numpy
lets other threads run inside its loops), each with an accumulator of its
own, merged at the end in a fixed order, so the result does not depend on
timing.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from dataclasses import dataclass
from itertools import chain, islice
from typing import Iterable

import numpy as np

_BLOCK = 1 << 16  # elements converted to float64 at a time (512 KiB)
WORKERS = min(2, os.cpu_count() or 1)
_QUEUED = 2  # chunks waiting for each worker: memory stays a few chunks


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

    def absorb(self, other: "_Accumulator") -> None:
        """Take in what `other` has seen (as if this one had seen it too)."""
        self.count += other.count
        self.nan += other.nan
        self.inf += other.inf
        self.zero += other.zero
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        if other.finite:
            self._merge(other.finite, other.mean, other.m2)

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


class _Crew:
    """Worker threads, each adding the chunks it is given to its own accumulator, in order."""

    def __init__(self, accumulators: list[_Accumulator]):
        self._queues = [queue.Queue(_QUEUED) for _ in accumulators]
        self._failure: BaseException | None = None
        self._threads = [threading.Thread(target=self._work, args=(q, acc), daemon=True)
                         for q, acc in zip(self._queues, accumulators)]
        for thread in self._threads:
            thread.start()

    def _work(self, chunks: queue.Queue, acc: _Accumulator) -> None:
        while (chunk := chunks.get()) is not None:
            if self._failure is None:
                try:
                    acc.add(chunk)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._failure = exc

    def feed(self, worker: int, chunk: np.ndarray) -> None:
        if self._failure is not None:
            raise self._failure
        self._queues[worker].put(chunk)

    def finish(self) -> None:
        """Wait for every chunk given; re-raise a worker's failure."""
        for chunks in self._queues:
            chunks.put(None)
        for thread in self._threads:
            thread.join()
        if self._failure is not None:
            raise self._failure


def stats_of_chunks(chunks: Iterable[np.ndarray], workers: int | None = None) -> TensorStats:
    """Statistics over numeric chunks (bool counts as 0/1). Population std, like numpy.
    Chunks after the first are shared among `workers` threads (default WORKERS)."""
    workers = WORKERS if workers is None else workers
    chunks = iter(chunks)
    head = list(islice(chunks, 2))  # a tensor of one chunk is not worth a thread
    ordered = chain(head, chunks)
    if workers < 2 or len(head) < 2:
        acc = _Accumulator()
        for chunk in ordered:
            acc.add(chunk)
        return acc.result()
    accumulators = [_Accumulator() for _ in range(workers)]
    crew = _Crew(accumulators)
    try:
        for i, chunk in enumerate(ordered):
            crew.feed(i % len(accumulators), chunk)
    finally:
        crew.finish()  # also when reading failed: the workers stop before the error goes on
    total = accumulators[0]
    for other in accumulators[1:]:
        total.absorb(other)
    return total.result()
