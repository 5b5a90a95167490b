"""Parsing of the small protobuf messages in checkpoint indexes, without numpy,
so that directory scans (ls, latest, prune) start fast.

The bundle header and the index entries (BundleEntryProto, one per stored
tensor) are decoded by hand when they are encoded as TensorFlow writes them:
each field at most once, no unknown fields. That spares the protobuf import
on the fast paths and a message object per entry (an index may hold 100,000).
Anything else (a repeated singular field, an unknown field, a varint out of
the fast path's range) goes to protobuf itself, so what is accepted and how
it reads never differs from the protobuf parse.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable, NamedTuple, Union

from ckpttool.errors import CorruptCheckpoint, Unsupported
from ckpttool.formats.tf.proto_errors import decode_error_text
from ckpttool.text import excerpt

MAX_RANK = 254  # TensorFlow's TensorShape::MaxDimensions
# numpy must be able to shape any tensor we return: its element count, empty
# dimensions left out, times the widest element (16 bytes) must fit an int64.
# (TensorFlow's own bound is 2^63 - 1 elements; no file holds either.)
MAX_ELEMENTS = ((1 << 63) - 1) // 16

# What a message is about, for errors: a string, or a function making it (an
# index of 100,000 entries should not format 100,000 messages it never shows).
What = Union[str, Callable[[], str]]

_INT32_LIMIT = 1 << 31
_INT64_LIMIT = 1 << 63


def _said(what: What) -> str:
    return what() if callable(what) else what


def _pb():
    from ckpttool.formats.tf.protos import checkpoint_pb2

    return checkpoint_pb2


def parse_message(message_type, data: bytes, what: What):
    message = message_type()
    try:
        message.ParseFromString(data)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise CorruptCheckpoint(f"{_said(what)}: unparseable {message_type.__name__} ({decode_error_text(exc)})") from None
    return message


def extents_of(slice_proto) -> tuple[tuple[int, int], ...]:
    """(start, length) per dimension; length -1 for a full dimension."""
    return tuple((e.start, e.length if e.HasField("length") else -1) for e in slice_proto.extent)


def shape_of(shape_proto, what: What) -> tuple[int, ...]:
    return checked_shape(tuple([d.size for d in shape_proto.dim]), shape_proto.unknown_rank, what)


def checked_shape(dims: tuple[int, ...], unknown_rank: bool, what: What) -> tuple[int, ...]:
    """`dims` if TensorFlow could hold a tensor of that shape; Unsupported / CorruptCheckpoint otherwise."""
    if unknown_rank:
        raise Unsupported(f"{_said(what)}: tensor of unknown rank")
    if len(dims) > MAX_RANK:
        raise CorruptCheckpoint(f"{_said(what)}: shape of rank {len(dims)} (TensorFlow allows {MAX_RANK})")
    if dims and min(dims) < 0:
        raise CorruptCheckpoint(f"{_said(what)}: negative dimension in shape {list(dims)}")
    count = prod(dims)
    # [0, 3, 2^62] is empty, yet no array can have that shape: count without the zeros then.
    if count > MAX_ELEMENTS or (count == 0 and prod(d for d in dims if d) > MAX_ELEMENTS):
        raise CorruptCheckpoint(f"{_said(what)}: shape {list(dims)} is too large for any tensor")
    return dims


# -- hand decoding of the canonical encoding ---------------------------------------

class _NotCanonical(Exception):
    """Raised inside the fast decoder: let protobuf parse this message."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A varint of at most 9 bytes (values below 2^63). May read past the field it belongs
    to (IndexError past the data): callers check where it ended."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    second = data[pos + 1]
    if second < 0x80:  # offsets and sizes: mostly two to four bytes
        return byte & 0x7F | second << 7, pos + 2
    result, shift, pos = byte & 0x7F | (second & 0x7F) << 7, 14, pos + 1
    while shift < 63:
        pos += 1
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
        shift += 7
    raise _NotCanonical


def _optional_varint(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """The varint field `tag` at `pos` and the position after it; (0, pos) when the field is
    not there (proto3 leaves out zeros)."""
    if pos < end and data[pos] == tag:
        return _varint(data, pos + 1)
    return 0, pos


def _submessage(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The bounds of a length-delimited field's payload."""
    length, pos = _varint(data, pos)
    if pos + length > end:
        raise _NotCanonical
    return pos, pos + length


def _dims(data: bytes, pos: int, end: int) -> tuple[tuple[int, ...], bool]:
    """TensorShapeProto: sizes of unnamed dims, then unknown_rank at most once."""
    dims = []
    while pos < end and data[pos] == 0x12:
        length = data[pos + 1]
        if length == 0:  # a dim of size 0, written as an empty message
            dims.append(0)
            pos += 2
            continue
        if data[pos + 2] != 0x08:  # a name, or fields out of order
            raise _NotCanonical
        size, after = _varint(data, pos + 3)
        if after != pos + 2 + length:
            raise _NotCanonical
        dims.append(size)
        pos = after
    unknown_rank = False
    if pos < end and data[pos] == 0x18 and data[pos + 1] <= 1:
        unknown_rank = data[pos + 1] == 1
        pos += 2
    if pos != end:
        raise _NotCanonical
    return tuple(dims), unknown_rank


def _extents(data: bytes, pos: int, end: int) -> tuple[tuple[int, int], ...]:
    """TensorSliceProto: (start, length) per extent, length -1 when not set."""
    extents = []
    while pos < end:
        if data[pos] != 0x0A:
            raise _NotCanonical
        start, stop = _submessage(data, pos + 1, end)
        begin, length = 0, -1
        if start < stop and data[start] == 0x08:
            begin, start = _varint(data, start + 1)
        if start < stop and data[start] == 0x10:
            length, start = _varint(data, start + 1)
        if start != stop:
            raise _NotCanonical
        extents.append((begin, length))
        pos = stop
    return tuple(extents)


class EntryFields(NamedTuple):
    """A BundleEntryProto's fields (FORMAT.md §3), as plain values."""

    dtype: int
    dims: tuple[int, ...]
    unknown_rank: bool
    shard_id: int
    offset: int
    size: int
    crc32c: int
    slices: tuple[tuple[tuple[int, int], ...], ...]  # per stored slice: (start, length) per dimension


_NO_SLICES: tuple = ()
_new_tuple = tuple.__new__  # EntryFields without NamedTuple's slower constructor


def _fast_entry(data: bytes) -> EntryFields:
    """Decode the encoding TensorFlow writes: fields 1..7 in order, each singular one at most
    once (proto3 leaves out those that are zero)."""
    crc = 0
    dims: tuple[int, ...] = ()
    unknown_rank = False
    slices = _NO_SLICES
    end = len(data)
    try:
        dtype, pos = _optional_varint(data, 0, end, 0x08)
        if pos < end and data[pos] == 0x12:
            start, pos = _submessage(data, pos + 1, end)
            dims, unknown_rank = _dims(data, start, pos)
        shard_id, pos = _optional_varint(data, pos, end, 0x18)
        offset, pos = _optional_varint(data, pos, end, 0x20)
        size, pos = _optional_varint(data, pos, end, 0x28)
        if pos + 5 <= end and data[pos] == 0x35:
            crc = int.from_bytes(data[pos + 1 : pos + 5], "little")
            pos += 5
        while pos < end and data[pos] == 0x3A:
            start, pos = _submessage(data, pos + 1, end)
            slices = (*slices, _extents(data, start, pos))
    except IndexError:  # a varint running off the end
        raise _NotCanonical from None
    # Anything left (another field, one out of order or repeated, where protobuf's merge
    # rules apply) or an int32 field protobuf would truncate: protobuf decides.
    if pos != end or dtype >= _INT32_LIMIT or shard_id >= _INT32_LIMIT:
        raise _NotCanonical
    return _new_tuple(EntryFields, (dtype, dims, unknown_rank, shard_id, offset, size, crc, slices))


def _entry_from_proto(data: bytes, what: What) -> EntryFields:
    entry = parse_message(_pb().BundleEntryProto, data, what)
    return EntryFields(entry.dtype, tuple([d.size for d in entry.shape.dim]), entry.shape.unknown_rank,
                       entry.shard_id, entry.offset, entry.size, entry.crc32c,
                       tuple(extents_of(s) for s in entry.slices))


def parse_entry(data: bytes, what: What) -> EntryFields:
    """An index entry's fields; CorruptCheckpoint when protobuf cannot parse it."""
    try:
        return _fast_entry(data)
    except _NotCanonical:
        return _entry_from_proto(data, what)


@dataclass(frozen=True)
class BundleHeader:
    num_shards: int
    big_endian: bool
    producer: int
    min_consumer: int


def _fast_header(data: bytes) -> tuple[int, int, int, int, tuple[int, ...]]:
    """BundleHeaderProto as TensorFlow writes it: num_shards, endianness, version in order."""
    producer = min_consumer = 0
    bad: list[int] = []
    end = len(data)
    try:
        num_shards, pos = _optional_varint(data, 0, end, 0x08)
        endianness, pos = _optional_varint(data, pos, end, 0x10)
        if pos < end and data[pos] == 0x1A:
            start, pos = _submessage(data, pos + 1, end)
            producer, start = _optional_varint(data, start, pos, 0x08)
            min_consumer, start = _optional_varint(data, start, pos, 0x10)
            while start < pos and data[start] == 0x18:
                value, start = _varint(data, start + 1)
                bad.append(value)
            if start != pos:
                raise _NotCanonical
    except IndexError:
        raise _NotCanonical from None
    if pos != end or max(num_shards, endianness, producer, min_consumer, *bad) >= _INT32_LIMIT:
        raise _NotCanonical
    return num_shards, endianness, producer, min_consumer, tuple(bad)


def _header_from_proto(data: bytes, source: str) -> tuple[int, int, int, int, tuple[int, ...]]:
    header = parse_message(_pb().BundleHeaderProto, data, source)
    version = header.version
    return header.num_shards, header.endianness, version.producer, version.min_consumer, tuple(version.bad_consumers)


_BIG_ENDIAN = 1  # BundleHeaderProto.Endianness.BIG


def parse_header(value: bytes, source: str) -> BundleHeader:
    try:
        num_shards, endianness, producer, min_consumer, bad_consumers = _fast_header(value)
    except _NotCanonical:
        num_shards, endianness, producer, min_consumer, bad_consumers = _header_from_proto(value, source)
    if producer < 0 or min_consumer > 1 or 1 in bad_consumers:
        raise Unsupported(f"{source}: written by an incompatible TensorFlow "
                          f"(producer {producer}, min_consumer {min_consumer})")
    if num_shards < 1:
        raise CorruptCheckpoint(f"{source}: header says {num_shards} shards")
    return BundleHeader(num_shards, endianness == _BIG_ENDIAN, producer, min_consumer)
