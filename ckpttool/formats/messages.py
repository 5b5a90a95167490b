"""Parsing of the small protobuf messages in checkpoint indexes, without numpy,
so that directory scans (ls, latest, prune) start fast."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable, Union

from ckpttool.errors import CorruptCheckpoint, Unsupported
from ckpttool.formats.proto_errors import decode_error_text
from ckpttool.formats.protos import checkpoint_pb2 as pb

MAX_RANK = 254  # TensorFlow's TensorShape::MaxDimensions
# numpy must be able to shape any tensor we return: its element count, empty
# dimensions left out, times the widest element (16 bytes) must fit an int64.
# (TensorFlow's own bound is 2^63 - 1 elements; no file holds either.)
MAX_ELEMENTS = ((1 << 63) - 1) // 16

# What a message is about, for errors: a string, or a function making it (an
# index of 100,000 entries should not format 100,000 messages it never shows).
What = Union[str, Callable[[], str]]


def _said(what: What) -> str:
    return what() if callable(what) else what


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
    if shape_proto.unknown_rank:
        raise Unsupported(f"{_said(what)}: tensor of unknown rank")
    dims = tuple([d.size for d in shape_proto.dim])
    if len(dims) > MAX_RANK:
        raise CorruptCheckpoint(f"{_said(what)}: shape of rank {len(dims)} (TensorFlow allows {MAX_RANK})")
    if dims and min(dims) < 0:
        raise CorruptCheckpoint(f"{_said(what)}: negative dimension in shape {list(dims)}")
    count = prod(dims)
    # [0, 3, 2^62] is empty, yet no array can have that shape: count without the zeros then.
    if count > MAX_ELEMENTS or (count == 0 and prod(d for d in dims if d) > MAX_ELEMENTS):
        raise CorruptCheckpoint(f"{_said(what)}: shape {list(dims)} is too large for any tensor")
    return dims


@dataclass(frozen=True)
class BundleHeader:
    num_shards: int
    big_endian: bool
    producer: int
    min_consumer: int


def parse_header(value: bytes, source: str) -> BundleHeader:
    header = parse_message(pb.BundleHeaderProto, value, source)
    version = header.version
    if version.producer < 0 or version.min_consumer > 1 or 1 in version.bad_consumers:
        raise Unsupported(f"{source}: written by an incompatible TensorFlow "
                          f"(producer {version.producer}, min_consumer {version.min_consumer})")
    if header.num_shards < 1:
        raise CorruptCheckpoint(f"{source}: header says {header.num_shards} shards")
    return BundleHeader(header.num_shards, header.endianness == pb.BundleHeaderProto.BIG,
                        version.producer, version.min_consumer)
