"""Slice keys: TensorFlow's OrderedCode encoding of (tensor name, slice).

A stored slice of a partitioned tensor K lives under
NumInc(0) ‖ Str(K) ‖ NumInc(rank) ‖ per dim SNumInc(start) ‖ SNumInc(length)
(FORMAT.md §3); a full dimension is stored as (0, -1).
"""
from __future__ import annotations

from ckpttool.errors import CorruptCheckpoint

# Header bits of a signed number's first two bytes, indexed by its length.
_HEAD0 = [0, 0x80, 0xC0, 0xE0, 0xF0, 0xF8, 0xFC, 0xFE, 0xFF, 0xFF, 0xFF]
_HEAD1 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0xC0]

Extent = tuple[int, int]  # (start, length); length -1 means "the whole dimension"


def encode_num_increasing(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(body)]) + body


def encode_string(raw: bytes) -> bytes:
    return _escape(raw) + b"\x00\x01"


def _escape(raw: bytes) -> bytes:
    out = bytearray()
    for byte in raw:
        if byte == 0x00:
            out += b"\x00\xff"
        elif byte == 0xFF:
            out += b"\xff\x00"
        else:
            out.append(byte)
    return bytes(out)


def encode_signed_num_increasing(value: int) -> bytes:
    magnitude = ~value if value < 0 else value
    length = magnitude.bit_length() // 7 + 1
    body = bytearray((value & ((1 << 80) - 1)).to_bytes(10, "big")[10 - length :])
    body[0] ^= _HEAD0[length]
    if length > 1:
        body[1] ^= _HEAD1[length]
    return bytes(body)


def encode_slice_key(name: bytes, extents: list[Extent] | tuple[Extent, ...]) -> bytes:
    out = bytearray(encode_num_increasing(0))
    out += encode_string(name)
    out += encode_num_increasing(len(extents))
    for start, length in extents:
        out += encode_signed_num_increasing(start)
        out += encode_signed_num_increasing(length)
    return bytes(out)


class _Cursor:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CorruptCheckpoint("truncated slice key")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def num_increasing(self) -> int:
        (n,) = self.take(1)
        return int.from_bytes(self.take(n), "big") if n else 0

    def string(self) -> bytes:
        out = bytearray()
        while True:
            (byte,) = self.take(1)
            if byte == 0x00:
                (nxt,) = self.take(1)
                if nxt == 0x01:
                    return bytes(out)
                if nxt != 0xFF:
                    raise CorruptCheckpoint("bad escape in slice key")
                out.append(0x00)
            elif byte == 0xFF:
                (nxt,) = self.take(1)
                if nxt != 0x00:
                    raise CorruptCheckpoint("bad escape in slice key")
                out.append(0xFF)
            else:
                out.append(byte)

    def signed_num_increasing(self) -> int:
        (first,) = self.take(1)
        negative = first < 0x80
        probe = first ^ 0xFF if negative else first
        length = 0
        while length < 8 and probe & (0x80 >> length):
            length += 1
        if length == 8:
            if self.pos >= len(self.data):
                raise CorruptCheckpoint("truncated slice key")
            second = self.data[self.pos] ^ (0xFF if negative else 0)
            length = 8 if second < 0x80 else 9 if second < 0xC0 else 10
        self.pos -= 1
        body = bytearray(self.take(length))
        if negative:
            body = bytearray(b ^ 0xFF for b in body)
        body[0] ^= _HEAD0[length]
        if length > 1:
            body[1] ^= _HEAD1[length]
        magnitude = int.from_bytes(body, "big")
        return ~magnitude if negative else magnitude


def decode_slice_key(key: bytes) -> tuple[bytes, tuple[Extent, ...]]:
    """(tensor name, extents) of a slice key; CorruptCheckpoint if malformed."""
    cursor = _Cursor(key)
    if cursor.num_increasing() != 0:
        raise CorruptCheckpoint("slice key does not start with 0")
    name = cursor.string()
    rank = cursor.num_increasing()
    if rank > 64:
        raise CorruptCheckpoint("slice key has an absurd rank")
    extents = tuple((cursor.signed_num_increasing(), cursor.signed_num_increasing()) for _ in range(rank))
    if cursor.pos != len(key):
        raise CorruptCheckpoint("trailing bytes after slice key")
    return name, extents
