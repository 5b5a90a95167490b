"""The LevelDB-style sorted table behind every `.index` file and V1 checkpoint.

Layout (FORMAT.md §2): data blocks | metaindex block | index block | 48-byte
footer. Every block carries a type byte and a masked CRC-32C, which the
reader checks. Blocks are stored plain (type 0) or Snappy-compressed (type 1,
raw unframed Snappy, CRC over the compressed bytes): TensorFlow builds
compiled with Snappy compress a block whenever that pays, so both are read.
The writer reproduces TensorFlow's TableBuilder byte for byte (restart
interval 16, 256 KiB blocks, shortest separators, no compression).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

from ckpttool.errors import BadInput, CorruptCheckpoint, Unsupported
from ckpttool.formats.tf.crc32c import crc32c, mask, unmask
from ckpttool.storage.fs import open_input, read_head_and_tail, read_range
from ckpttool.text import excerpt
from ckpttool.formats.tf.wire import decode_fixed32, decode_varint, encode_fixed32, encode_varint

MAGIC = 0xDB4775248B80FB57
MAGIC_BYTES = MAGIC.to_bytes(8, "little")
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # type byte + fixed32 masked crc
BLOCK_SIZE = 262144
RESTART_INTERVAL = 16
_NO_COMPRESSION = 0
_SNAPPY = 1
# The most a Snappy element can expand: a 3-byte copy yields up to 64 bytes.
# A block claiming more than that of its compressed size is not Snappy data,
# and is refused before anything is allocated for it.
_SNAPPY_MAX_EXPANSION = (64, 3)
_KEY_BYTES_PER_FILE_BYTE = 64


@dataclass(frozen=True)
class BlockHandle:
    offset: int
    size: int

    def encode(self) -> bytes:
        return encode_varint(self.offset) + encode_varint(self.size)


def _decode_handle(buf: bytes, pos: int) -> tuple[BlockHandle, int]:
    offset, pos = decode_varint(buf, pos, "block handle")
    size, pos = decode_varint(buf, pos, "block handle")
    return BlockHandle(offset, size), pos


def is_table_file(path: str) -> bool:
    """True if `path` is a regular file ending in the table magic (an .index or a V1 checkpoint)."""
    try:
        _head, tail, size = read_head_and_tail(path, 0, len(MAGIC_BYTES), "checkpoint table")
    except BadInput:
        return False
    return size >= FOOTER_SIZE and tail == MAGIC_BYTES


def read_block(data: bytes, handle: BlockHandle, source: str) -> bytes:
    """The contents of the block at `handle` in the table bytes `data`: CRC checked, decompressed."""
    end = handle.offset + handle.size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise CorruptCheckpoint(f"{source}: block at offset {handle.offset} runs past the end of the file")
    return decode_block(data[handle.offset : end], handle.offset, source)


def decode_block(raw: bytes, offset: int, source: str) -> bytes:
    """A block's contents from its bytes on disk (contents, type byte, masked CRC)."""
    size = len(raw) - BLOCK_TRAILER_SIZE
    if unmask(decode_fixed32(raw, size + 1)) != crc32c(raw[: size + 1]):
        raise CorruptCheckpoint(f"{source}: block checksum mismatch at offset {offset}")
    block_type = raw[size]
    if block_type == _SNAPPY:
        return snappy_block(raw[:size], f"{source}: Snappy-compressed block at offset {offset}")
    if block_type != _NO_COMPRESSION:
        raise CorruptCheckpoint(f"{source}: unknown block compression type {block_type}")
    return raw[:size]


def snappy_block(compressed: bytes, what: str) -> bytes:
    """Raw (unframed) Snappy data decompressed; its stated length is checked before allocating."""
    try:
        length, start = decode_varint(compressed, 0, "Snappy length")
    except CorruptCheckpoint:
        raise CorruptCheckpoint(f"{what} is corrupt (no length)") from None
    factor, per = _SNAPPY_MAX_EXPANSION
    if length > (len(compressed) - start) * factor // per:
        raise CorruptCheckpoint(f"{what} is corrupt: it claims {length} bytes from {len(compressed)} "
                                "compressed ones, more than Snappy can expand")
    try:
        import cramjam
    except ImportError:  # pragma: no cover - a base dependency
        raise Unsupported(f"{what}: reading Snappy-compressed tables needs the cramjam package",
                          hint="pip install cramjam") from None
    out = bytearray(length)
    try:
        written = cramjam.snappy.decompress_raw_into(compressed, out)
    except cramjam.DecompressionError as exc:
        raise CorruptCheckpoint(f"{what} is corrupt ({excerpt(str(exc))})") from None
    if written != length:
        raise CorruptCheckpoint(f"{what} is corrupt: {written} bytes decompressed, {length} stated")
    return bytes(out)


def iter_block(contents: bytes, source: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of one block, in stored order."""
    if len(contents) < 4:
        raise CorruptCheckpoint(f"{source}: block too short")
    num_restarts = decode_fixed32(contents, len(contents) - 4)
    restarts_at = len(contents) - 4 - 4 * num_restarts
    if num_restarts == 0 and len(contents) > 4 or restarts_at < 0:
        raise CorruptCheckpoint(f"{source}: bad restart array")
    pos = 0
    key = b""
    while pos < restarts_at:
        # Three varints, nearly always one byte each: read those inline (an
        # index of 100,000 entries would otherwise make 300,000 calls).
        shared, non_shared, value_len = contents[pos : pos + 3] if pos + 3 <= restarts_at else (128, 0, 0)
        if shared < 128 and non_shared < 128 and value_len < 128:
            pos += 3
        else:
            shared, pos = decode_varint(contents, pos, "block entry")
            non_shared, pos = decode_varint(contents, pos, "block entry")
            value_len, pos = decode_varint(contents, pos, "block entry")
        if shared > len(key) or pos + non_shared + value_len > restarts_at:
            raise CorruptCheckpoint(f"{source}: block entry overruns its block")
        key = key[:shared] + contents[pos : pos + non_shared]
        pos += non_shared
        yield key, contents[pos : pos + value_len]
        pos += value_len


@dataclass(frozen=True)
class TableLayout:
    """Where a table's blocks are: from its footer and its index block."""

    metaindex: BlockHandle
    index: BlockHandle
    data_blocks: tuple[tuple[bytes, BlockHandle], ...]  # (separator key, handle), in key order


def table_layout(data: bytes, source: str = "table") -> TableLayout:
    """The footer and index block of a table held in `data` (CRC checked)."""
    if len(data) < FOOTER_SIZE:
        raise CorruptCheckpoint(f"{source}: file too short to be a checkpoint table ({len(data)} bytes)")
    if data[-8:] != MAGIC_BYTES:
        raise CorruptCheckpoint(f"{source}: not a checkpoint table (bad magic number)")
    footer = data[-FOOTER_SIZE:]
    metaindex, pos = _decode_handle(footer, 0)
    index_handle, _ = _decode_handle(footer, pos)
    blocks = tuple((separator, _decode_handle(handle_bytes, 0)[0])
                   for separator, handle_bytes in iter_block(read_block(data, index_handle, source), source))
    return TableLayout(metaindex, index_handle, blocks)


def read_table(data: bytes, source: str = "table") -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a table held in `data`, checking CRCs and key order."""
    entries: list[tuple[bytes, bytes]] = []
    previous: bytes | None = None
    # Keys are prefix-compressed, so a hostile block could spell out keys far
    # longer than the file; real tables stay within a few times its size.
    key_budget = _KEY_BYTES_PER_FILE_BYTE * len(data) + (1 << 20)
    for _separator, handle in table_layout(data, source).data_blocks:
        for key, value in iter_block(read_block(data, handle, source), source):
            if previous is not None and key <= previous:
                raise CorruptCheckpoint(f"{source}: keys out of order")
            key_budget -= len(key)
            if key_budget < 0:
                raise CorruptCheckpoint(f"{source}: its keys, uncompressed, are far larger than the file")
            previous = key
            entries.append((key, value))
    return entries


def read_table_file(path: str, what: str = "checkpoint table") -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the table file at `path`; NotFound when it cannot be read."""
    with open_input(path, what) as handle:
        data = handle.read()
    return read_table(data, os.path.basename(path))


def first_entry_of_file(path: str, what: str = "checkpoint table",
                        size: int | None = None) -> tuple[bytes, bytes] | None:
    """The first (key, value) of the table file at `path`, read cheaply; None if the file is not usable.

    Directory listings look at every index this way. A plain first block
    starts with its first entry (shared length 0), read from the head of the
    file without CRC checks; a Snappy-compressed one (its first byte, the
    stated length, is never 0) is read whole, CRC checked and decompressed.
    `size`, when the caller knows it, saves a system call.
    """
    try:
        head, tail, size = read_head_and_tail(path, HEAD_BYTES, FOOTER_SIZE, what, size)
    except BadInput:
        return None
    return first_entry_of_head_and_tail(path, head, tail, size, what)


HEAD_BYTES = 4096  # what first_entry_of_file reads from a table's head: a plain first entry's header, and more


def first_entry_of_head_and_tail(path: str, head: bytes, tail: bytes, size: int,
                                 what: str = "checkpoint table") -> tuple[bytes, bytes] | None:
    """first_entry_of_file, given the file's first HEAD_BYTES and last FOOTER_SIZE bytes and its size
    (a Snappy-compressed first block is then read from `path`)."""
    if size < FOOTER_SIZE or tail[-len(MAGIC_BYTES):] != MAGIC_BYTES:
        return None
    if head[:1] == b"\0":
        return first_plain_entry(head)
    try:
        _metaindex, pos = _decode_handle(tail, 0)
        index_handle, _ = _decode_handle(tail, pos)
        index = _read_file_block(path, index_handle, size, what)
        _separator, handle_bytes = next(iter_block(index, path))
        first, _ = _decode_handle(handle_bytes, 0)
        return next(iter_block(_read_file_block(path, first, size, what), path))
    except (BadInput, StopIteration):
        return None


def _read_file_block(path: str, handle: BlockHandle, size: int, what: str) -> bytes:
    """One block of the table file at `path`, without reading the rest of the file."""
    end = handle.offset + handle.size + BLOCK_TRAILER_SIZE
    if end > size - FOOTER_SIZE:
        raise CorruptCheckpoint(f"{path}: block at offset {handle.offset} runs past the end of the file")
    raw = read_range(path, handle.offset, end - handle.offset, what)
    if len(raw) != end - handle.offset:
        raise CorruptCheckpoint(f"{path}: block at offset {handle.offset} runs past the end of the file")
    return decode_block(raw, handle.offset, path)


def first_plain_entry(head: bytes) -> tuple[bytes, bytes] | None:
    """The first (key, value) of an uncompressed first block, from the file's first bytes."""
    if len(head) > 2 and head[1] < 0x80 and head[2] < 0x80:  # one-byte lengths: every index's header
        end = 3 + head[1] + head[2]
        if head[0] != 0 or end > len(head):
            return None
        return head[3 : 3 + head[1]], head[3 + head[1] : end]
    try:
        shared, pos = decode_varint(head, 0)
        non_shared, pos = decode_varint(head, pos)
        value_len, pos = decode_varint(head, pos)
    except CorruptCheckpoint:
        return None
    if shared != 0 or pos + non_shared + value_len > len(head):
        return None
    return head[pos : pos + non_shared], head[pos + non_shared : pos + non_shared + value_len]


class _BlockBuilder:
    def __init__(self, restart_interval: int):
        self.restart_interval = restart_interval
        self.reset()

    def reset(self) -> None:
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def empty(self) -> bool:
        return not self.buffer

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        self.buffer += encode_varint(shared) + encode_varint(len(key) - shared) + encode_varint(len(value))
        self.buffer += key[shared:] + value
        self.last_key = key
        self.counter += 1

    def finish(self) -> bytes:
        out = self.buffer + b"".join(encode_fixed32(r) for r in self.restarts)
        out += encode_fixed32(len(self.restarts))
        return bytes(out)


def block_contents(items: Iterable[tuple[bytes, bytes]], restart_interval: int = RESTART_INTERVAL) -> bytes:
    """One block's contents (entries and restart array, no trailer) holding `items`."""
    block = _BlockBuilder(restart_interval)
    for key, value in items:
        block.add(key, value)
    return block.finish()


def shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit, as LevelDB's BytewiseComparator picks it."""
    common = 0
    min_len = min(len(start), len(limit))
    while common < min_len and start[common] == limit[common]:
        common += 1
    if common < min_len:
        byte = start[common]
        if byte < 0xFF and byte + 1 < limit[common]:
            return start[:common] + bytes([byte + 1])
    return start


def short_successor(key: bytes) -> bytes:
    """A short key >= `key`: its first non-0xFF byte incremented, the rest cut."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def build_table(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Serialize (key, value) pairs, keys strictly increasing, as TensorFlow's TableBuilder does."""
    out = bytearray()
    data_block = _BlockBuilder(RESTART_INTERVAL)
    index_block = _BlockBuilder(1)
    pending: BlockHandle | None = None
    last_key: bytes | None = None

    def write_block(block: _BlockBuilder) -> BlockHandle:
        contents = block.finish() + bytes([_NO_COMPRESSION])
        handle = BlockHandle(len(out), len(contents) - 1)
        out.extend(contents)
        out.extend(encode_fixed32(mask(crc32c(contents))))
        block.reset()
        return handle

    for key, value in items:
        if last_key is not None and key <= last_key:
            raise ValueError(f"table keys must be strictly increasing: {key!r} after {last_key!r}")
        # TensorFlow flushes a non-empty block before an entry that alone
        # would exceed two blocks' worth.
        if len(key) + len(value) >= 2 * BLOCK_SIZE and not data_block.empty():
            pending = write_block(data_block)
        if pending is not None:
            index_block.add(shortest_separator(last_key, key), pending.encode())
            pending = None
        data_block.add(key, value)
        last_key = key
        if data_block.size_estimate() >= BLOCK_SIZE:
            pending = write_block(data_block)
    if not data_block.empty():
        pending = write_block(data_block)
    if pending is not None:
        index_block.add(short_successor(last_key), pending.encode())
    metaindex = write_block(_BlockBuilder(RESTART_INTERVAL))
    index = write_block(index_block)
    footer = (metaindex.encode() + index.encode()).ljust(40, b"\0") + MAGIC_BYTES
    out.extend(footer)
    return bytes(out)
