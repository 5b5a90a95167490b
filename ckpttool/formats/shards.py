"""Data shard file names and which of them are missing, without numpy (directory
scans use this; reading tensors is formats/bundle.py's job)."""
from __future__ import annotations


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
