"""TensorFlow DataType codes: names, storage width and decoding to numpy.

Every fixed-width type is stored little-endian in C order (FORMAT.md §4).
Types numpy lacks (bfloat16, float8, float4, int4/int2 ...) are decoded to the
nearest numpy type that holds every value exactly (float32, int8, uint8), so
the reader needs no extension library.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Callable

from ckpttool.errors import CorruptCheckpoint, Unsupported

if TYPE_CHECKING:  # numpy is imported when values are decoded, not to list them
    import numpy as np

STRING = 7
RESOURCE = 20
VARIANT = 21


@dataclass(frozen=True)
class DType:
    code: int
    name: str  # TensorFlow's name: tf.as_dtype(code).name
    storage: str | None  # numpy dtype of the stored bytes; None for variable-length types
    kind: str  # "float", "int", "uint", "bool", "complex", "string", "variant"
    decoder: Callable[[np.ndarray], np.ndarray] | None = None  # storage -> presented values

    @cached_property
    def itemsize(self) -> int | None:
        # numpy's spelling: "<f4", "u1", "?" (bool, one byte)
        return (int(self.storage.lstrip("<>|")[1:] or 1)) if self.storage else None

    @property
    def fixed_width(self) -> bool:
        return self.storage is not None

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """Stored elements (numpy array of `storage`) as plain numpy values."""
        return self.decoder(raw) if self.decoder else raw


def _bfloat16(raw: np.ndarray) -> np.ndarray:
    import numpy as np

    return (raw.astype(np.uint32) << 16).view(np.float32)


@lru_cache(maxsize=None)
def _minifloat_table(exp_bits: int, man_bits: int, bias: int, ieee_specials: bool, nan_codes: tuple[int, ...]) -> np.ndarray:
    """float32 value of every code of a small float format."""
    import numpy as np

    width = 1 + exp_bits + man_bits
    codes = np.arange(1 << width, dtype=np.int64)
    sign = np.where((codes >> (width - 1)) & 1, -1.0, 1.0)
    exponent = (codes >> man_bits) & ((1 << exp_bits) - 1)
    mantissa = (codes & ((1 << man_bits) - 1)) / float(1 << man_bits)
    subnormal = mantissa * 2.0 ** (1 - bias)
    normal = (1.0 + mantissa) * np.exp2(exponent - bias)
    values = sign * np.where(exponent == 0, subnormal, normal)
    if ieee_specials:
        top = exponent == (1 << exp_bits) - 1
        values = np.where(top & (mantissa == 0), sign * np.inf, values)
        values = np.where(top & (mantissa != 0), np.nan, values)
    for code in nan_codes:
        values[code] = np.nan
    return values.astype(np.float32)


def _minifloat(exp_bits: int, man_bits: int, bias: int, ieee: bool = False, nan_codes: tuple[int, ...] = ()):
    def decode(raw: np.ndarray) -> np.ndarray:
        table = _minifloat_table(exp_bits, man_bits, bias, ieee, nan_codes)
        mask = (1 << (1 + exp_bits + man_bits)) - 1
        return table[raw & mask]

    return decode


def _signed_low_bits(bits: int):
    sign = 1 << (bits - 1)

    def decode(raw: np.ndarray) -> np.ndarray:
        import numpy as np

        low = (raw & ((1 << bits) - 1)).astype(np.int8)
        return (low ^ sign) - sign

    return decode


def _unsigned_low_bits(bits: int):
    def decode(raw: np.ndarray) -> np.ndarray:
        return raw & ((1 << bits) - 1)

    return decode


_ALL = [
    DType(1, "float32", "<f4", "float"),
    DType(2, "float64", "<f8", "float"),
    DType(3, "int32", "<i4", "int"),
    DType(4, "uint8", "u1", "uint"),
    DType(5, "int16", "<i2", "int"),
    DType(6, "int8", "i1", "int"),
    DType(STRING, "string", None, "string"),
    DType(8, "complex64", "<c8", "complex"),
    DType(9, "int64", "<i8", "int"),
    DType(10, "bool", "?", "bool"),
    DType(11, "qint8", "i1", "int"),
    DType(12, "quint8", "u1", "uint"),
    DType(13, "qint32", "<i4", "int"),
    DType(14, "bfloat16", "<u2", "float", _bfloat16),
    DType(15, "qint16", "<i2", "int"),
    DType(16, "quint16", "<u2", "uint"),
    DType(17, "uint16", "<u2", "uint"),
    DType(18, "complex128", "<c16", "complex"),
    DType(19, "float16", "<f2", "float"),
    DType(VARIANT, "variant", None, "variant"),
    DType(22, "uint32", "<u4", "uint"),
    DType(23, "uint64", "<u8", "uint"),
    DType(24, "float8_e5m2", "u1", "float", _minifloat(5, 2, 15, ieee=True)),
    DType(25, "float8_e4m3fn", "u1", "float", _minifloat(4, 3, 7, nan_codes=(0x7F, 0xFF))),
    DType(26, "float8_e4m3fnuz", "u1", "float", _minifloat(4, 3, 8, nan_codes=(0x80,))),
    DType(27, "float8_e4m3b11fnuz", "u1", "float", _minifloat(4, 3, 11, nan_codes=(0x80,))),
    DType(28, "float8_e5m2fnuz", "u1", "float", _minifloat(5, 2, 16, nan_codes=(0x80,))),
    DType(29, "int4", "i1", "int", _signed_low_bits(4)),
    DType(30, "uint4", "u1", "uint", _unsigned_low_bits(4)),
    DType(31, "int2", "i1", "int", _signed_low_bits(2)),
    DType(32, "uint2", "u1", "uint", _unsigned_low_bits(2)),
    DType(33, "float4_e2m1fn", "u1", "float", _minifloat(2, 1, 1)),
]
_BY_CODE = {d.code: d for d in _ALL}
_BY_NAME = {d.name: d for d in _ALL}


def dtype_from_code(code: int) -> DType:
    try:
        return _BY_CODE[code]
    except KeyError:
        what = "resource" if code == RESOURCE else f"code {code}"
        raise Unsupported(f"unsupported tensor dtype ({what})") from None


def dtype_from_name(name: str) -> DType:
    return _BY_NAME[name]


def all_dtypes() -> list[DType]:
    return list(_ALL)


def check_bool_bytes(name: str, dtype: DType, chunk: bytes, *, shown: str | None = None) -> None:
    """A stored bool is byte 0 or 1 (safetensors' check; numpy would show 2 as True and write it back).
    `shown`: the tensor as messages name it, when not `name` quoted."""
    if dtype.name == "bool" and chunk.translate(None, b"\x00\x01"):
        raise CorruptCheckpoint(f"bool tensor {shown or repr(name)} holds bytes other than 0 and 1")


def checked_size(var, chunks) -> int:
    """Bytes of a variable's stored chunks, each checked as check_bool_bytes does (a reader's
    check_variable: reading to the end is what checks the rest)."""
    total = 0
    for chunk in chunks:
        check_bool_bytes(var.name, var.dtype, chunk)
        total += len(chunk)
    return total


def decoded(dtype: DType, chunks):
    """Stored little-endian chunks of `dtype` as the values people see (bfloat16 as float32 ...)."""
    import numpy as np

    storage = np.dtype(dtype.storage)
    for chunk in chunks:
        yield dtype.decode(np.frombuffer(chunk, dtype=storage))


NUMPY_MAX_DIMS = 64  # numpy's NPY_MAXDIMS (numpy 2)
INT64_MAX = (1 << 63) - 1  # TensorShapeProto dims are int64, numpy's npy_intp is 64 bits here


def array_shape_problem(shape: tuple[int, ...], itemsize: int | None) -> str | None:
    """Why no numpy array (nor TensorFlow tensor) can have `shape`, or None if one can.

    numpy's own rules (np.empty refuses the same shapes): at most 64 axes, each
    at most 2**63-1, and the non-zero axes times the itemsize must fit in 2**63-1
    bytes even when another axis is 0. Checked before any value is read or written,
    so a header claiming [0, 10**30] is refused instead of crashing numpy."""
    if len(shape) > NUMPY_MAX_DIMS:
        return f"{len(shape)} dimensions, more than the {NUMPY_MAX_DIMS} numpy allows"
    total = max(itemsize or 1, 1)
    for size in shape:
        if size > INT64_MAX:
            return f"a dimension of {size}, more than 2**63-1"
        if size:
            total *= size
    if total > INT64_MAX:
        return "more than 2**63-1 bytes (numpy refuses such a shape even with a zero dimension)"
    return None
