"""Data shard file names and which of them are missing, without numpy (directory
scans use this; reading tensors is formats/tf/bundle.py's job).

V1 checkpoints saved sharded are files `P-00000-of-00002`, `P-00001-of-00002`
(with the graph in `P.meta`); TensorFlow names the checkpoint by the pattern
`P-?????-of-00002`, in the state file and in tf.train.latest_checkpoint, and
tf.train.load_checkpoint reads every file the pattern matches.
"""
from __future__ import annotations

import re

from ckpttool.storage import fs

_V1_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<shard>\d{5})-of-(?P<count>\d{5})$")
_V1_PATTERN_RE = re.compile(r"^(?P<stem>.+)-\?{5}-of-(?P<count>\d{5})$")


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
