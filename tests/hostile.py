"""Helpers for the hostile-input and fuzz tests: crafting checkpoint files that
lie, and running ckpttool with its memory capped.

Under a cap (RLIMIT_AS) an allocation sized by what a file claims instead of
what it holds fails at once, so a test sees it (as exit 3 "out of memory", or
a crash) instead of the machine swapping.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys

from ckpttool.formats.tf import crc32c
from ckpttool.formats.tf.bundle import data_file_path
from ckpttool.formats.tf.bundle_writer import make_entry, write_index
from ckpttool.formats.dtypes import dtype_from_name
from ckpttool.formats.tf.protos import checkpoint_pb2 as pb
from ckpttool.formats.tf.table import MAGIC_BYTES, BlockHandle, block_contents, read_block, table_layout
from ckpttool.formats.tf.wire import encode_fixed32

MEMORY_CAP_MB = 1024  # ckpttool itself needs about 150 MB of address space
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's ckpttool is run


def limit_memory(megabytes: int = MEMORY_CAP_MB) -> None:
    cap = megabytes << 20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run_limited(*args, memory_mb: int = MEMORY_CAP_MB, timeout: float = 300,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m ckpttool ARGS` with its address space capped; the timeout only
    guards against a hang (a FIFO read forever), it is not a measurement."""
    return subprocess.run([sys.executable, "-m", "ckpttool", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})}, cwd=ROOT,
                          preexec_fn=lambda: limit_memory(memory_mb), timeout=timeout)


def assert_clean_exit(proc: subprocess.CompletedProcess, codes=(0, 1, 3)) -> None:
    """An accepted exit code, no traceback, and no allocation that hit the cap."""
    assert proc.returncode in codes, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "out of memory" not in proc.stderr, proc.stderr[-2000:]


def float_entry(shape, shard_id: int, offset: int, size: int | None = None, data: bytes = b"") -> pb.BundleEntryProto:
    """A float32 entry; `size` defaults to what the shape needs, the CRC is that of `data`."""
    count = 1
    for dim in shape:
        count *= dim
    return make_entry(dtype_from_name("float32"), shape, shard_id, offset,
                      count * 4 if size is None else size, crc32c.mask(crc32c.crc32c(data)))


def write_bundle(prefix, entries: dict[bytes, pb.BundleEntryProto], shards: dict[int, bytes],
                 num_shards: int | None = None) -> None:
    """An index with exactly these entries (lies included) and these data shards."""
    num_shards = num_shards or max(1, len(shards))
    for shard_id, data in shards.items():
        with open(data_file_path(str(prefix), shard_id, num_shards), "wb") as handle:
            handle.write(data)
    write_index(str(prefix), num_shards, entries)


def slice_proto(extents) -> pb.TensorSliceProto:
    proto = pb.TensorSliceProto()
    for start, length in extents:
        extent = proto.extent.add()
        extent.start = start
        if length != -1:
            extent.length = length
    return proto


def block_bytes(contents: bytes, block_type: int) -> bytes:
    """A table block as stored: contents, type byte, masked CRC of both."""
    trailer = bytes([block_type])
    return contents + trailer + encode_fixed32(crc32c.mask(crc32c.crc32c(contents + trailer)))


def _snappy(raw: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.compress_raw(raw))


def snappy_table(data: bytes, compress=_snappy) -> bytes:
    """The same table with every block Snappy-compressed (type 1, CRC over the
    compressed bytes and the type byte), as a TensorFlow built with Snappy
    writes it; block boundaries and keys unchanged."""
    layout = table_layout(data)
    out = bytearray()

    def put(contents: bytes) -> BlockHandle:
        compressed = compress(contents)
        handle = BlockHandle(len(out), len(compressed))
        out.extend(block_bytes(compressed, 1))
        return handle

    index = [(separator, put(read_block(data, handle, "table")).encode()) for separator, handle in layout.data_blocks]
    metaindex = put(read_block(data, layout.metaindex, "table"))
    index_handle = put(block_contents(index, restart_interval=1))
    out.extend((metaindex.encode() + index_handle.encode()).ljust(40, b"\0") + MAGIC_BYTES)
    return bytes(out)
