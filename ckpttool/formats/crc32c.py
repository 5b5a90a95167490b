"""CRC-32C (Castagnoli) and the LevelDB/TensorFlow checksum mask.

google-crc32c uses the CPU's CRC instruction where there is one; every CRC
that TensorFlow stores is masked (FORMAT.md §0).
"""
from __future__ import annotations

import google_crc32c

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _readonly(data: bytes | bytearray | memoryview) -> bytes:
    # google-crc32c accepts only `bytes`; chunks we read from files already are.
    return data if isinstance(data, bytes) else bytes(data)


def crc32c(data: bytes | bytearray | memoryview) -> int:
    return google_crc32c.value(_readonly(data))


def extend(crc: int, data: bytes | bytearray | memoryview) -> int:
    """CRC of (whatever gave `crc`) followed by `data`; extend(0, d) == crc32c(d)."""
    return google_crc32c.extend(crc, _readonly(data))


def mask(crc: int) -> int:
    rotated = ((crc >> 15) | (crc << 17)) & _U32
    return (rotated + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    rotated = (masked - _MASK_DELTA) & _U32
    return ((rotated >> 17) | (rotated << 15)) & _U32
