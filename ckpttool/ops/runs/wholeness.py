"""Whether a TF checkpoint's data shards hold what its index says: each as long as the end of the
last tensor its index puts there. A full disk or a copy cut short leaves every file in place and a
shard shorter (TensorFlow cannot restore it), which the scan, reading no index in full, calls
complete. The index is read here, so this is asked only of the checkpoints an answer depends on:
the newest, and older ones only while newer ones are found cut short (`latest --complete` and
prune's protection of the newest whole checkpoint). Equal sizes prove nothing, in a bucket or not:
a string tensor's bytes are its value's, so a shard cut to exactly an older save's size is found
only by its own index."""
from __future__ import annotations

import os
from typing import Iterable

from ckpttool.errors import CkptError
from ckpttool.formats.tf.shards import data_file_path, shard_ends
from ckpttool.ops.runs.scan import CheckpointInfo
from ckpttool.storage import fs


def data_cut_short(prefix: str) -> str | None:
    """Why the V2 checkpoint at `prefix` has a data shard shorter than its index says (or missing,
    or an index that cannot be read), or None when every shard is long enough."""
    name = fs.basename(prefix)
    try:
        num_shards, ends = shard_ends(prefix)
        for shard_id, end in sorted(ends.items()):
            path = data_file_path(prefix, shard_id, num_shards)
            size = _size(path)
            if size is None or size < end:
                return f"{name}'s {fs.basename(path)} has {size or 0} bytes, its index says {end}"
    except (CkptError, OSError) as exc:
        return f"{name} cannot be read whole ({exc})"
    return None


def _size(path: str) -> int | None:
    """The shard's size as TensorFlow opens it: locally through a symlink (stat_path's lstat would
    give the link's own size)."""
    found = fs.stat_path(path)
    if found is not None and found.kind == "link":
        try:
            return os.stat(path).st_size
        except OSError:
            return None
    return found.size if found is not None else None


def first_whole(preferred_first: Iterable[CheckpointInfo]) -> tuple[CheckpointInfo | None, list[str]]:
    """The first of `preferred_first` (newest first, best first) whose data is whole (a V1
    checkpoint, whose one file the scan checked, or a series member: as it is), and why each before
    it is not; reads indexes only until then."""
    cut: list[str] = []
    for c in preferred_first:
        problem = data_cut_short(c.prefix) if c.format == "v2" else None
        if problem is None:
            return c, cut
        cut.append(problem)
    return None, cut


def summary(cut: list[str]) -> str:
    """The first two reasons, and that there are more: a warning or a kept reason stays one line."""
    return "; ".join(cut[:2]) + (" ..." if len(cut) > 2 else "")
