"""`--dtype`: casting floating variables while they stream (convert, average).

One rounding, to nearest, ties to even, as numpy's `astype` and ml_dtypes round. bfloat16, which
numpy lacks, is done on the bits: a float32 is rounded to its upper half; a float64 is taken to
float32 first, and where that lands exactly on a bfloat16 tie (the only place a second rounding
can go wrong) it is moved one step towards the float64 it came from, so the value itself breaks
the tie. `tf.cast` differs there: it rounds a float64 to float32, then that to bfloat16, so a
value past a bfloat16 tie by less than float32 resolves ends on the wrong side (1 + 2^-8 + 2^-30
becomes 1.0, not 1.0078125; just below bfloat16's overflow threshold, inf). A NaN cast to or from
bfloat16 becomes the quiet NaN of its sign, as ml_dtypes (and Eigen, TF's bfloat16) make it;
other casts keep numpy's NaN bits. Finite values that become infinite are counted, so the caller
can name the variables they overflowed in.

Only float16, bfloat16, float32 and float64 variables are cast: integers, strings, booleans, step
counters (by name, e.g. `global_step`, even when a trainer made them floats) and the exotic floats
(float8, complex) keep their dtype.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from ckpttool.errors import UsageProblem

if TYPE_CHECKING:  # numpy is imported where the bytes are worked on, not to plan
    import numpy as np

CASTABLE = ("bfloat16", "float16", "float32", "float64")
# Step counters keep their dtype even where a trainer made them floats: float16 stops counting at 2048.
STEP_COUNTER_RE = re.compile(r"(^|[/.])(global_step|_?iterations|step|save_counter|epoch)"
                             r"(/\.ATTRIBUTES/VARIABLE_VALUE)?$")


@dataclass(frozen=True)
class CastRule:
    """What --dtype and --keep-dtype ask for."""
    dtype: str | None = None  # the dtype floating variables are cast to; None: no cast
    keep: tuple[str, ...] = ()  # regexes of source names that keep their dtype

    def __post_init__(self):
        if self.dtype is not None and self.dtype not in CASTABLE:
            raise UsageProblem(f"--dtype must be one of {', '.join(CASTABLE)}, not {self.dtype!r}")
        if self.keep and self.dtype is None:
            raise UsageProblem("--keep-dtype applies with --dtype only")

    def target(self, name: str, dtype: str) -> str | None:
        """The dtype `name` (stored as `dtype`) is written in, when it changes; else None."""
        if self.dtype is None or dtype not in CASTABLE or dtype == self.dtype or STEP_COUNTER_RE.search(name):
            return None
        from ckpttool.ops.patterns import compile_pattern

        if any(compile_pattern(p, "--keep-dtype").search(name) for p in self.keep):
            return None
        return self.dtype


def decode_floats(raw: bytes, dtype: str, work: "np.ndarray | None" = None):
    """The values of stored little-endian `dtype` bytes (bfloat16 as float32). `work`: a reused uint32
    buffer of at least as many elements that bfloat16 is decoded into, the values a view of it, valid
    until the next call (two fresh arrays a chunk, faulted in anew, made this 10x slower)."""
    import numpy as np

    if dtype == "bfloat16":
        half = np.frombuffer(raw, "<u2")
        if work is None:
            return (half.astype("<u4") << 16).view("<f4")
        wide = work[:half.size]
        np.copyto(wide, half)
        np.left_shift(wide, 16, out=wide)
        return wide.view("<f4")
    return np.frombuffer(raw, {"float16": "<f2", "float32": "<f4", "float64": "<f8"}[dtype])


def _float32_bits_rounding_once(values: "np.ndarray") -> "np.ndarray":
    """The float32 bits of float64 `values`, from which one rounding to bfloat16 is the one rounding
    of `values`. Rounding to float32 first changes the answer only where it lands exactly on a
    bfloat16 tie (the ties are float32 values, so no value crosses one): there the float32 is moved
    one step towards the value it came from, off the tie, onto the side the value is on."""
    import numpy as np

    bits = values.astype("<f4").view("<u4")
    ties = np.flatnonzero((bits & 0xFFFF) == 0x8000)  # about 1 in 65536 elements of real weights
    if ties.size:
        came_from, landed = values[ties].view("<u8"), bits[ties].view("<f4").astype("<f8").view("<u8")
        # same sign, so magnitudes compare as the unsigned bits do; +1 is one step away from zero
        bits[ties[came_from > landed]] += 1
        bits[ties[came_from < landed]] -= 1
    return bits


def to_bfloat16(values) -> "np.ndarray":
    """The bfloat16 bits (uint16) of float16, float32 or float64 `values`, rounded once."""
    import numpy as np

    values = np.asarray(values)
    if values.dtype == np.float64:
        with np.errstate(over="ignore", invalid="ignore"):
            bits = _float32_bits_rounding_once(values)
    else:
        bits = np.ascontiguousarray(values, dtype="<f4").view("<u4")
    rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype("<u2")
    nan = np.isnan(bits.view("<f4"))
    if nan.any():  # rounding could carry a NaN's payload into the exponent: the quiet NaN of its sign
        rounded[nan] = ((bits[nan] >> 16) & 0x8000 | 0x7FC0).astype("<u2")
    return rounded


def cast_values(values, dtype: str, source: str | None = None) -> tuple[bytes, int]:
    """(the little-endian bytes of `values` as `dtype`, how many finite values became infinite).
    `source`: the stored dtype, when it is bfloat16 (`values` are then its float32 decoding)."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "bfloat16":
            out = to_bfloat16(values)
            overflowed = np.isinf((out.astype("<u4") << 16).view("<f4"))
        else:
            out = values.astype({"float16": "<f2", "float32": "<f4", "float64": "<f8"}[dtype])
            overflowed = np.isinf(out)
            if source == "bfloat16" and dtype == "float16":
                # ml_dtypes' NaN from bfloat16 (float32 and float64 keep the bits as ml_dtypes does)
                nan = np.isnan(out)
                if nan.any():
                    half = out.view("<u2")
                    half[nan] = half[nan] & 0x8000 | 0x7E00
        if overflowed.any():
            overflowed &= np.isfinite(values)
    return out.tobytes(), int(np.count_nonzero(overflowed))


def itemsize(dtype: str) -> int:
    return {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}[dtype]


# The smallest float32 magnitude that rounds to bfloat16's infinity: 0x7F7F8000, a tie, rounded up to
# the even 0x7F80 (exact as a float32 and as a float64, whichever the comparison is done in)
_BFLOAT16_OVERFLOWS_FROM = 2.0 ** 128 - 2.0 ** 119


def float32_to_bfloat16_finite(data: bytes, work: "np.ndarray", written: "np.ndarray") -> memoryview | None:
    """The bfloat16 bytes of the float32 values in `data` when every one is finite and stays finite
    (then exactly what cast_values gives, with no overflow to count), else None: NaNs and overflows
    are cast_values' to do. One min and one max decide it; the rounding is four in-place integer
    passes over `work` (a reused uint32 buffer of at least as many elements) and a fifth that
    narrows into `written` (a reused uint16 buffer, as long): no new memory, and the bytes handed
    out are a view of `written`, valid until the next call."""
    import numpy as np

    values = np.frombuffer(data, "<f4")
    if values.size and not (values.min() > -_BFLOAT16_OVERFLOWS_FROM and values.max() < _BFLOAT16_OVERFLOWS_FROM):
        return None  # a NaN fails both comparisons
    bits, rounded = values.view("<u4"), work[:values.size]
    np.right_shift(bits, 16, out=rounded)
    np.bitwise_and(rounded, 1, out=rounded)
    np.add(rounded, 0x7FFF, out=rounded)
    np.add(rounded, bits, out=rounded)  # to nearest, ties to even, as to_bfloat16
    out = written[:values.size]
    np.right_shift(rounded, 16, out=out, casting="unsafe")  # what is left fits in 16 bits
    return memoryview(out).cast("B")


# The smallest magnitude that rounds to infinity, by the casts numpy does in one rounding: float16's
# 65520 (the tie above 65504, rounded to the even 65536) and float32's 2**128 - 2**103 (likewise)
_OVERFLOWS_FROM = {("float32", "float16"): 65520.0, ("float64", "float32"): 2.0 ** 128 - 2.0 ** 103}
_NUMPY = {"float16": "<f2", "float32": "<f4", "float64": "<f8"}


def narrowed_finite(data: bytes, source: str, target: str, written: "np.ndarray", work: "np.ndarray",
                     tiny: "np.ndarray") -> memoryview | None:
    """The `target` bytes of the `source` values in `data` (a pair in _OVERFLOWS_FROM) when every one
    is finite and stays finite (numpy's cast, as cast_values does it, with no overflow to count), else
    None. One min and one max decide it; the cast goes into `written`, a reused buffer, the bytes
    handed out a view of it, valid until the next call. float32 -> float16 is done on the bits in
    `work` (a reused uint32 buffer of twice as many elements) and `tiny` (a reused bool buffer)."""
    import numpy as np

    values = np.frombuffer(data, _NUMPY[source])
    limit = _OVERFLOWS_FROM[(source, target)]
    if values.size and not (values.min() > -limit and values.max() < limit):
        return None  # a NaN fails both comparisons
    out = written[:values.size]
    if (source, target) == ("float32", "float16"):
        _float32_to_float16_bits(values, work, tiny[:values.size], out.view("<u2"))
    else:
        np.copyto(out, values, casting="unsafe")  # astype's rounding: to nearest, ties to even
    return memoryview(out).cast("B")


def _float32_to_float16_bits(values: "np.ndarray", work: "np.ndarray", tiny: "np.ndarray", out: "np.ndarray"):
    """The float16 bits of float32 `values` below 65520 in magnitude (none overflows), into `out`,
    rounded to nearest even as numpy's astype rounds them, bit for bit: ten integer passes over
    reused buffers take under half the time of numpy's own conversion of a float (2.3x here). A
    float16 normal number keeps the float32's top 10 mantissa bits, the exponent rebiased; values
    below float16's normal range (few in weights) are left to numpy's cast."""
    import numpy as np

    bits = values.view("<u4")
    magnitude, rounded = work[:values.size], work[values.size:2 * values.size]
    np.bitwise_and(bits, 0x7FFFFFFF, out=magnitude)
    np.less(magnitude, 0x38800000, out=tiny)  # below 2**-14
    np.right_shift(magnitude, 13, out=rounded)
    np.bitwise_and(rounded, 1, out=rounded)
    np.add(rounded, magnitude, out=rounded)
    np.add(rounded, 0xC8000FFF, out=rounded)  # exponent - 112, + 0xFFF (+ the odd bit): to nearest even
    np.right_shift(bits, 3, out=magnitude)
    np.bitwise_and(magnitude, 0x10000000, out=magnitude)
    np.bitwise_or(rounded, magnitude, out=rounded)  # the sign, 13 bits above the float16's (< 2**28 fits)
    np.right_shift(rounded, 13, out=out, casting="unsafe")
    if tiny.any():
        at = np.flatnonzero(tiny)
        out[at] = values[at].astype("<f2").view("<u2")


def cast_stream(chunks: Iterator[bytes], source: str, target: str, overflow: list[int]
                ) -> Iterator[bytes | memoryview]:
    """The stored bytes of a `source` variable as `target`, chunk by chunk; `overflow[0]` counts the
    finite values that became infinite. A chunk may end inside an element: the rest waits for the next.
    The pieces handed out may be views of buffers reused for the next (the consumers are done with
    each piece before they ask for the next: convert._Source): fresh arrays a chunk cost as much as
    the cast."""
    import numpy as np

    size = itemsize(source)
    rest = b""
    rounds_bfloat16 = (source, target) == ("float32", "bfloat16")  # in place, float32_to_bfloat16_finite
    narrows = (source, target) in _OVERFLOWS_FROM
    decodes = source == "bfloat16"  # into `work`
    # no rounding, no overflow: bfloat16 or float16 to float32 or float64, float32 to float64; copied
    # into `written` but bfloat16's float32 decoding, handed on as it is
    exact = target in ("float32", "float64") and itemsize(target) > itemsize(source)
    copies = rounds_bfloat16 or narrows or exact and (source, target) != ("bfloat16", "float32")
    halves = (source, target) == ("float32", "float16")  # on the bits, in two uint32 buffers' room
    work, tiny = np.empty(0, "<u4"), np.empty(0, bool)
    written = np.empty(0, "<u2" if target == "bfloat16" else _NUMPY[target])
    for chunk in chunks:
        data = rest + chunk if rest else chunk
        cut = len(data) - len(data) % size
        rest = bytes(data[cut:])  # a chunk may be a view of a reused buffer: what waits is copied
        if not cut:
            continue
        whole, count = data[:cut] if cut < len(data) else data, cut // size
        wanted = 2 * count if halves else count if rounds_bfloat16 or decodes else 0
        if work.size < wanted:
            work, tiny = np.empty(wanted, "<u4"), np.empty(count if halves else 0, bool)
        if copies and written.size < count:
            written = np.empty(count, written.dtype)
        if rounds_bfloat16 or narrows:
            fast = (float32_to_bfloat16_finite(whole, work, written) if rounds_bfloat16
                    else narrowed_finite(whole, source, target, written, work, tiny))
            if fast is not None:
                yield fast
                continue
        values = decode_floats(whole, source, work if decodes else None)
        if exact:  # NaNs keep their bits as astype (cast_values) keeps them
            if copies:
                with np.errstate(invalid="ignore"):  # a signalling NaN comes out quiet, as astype gives it
                    np.copyto(written[:count], values)
                values = written[:count]
            yield memoryview(values).cast("B")
            continue
        out, overflowed = cast_values(values, target, source)
        overflow[0] += overflowed
        yield out
    if rest:
        raise ValueError("a variable's stored bytes end inside an element")  # the readers check sizes: a bug
