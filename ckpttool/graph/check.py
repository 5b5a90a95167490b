"""`freeze --check`: inputs for running the original and the frozen graph side
by side, and the comparison of their outputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ckpttool.errors import UsageProblem


@dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_diff: float
    equal: bool


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    inputs: dict[str, list[int]]  # the shape each input was fed with
    outputs: tuple[OutputComparison, ...]


def parse_input_shapes(specs: list[str]) -> dict[str, list[int]]:
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            if not sep:
                raise ValueError
            shapes[name.split(":")[0]] = [int(d) for d in dims.split(",")] if dims.strip() else []
        except ValueError:
            raise UsageProblem(f"--input-shape takes NAME=D1,D2,..., got {spec!r}") from None
    return shapes


def input_shapes_for_check(declared: dict[str, list[int] | None], given: dict[str, list[int]]) -> dict[str, list[int]]:
    """The shape to feed each input: --input-shape, else its static shape with an
    unknown batch (first) dimension taken as 1; anything else unknown needs --input-shape.

    `declared` maps input name -> shape (None: unknown rank; -1: unknown dimension).
    """
    shapes = {}
    for name, shape in declared.items():
        if name in given:
            shapes[name] = given[name]
        elif shape is not None and all(d >= 0 for d in shape[1:]):
            shapes[name] = [1 if shape[0] < 0 else shape[0], *shape[1:]] if shape else []
        else:
            shown = "?" if shape is None else "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"
            raise UsageProblem(f"--check needs a shape for input {name!r} (its shape is {shown})",
                               hint=f"add --input-shape {name}=D1,D2,...")
    return shapes


def random_value(dtype, shape, rng):
    """Test data of a TensorFlow dtype: normal floats, small integers, booleans."""
    np_dtype = np.dtype(dtype.as_numpy_dtype) if dtype.is_numpy_compatible else np.dtype(object)
    if np_dtype.kind == "f":
        return rng.standard_normal(shape).astype(np_dtype)
    if np_dtype.kind in "iu":
        return rng.integers(0, 5, size=shape).astype(np_dtype)
    if np_dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise UsageProblem(f"--check cannot make random inputs of type {dtype.name}")


def compare(name: str, original, frozen) -> OutputComparison:
    a, b = np.asarray(original), np.asarray(frozen)
    if a.shape != b.shape:
        return OutputComparison(name, float("inf"), False)
    if a.dtype.kind in "fc":
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        return OutputComparison(name, diff, bool(np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)))
    equal = bool(np.array_equal(a, b))
    return OutputComparison(name, 0.0 if equal else float("inf"), equal)


def check_result(shapes: dict[str, list[int]], comparisons) -> CheckResult:
    comparisons = tuple(comparisons)
    return CheckResult(all(c.equal for c in comparisons), shapes, comparisons)
