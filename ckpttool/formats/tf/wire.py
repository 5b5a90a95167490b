"""Varints and little-endian fixed-width integers, as LevelDB tables and
TensorFlow's string tensors encode them."""
from __future__ import annotations

import struct

from ckpttool.errors import CorruptCheckpoint

_FIXED32 = struct.Struct("<I")
_FIXED64 = struct.Struct("<Q")


def decode_varint(buf: bytes | memoryview, pos: int, what: str = "varint") -> tuple[int, int]:
    """Value and the position after it; raises CorruptCheckpoint when cut short or over 64 bits."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise CorruptCheckpoint(f"truncated {what}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise CorruptCheckpoint(f"malformed {what}")


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints here are unsigned")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_fixed32(buf: bytes | memoryview, pos: int) -> int:
    return _FIXED32.unpack_from(buf, pos)[0]


def encode_fixed32(value: int) -> bytes:
    return _FIXED32.pack(value)


def encode_fixed64(value: int) -> bytes:
    return _FIXED64.pack(value)
