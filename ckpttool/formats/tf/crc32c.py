"""CRC-32C (Castagnoli) and the LevelDB/TensorFlow checksum mask.

google-crc32c uses the CPU's CRC instruction where there is one, and lets
other threads run while it checksums a `bytes` object of 1 MiB or more.
Every CRC that TensorFlow stores is masked (FORMAT.md §0). `combine` joins
the CRCs of two adjacent pieces, so pieces of one tensor can be checked in
parallel.
"""
from __future__ import annotations

import google_crc32c

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_TOP = 1 << 31  # x^0 in the reflected representation


def _readonly(data: bytes | bytearray | memoryview) -> bytes:
    # google-crc32c accepts only `bytes`; chunks we read from files already are.
    return data if isinstance(data, bytes) else bytes(data)


def crc32c(data: bytes | bytearray | memoryview) -> int:
    return google_crc32c.value(_readonly(data))


def extend(crc: int, data: bytes | bytearray | memoryview) -> int:
    """CRC of (whatever gave `crc`) followed by `data`; extend(0, d) == crc32c(d)."""
    return google_crc32c.extend(crc, _readonly(data))


def extend_view(crc: int, data: bytes | bytearray | memoryview) -> int:
    """extend() over a piece of a reused buffer without copying it: google-crc32c refuses buffers
    with a release hook (memoryview, bytearray), not a ctypes array over the same memory (ctypes,
    not numpy: a plain copy imports no numpy). A read-only view is copied, as extend() does."""
    if isinstance(data, bytes):
        return google_crc32c.extend(crc, data)
    view = memoryview(data)
    if view.readonly or not view.c_contiguous:
        return google_crc32c.extend(crc, view.tobytes())
    import ctypes

    return google_crc32c.extend(crc, (ctypes.c_char * view.nbytes).from_buffer(view))


def mask(crc: int) -> int:
    rotated = ((crc >> 15) | (crc << 17)) & _U32
    return (rotated + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    rotated = (masked - _MASK_DELTA) & _U32
    return ((rotated >> 17) | (rotated << 15)) & _U32


# -- combining: crc(A ‖ B) from crc(A), crc(B) and len(B) --------------------------
# As zlib's crc32_combine: crc(A ‖ B) = crc(A) · x^(8·len(B)) mod P  xor  crc(B),
# polynomials over GF(2) in the reflected bit order.

def _multiply(a: int, b: int) -> int:
    """a · b modulo the polynomial."""
    product = 0
    bit = _TOP
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


_x_powers: tuple[int, ...] = ()  # x^(2^k) mod P for k = 0..63, made on first use


def _x_power(n: int) -> int:
    """x^n mod P, for n < 2^64."""
    global _x_powers
    if not _x_powers:
        powers = [_TOP >> 1]  # x^1
        while len(powers) < 64:
            powers.append(_multiply(powers[-1], powers[-1]))
        _x_powers = tuple(powers)
    result, k = _TOP, 0
    while n:
        if n & 1:
            result = _multiply(_x_powers[k], result)
        n >>= 1
        k += 1
    return result


def combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """The CRC-32C of A ‖ B, given crc32c(A), crc32c(B) and len(B)."""
    return _multiply(_x_power(8 * length_b), crc_a) ^ crc_b
