"""Data shard file names, how many shards an index names (its header, read cheaply) and which
of them are missing, without numpy (directory scans use this; reading tensors is formats/tf/bundle.py's job).

V1 checkpoints saved sharded are files `P-00000-of-00002`, `P-00001-of-00002`
(with the graph in `P.meta`); TensorFlow names the checkpoint by the pattern
`P-?????-of-00002`, in the state file and in tf.train.latest_checkpoint, and
tf.train.load_checkpoint reads every file the pattern matches.
"""
from __future__ import annotations

import re
from functools import lru_cache

from typing import Iterable

from ckpttool.errors import CkptError, CorruptCheckpoint
from ckpttool.formats.tf.messages import parse_entry, parse_header
from ckpttool.formats.tf.table import (FOOTER_SIZE, MAGIC_BYTES, first_entry_of_file, first_entry_of_head_and_tail,
                                      read_table_file)
from ckpttool.storage import fs
from ckpttool.text import quote

_V1_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<shard>\d{5})-of-(?P<count>\d{5})$")
_V1_PATTERN_RE = re.compile(r"^(?P<stem>.+)-\?{5}-of-(?P<count>\d{5})$")


def split_step(name: str) -> tuple[str, int | None]:
    """`model.ckpt-50` -> (`model.ckpt`, 50): the step is the digits after the last dash."""
    family, dash, step = name.rpartition("-")
    return (family, int(step)) if dash and step.isdecimal() else (name, None)


def v1_shard(name: str) -> tuple[str, int, int] | None:
    """(stem, shard, count) of a V1 shard file name `P-SSSSS-of-NNNNN`."""
    match = _V1_SHARD_RE.match(name)
    return (match["stem"], int(match["shard"]), int(match["count"])) if match else None


def v1_pattern(stem: str, count: int) -> str:
    """The name TensorFlow gives a sharded V1 checkpoint: `P-?????-of-NNNNN`."""
    return f"{stem}-?????-of-{count:05d}"


def split_v1_pattern(name: str) -> tuple[str, int] | None:
    """(stem, count) of a sharded V1 checkpoint name `P-?????-of-NNNNN`, None for other names."""
    match = _V1_PATTERN_RE.match(name)
    return (match["stem"], int(match["count"])) if match else None


def v1_shard_names(name: str) -> list[str]:
    """The files of V1 checkpoint `name`: itself, or each shard of a pattern."""
    pattern = split_v1_pattern(name)
    if pattern is None:
        return [name]
    stem, count = pattern
    return [f"{stem}-{i:05d}-of-{count:05d}" for i in range(count)]


def data_file_path(prefix: str, shard_id: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


def missing_shard_ids(num_shards: int, present: set[int], limit: int) -> tuple[list[int], int]:
    """The first `limit` shard ids below `num_shards` not in `present`, and how many are missing
    in all; costs O(len(present) + limit) however large `num_shards` is."""
    if present and (min(present) < 0 or max(present) >= num_shards):
        present = {shard_id for shard_id in present if 0 <= shard_id < num_shards}
    count = num_shards - len(present)
    first, shard_id = [], 0
    while len(first) < min(limit, count):
        if shard_id not in present:
            first.append(shard_id)
        shard_id += 1
    return first, count


def checkpoint_exists(prefix: str) -> bool:
    """What tf.train.latest_checkpoint accepts: `prefix.index` (V2), the file `prefix` (V1), or a
    file of the V1 pattern `P-?????-of-N`."""
    if fs.is_file(prefix + ".index") or fs.is_file(prefix):
        return True
    directory = fs.dirname(prefix)
    return split_v1_pattern(fs.basename(prefix)) is not None and any(
        fs.is_file(fs.join(directory, name) if directory else name) for name in v1_shard_names(fs.basename(prefix)))


DATA_SUFFIX_LEN = len(".data-00000-of-00001")


def data_shard(name: str) -> tuple[int, int] | None:
    """(shard, count) of a data file name `P.data-SSSSS-of-NNNNN` (P not empty)."""
    tail = name[-DATA_SUFFIX_LEN:]
    if tail == ".data-00000-of-00001" and len(name) > DATA_SUFFIX_LEN:
        return 0, 1  # nearly every data file: without parsing the numbers
    if (len(name) > DATA_SUFFIX_LEN and tail.startswith(".data-") and tail[11:15] == "-of-"
            and tail[6:11].isdecimal() and tail[15:].isdecimal()):
        return int(tail[6:11]), int(tail[15:])
    return None


def shard_count(index_path: str, size: int) -> int | None:
    """num_shards from the bundle header, read cheaply; None if the index is unusable."""
    return _shard_count_of_first_entry(first_entry_of_file(index_path, "checkpoint index", size))


def shard_count_of_head_and_tail(index_path: str, head: bytes, tail: bytes, size: int) -> int | None:
    """shard_count, given the index's first HEAD_BYTES and last FOOTER_SIZE bytes (formats/tf/table.py)."""
    # What TensorFlow writes (an uncompressed first block whose first entry, the header, has the
    # empty key and a value shorter than 128 bytes), decoded here as first_plain_entry decodes it:
    # a scan of 100,000 checkpoints takes this path 100,000 times.
    if (size >= FOOTER_SIZE and tail[-8:] == MAGIC_BYTES and len(head) > 2 and head[0] == 0 and head[1] == 0
            and head[2] < 0x80 and 3 + head[2] <= len(head)):
        return _shard_count_of_header(head[3:3 + head[2]])
    return _shard_count_of_first_entry(first_entry_of_head_and_tail(index_path, head, tail, size, "checkpoint index"))


def _shard_count_of_first_entry(first: tuple[bytes, bytes] | None) -> int | None:
    if first is None or first[0] != b"":  # the header's key is the empty string
        return None
    return _shard_count_of_header(first[1])


@lru_cache(maxsize=256)
def _shard_count_of_header(value: bytes) -> int | None:
    # The checkpoints of a directory share a handful of distinct headers.
    try:
        return parse_header(value, "checkpoint index").num_shards
    except CkptError:
        return None


def furthest_ends(parts: Iterable) -> dict[int, int]:
    """Where the last of `parts` (stored tensors: shard_id, offset, size) in each data shard ends.
    An empty tensor ends nowhere: TensorFlow reads none of its bytes, wherever its offset points."""
    ends: dict[int, int] = {}
    for part in parts:
        if not part.size:
            continue
        end = part.offset + part.size
        if end > ends.get(part.shard_id, 0):
            ends[part.shard_id] = end
    return ends


def shard_ends(prefix: str) -> tuple[int, dict[int, int]]:
    """The V2 index's shard count, and where the last tensor it stores in each data shard ends: its
    entries decoded (a partitioned variable's own entry stores nothing, its slices do), no tensor
    model built, so a directory's `latest --complete` can tell a shard cut short without the
    bundle reader. CorruptCheckpoint (NotFound) when the index cannot be read."""
    index = prefix + ".index"
    source = fs.basename(index)
    items = read_table_file(index, "checkpoint index")
    if not items or items[0][0] != b"":
        raise CorruptCheckpoint(f"{source}: no bundle header (is this a checkpoint index?)")
    num_shards = parse_header(items[0][1], source).num_shards
    stored = []
    for key, value in items[1:]:
        entry = parse_entry(value, lambda key=key: f"{source}: entry {quote(key)}")
        if entry.slices:
            continue
        if not 0 <= entry.shard_id < num_shards:
            raise CorruptCheckpoint(f"{source}: entry {quote(key)} names shard {entry.shard_id} of {num_shards}")
        stored.append(entry)
    return num_shards, furthest_ends(stored)
