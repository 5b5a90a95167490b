"""`diff`: added, removed, dtype/shape-changed and value-changed variables of
two checkpoints. Values are compared chunk by chunk, so memory stays bounded
whatever the tensor size."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ckpttool.errors import UsageProblem
from ckpttool.ops.tensors.model_names import check_naming, reader_names
from ckpttool.ops.patterns import compile_optional
from ckpttool.ops.targets import Target, open_target, resolve_target

DIFF_CHUNK_BYTES = 1 << 20  # two streams and their comparison temporaries stay a few MiB


@dataclass(frozen=True)
class VariableDiff:
    name: str
    change: str  # "added" | "removed" | "dtype" | "shape" | "value"
    a_dtype: str | None = None
    b_dtype: str | None = None
    a_shape: tuple[int, ...] | None = None
    b_shape: tuple[int, ...] | None = None
    mismatched: int | None = None  # elements outside the tolerance
    max_abs_diff: float | int | None = None  # exact (an int) for integer dtypes
    max_rel_diff: float | None = None
    a_sha256: str | None = None  # by hash (ops/tensors/manifest.py): the content digests compared
    b_sha256: str | None = None


@dataclass(frozen=True)
class DiffReport:
    a: str
    b: str
    compared: int  # variables present in both with the same dtype and shape
    differences: tuple[VariableDiff, ...]
    tolerated_max_abs: float = 0.0  # largest |a - b| that --atol/--rtol let pass as equal (0: all exact)

    @property
    def identical(self) -> bool:
        return not self.differences


def zip_chunks(left: Iterator[np.ndarray], right: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs of equally long pieces from two streams of 1-D chunks of the same total length."""
    a = b = np.empty(0)
    while True:
        if not a.size:
            a = next(left, None)
        if not b.size:
            b = next(right, None)
        if a is None or b is None:
            return
        n = min(a.size, b.size)
        yield a[:n], b[:n]
        a, b = a[n:], b[n:]


class _Accumulator:
    def __init__(self, rtol: float, atol: float):
        self.rtol, self.atol = rtol, atol
        self.mismatched = 0
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.tolerated_max_abs = 0.0  # "equal within tolerance", never "identical", when this is > 0
        self.numeric = True

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.dtype == object or b.dtype == object:
            self.numeric = False
            self.mismatched += sum(1 for x, y in zip(a, b) if x != y)
            return
        if a.dtype.kind in "iub" and b.dtype.kind in "iub":
            self._add_exact(a, b)
            return
        if self.rtol or self.atol:
            different = ~np.isclose(self._wide(a), self._wide(b), rtol=self.rtol, atol=self.atol, equal_nan=True)
            self._note_tolerated(a, b, different)
        else:
            different = a != b
            if a.dtype.kind in "fc":
                different &= ~(np.isnan(a) & np.isnan(b))
        count = int(np.count_nonzero(different))
        if not count:
            return  # the common case costs no wide temporaries
        self.mismatched += count
        fa, fb = self._wide(a[different]), self._wide(b[different])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            delta = np.abs(fa - fb)
            finite = np.isfinite(delta)
            if finite.any():
                self.max_abs = max(self.max_abs, float(delta[finite].max()))
                scale = np.abs(fb)
                rel_ok = finite & (scale > 0)
                if rel_ok.any():
                    self.max_rel = max(self.max_rel, float((delta[rel_ok] / scale[rel_ok]).max()))

    def _add_exact(self, a: np.ndarray, b: np.ndarray) -> None:
        """Integers (and booleans) are equal or not: no tolerance, and never through float64, which
        cannot tell 2**53 from 2**53 + 1. The largest difference is exact too: |a - b| of two
        64-bit integers always fits in uint64, where the subtraction of the larger from the smaller
        is exact modulo 2**64."""
        different = a != b
        count = int(np.count_nonzero(different))
        if not count:
            return
        self.mismatched += count
        da, db = a[different], b[different]
        ua, ub = da.astype(np.uint64), db.astype(np.uint64)  # two's complement: exact modulo 2**64
        delta = np.where(da > db, ua - ub, ub - ua)
        self.max_abs = max(self.max_abs, int(delta.max()))
        nonzero = db != 0
        if nonzero.any():
            rel = delta[nonzero].astype(np.float64) / np.abs(db[nonzero].astype(np.float64))
            self.max_rel = max(self.max_rel, float(rel.max()))

    def _note_tolerated(self, a: np.ndarray, b: np.ndarray, different: np.ndarray) -> None:
        tolerated = ~different & (a != b)
        if not tolerated.any():
            return
        with np.errstate(invalid="ignore", over="ignore"):
            delta = np.abs(self._wide(a[tolerated]) - self._wide(b[tolerated]))
        finite = delta[np.isfinite(delta)]
        if finite.size:
            self.tolerated_max_abs = max(self.tolerated_max_abs, float(finite.max()))

    @staticmethod
    def _wide(values: np.ndarray) -> np.ndarray:
        return values.astype(np.complex128 if values.dtype.kind == "c" else np.float64)


def _values(reader, var, other_var) -> Iterator[np.ndarray]:
    """The variable's elements in a stream both sides agree on: chunked when the
    stored layouts match, the whole (assembled) tensor otherwise."""
    if var.slices == other_var.slices:
        return reader.iter_value_chunks(var, DIFF_CHUNK_BYTES)
    return iter([reader.read(var).reshape(-1)])


def check_tolerances(rtol: float, atol: float) -> None:
    """numpy.isclose takes any float; NaN or infinity would compare everything as equal (or warn)."""
    for option, value in (("--rtol", rtol), ("--atol", atol)):
        if not math.isfinite(value) or value < 0:
            raise UsageProblem(f"{option} must be a finite number >= 0, not {value}")


def _compared(a, b, regex, naming: str = "key") -> Iterator[tuple[str, object, object]]:
    """(name, variable in a or None, in b or None) for every name either side has, in order; names
    as `naming` gives them (the checkpoint key, or the path through the model)."""
    sides = []
    for reader in (a, b):
        shown = reader_names(reader, naming)
        sides.append({shown[v.name]: v for v in reader.variables
                      if not v.internal and (not regex or regex.search(shown[v.name]))})
    a_vars, b_vars = sides
    for name in sorted(set(a_vars) | set(b_vars)):
        yield name, a_vars.get(name), b_vars.get(name)


def _values_compared(va, vb) -> bool:
    return va is not None and vb is not None and va.dtype.name == vb.dtype.name and va.shape == vb.shape


def bytes_to_compare(a_target: Target, b_target: Target, pattern: str | None = None, naming: str = "key") -> int:
    """Stored bytes `diff_checkpoints` reads on both sides (for a progress bar): indexes only."""
    regex = compile_optional(pattern, "--filter")
    with open_target(a_target) as a, open_target(b_target) as b:
        return sum(va.size_bytes + vb.size_bytes for _name, va, vb in _compared(a, b, regex, naming)
                   if _values_compared(va, vb))


def diff_checkpoints(a_path: str | Target, b_path: str | Target, *, rtol: float = 0.0, atol: float = 0.0,
                     pattern: str | None = None, on_progress: Callable[[int], None] | None = None,
                     naming: str = "key") -> DiffReport:
    """`a_path`, `b_path`: paths, or Targets already resolved. `on_progress(bytes)` is called as
    chunks are compared, with stored bytes of both sides (their sum is `bytes_to_compare`).
    `naming`: "model" compares variables by their names through the model (ops/tensors/model_names.py),
    not by checkpoint key; `pattern` and the report then use those names."""
    check_tolerances(rtol, atol)
    check_naming(naming)
    regex = compile_optional(pattern, "--filter")
    a_target, b_target = (t if isinstance(t, Target) else resolve_target(t) for t in (a_path, b_path))
    differences: list[VariableDiff] = []
    compared = 0
    tolerated = 0.0
    with open_target(a_target) as a, open_target(b_target) as b:
        for name, va, vb in _compared(a, b, regex, naming):
            if vb is None:
                differences.append(VariableDiff(name, "removed", a_dtype=va.dtype.name, a_shape=va.shape))
                continue
            if va is None:
                differences.append(VariableDiff(name, "added", b_dtype=vb.dtype.name, b_shape=vb.shape))
                continue
            if va.dtype.name != vb.dtype.name or va.shape != vb.shape:
                change = "dtype" if va.dtype.name != vb.dtype.name else "shape"
                differences.append(VariableDiff(name, change, va.dtype.name, vb.dtype.name, va.shape, vb.shape))
                continue
            compared += 1
            acc = _Accumulator(rtol, atol)
            stored, counted = va.size_bytes + vb.size_bytes, 0
            for chunk_a, chunk_b in zip_chunks(_values(a, va, vb), _values(b, vb, va)):
                acc.add(chunk_a, chunk_b)
                if on_progress:  # the chunk's share of both sides' stored bytes
                    step = min(stored - counted, chunk_a.size * stored // max(va.num_elements, 1))
                    counted += step
                    on_progress(step)
            if on_progress and stored > counted:
                on_progress(stored - counted)
            tolerated = max(tolerated, acc.tolerated_max_abs)
            if acc.mismatched:
                differences.append(VariableDiff(
                    name, "value", va.dtype.name, vb.dtype.name, va.shape, vb.shape, acc.mismatched,
                    acc.max_abs if acc.numeric else None, acc.max_rel if acc.numeric else None))
    return DiffReport(a_target.prefix, b_target.prefix, compared, tuple(differences), tolerated)
