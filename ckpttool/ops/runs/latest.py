"""The newest checkpoint of a directory, as tf.train.latest_checkpoint finds
it, and also when TensorFlow would give up (moved directory, no or broken
state file)."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace

from ckpttool.errors import CkptError, NotFound
from ckpttool.storage import fs
from ckpttool.formats.tf.state import read_state
from ckpttool.formats.tf.table import is_table_file
from ckpttool.text import excerpt
from ckpttool.formats.tf.shards import checkpoint_exists, shard_count
from ckpttool.ops.runs.scan import (TF_FORMATS, CheckpointInfo, DirectoryScan, newest_complete_prefix, newest_order,
                                    resolve_state_entry, scan_directory, split_step)
from ckpttool.ops.runs.wholeness import data_cut_short, first_whole, summary


@dataclass(frozen=True)
class LatestResult:
    directory: str  # as given
    latest: str | None  # the string tf.train.latest_checkpoint would return
    prefix: str | None  # absolute prefix
    step: int | None
    source: str | None  # "state" | "relocated" | "scan"
    warnings: tuple[str, ...]
    format: str | None = None  # as the scan found it ("v2", "keras", "savedmodel", ...); None: not scanned


def _as_tensorflow_joins(directory: str, recorded: str) -> str:
    """The path TensorFlow makes of a state-file entry: absolute ones (and URLs) as they are."""
    return recorded if fs.is_url(recorded) or os.path.isabs(recorded) else fs.join(directory, recorded)


def find_latest(directory: str, scan: DirectoryScan | None = None, *, complete: bool = False) -> LatestResult:
    """`complete`: never answer an incomplete checkpoint (missing shards, data without
    index, a data shard shorter than its index says), as TensorFlow would: the newest
    complete one instead. Otherwise an incomplete answer comes with a warning; the newest
    complete one on disk (no usable state file entry) is never one cut short either."""
    if not fs.is_url(directory) and not os.path.isdir(directory):
        raise NotFound(f"no such directory: {directory}")
    if scan is None:
        found = _named_by_state_file(directory) or _newest_without_state_file(directory)
        if found is not None and (not _claims_whole(found, complete) or data_cut_short(found.prefix) is None):
            return found
        scan = scan_directory(directory)  # found cut short: the scan walks down from it
    return _whole_answer(directory, scan, _complete_answer(directory, scan, complete), complete)


def _complete_answer(directory: str, scan: DirectoryScan, complete: bool) -> LatestResult:
    result = _latest_of_scan(directory, scan)
    chosen = scan.by_name(fs.basename(result.prefix)) if result.prefix else None
    if chosen is None or chosen.complete:
        return replace(result, warnings=result.warnings + _passed_over(scan, chosen))
    why = next((p.message for p in scan.problems if p.path == chosen.prefix), "files are missing")
    if not complete:
        return replace(result, warnings=result.warnings + (
            f"the latest checkpoint is incomplete: {why} (`ckpttool latest --complete` names the newest "
            "complete one)",))
    newest = scan.latest
    warnings = result.warnings + (f"the latest checkpoint is incomplete: {why}; "
                                  + (f"using {newest.name}" if newest else "no checkpoint is complete"),)
    if newest is None:
        return LatestResult(directory, None, None, None, None, warnings)
    return _result(directory, fs.join(directory, newest.name), newest.prefix, "scan", warnings, newest)


def _claims_whole(result: LatestResult, complete: bool) -> bool:
    """Whether the answer must be a V2 checkpoint whose data shards are whole, read from its index:
    with --complete, and when it is the newest complete one on disk (no usable state file entry).
    A state file's entry without --complete is TensorFlow's answer, given without a read."""
    if result.prefix is None or not (complete or result.source == "scan"):
        return False
    return result.format == "v2" if result.format is not None else _is_plain_file(result.prefix + ".index")


def _whole_answer(directory: str, scan: DirectoryScan, result: LatestResult, complete: bool) -> LatestResult:
    """`result`, or when its data shards are cut short, the newest TF checkpoint below it whose are
    not (none: no answer), with a warning saying why the newer ones were passed over."""
    if not _claims_whole(result, complete):
        return result
    chosen = scan.by_name(fs.basename(result.prefix))
    if chosen is None:
        return result
    below = sorted((c for c in scan.checkpoints if c.complete and c.format in TF_FORMATS
                    and newest_order(c) < newest_order(chosen)), key=newest_order, reverse=True)
    whole, cut = first_whole([chosen, *below])
    if not cut:
        return result
    using = f"using {whole.name}" if whole is not None else "no checkpoint is complete"
    warnings = result.warnings + (f"{summary(cut)}: cut short, TensorFlow cannot restore "
                                  f"{'it' if len(cut) == 1 else 'them'}; {using}",)
    if whole is None:
        return LatestResult(directory, None, None, None, None, warnings)
    return _result(directory, fs.join(directory, whole.name), whole.prefix, "scan", warnings, whole)


def _passed_over(scan: DirectoryScan, chosen: CheckpointInfo | None) -> tuple[str, ...]:
    """What a series' answer (its newest complete member) passed over, as an incomplete TF latest is
    warned about: newer members that are not complete (a Keras file cut short, an uncommitted step),
    and files named like members whose bytes are too damaged to tell."""
    if chosen is not None and chosen.format in TF_FORMATS:
        return ()

    why = {p.path: p.message for p in scan.problems if p.kind == "incomplete_member"}
    newer = [c.prefix for c in scan.checkpoints if c.format not in TF_FORMATS and not c.complete
             and (chosen is None or newest_order(c) > newest_order(chosen)) and c.prefix in why]
    using = f"using {chosen.name}" if chosen is not None else "no checkpoint is complete"
    return tuple(f"{why[path]} (passed over, {using})" for path in newer) + tuple(
        p.message for p in scan.problems if p.kind == "unrecognised")


def _latest_of_scan(directory: str, scan: DirectoryScan) -> LatestResult:
    warnings: list[str] = []
    state = scan.state
    if scan.state_error:
        warnings.append(f"{scan.state_error}; using the newest complete checkpoint on disk")
    elif state is not None and state.model_checkpoint_path:
        recorded = state.model_checkpoint_path
        as_tf = _as_tensorflow_joins(directory, recorded)
        inside = scan.by_name(scan.state_latest) if scan.state_latest else None
        points_inside = inside is not None and fs.real(fs.dirname(as_tf)) == fs.real(scan.directory)
        if points_inside and checkpoint_exists(as_tf):
            return _result(directory, as_tf, inside.prefix, "state", warnings)
        if inside is not None and checkpoint_exists(inside.prefix):
            # A copy of a run directory: its state file still names the original's checkpoints (which
            # tf.train.latest_checkpoint returns while they exist); the copy's own are meant here.
            where = ("points into another directory (copied from there?)" if checkpoint_exists(as_tf)
                     else "does not exist (directory moved?)")
            warnings.append(f"state file names {excerpt(recorded)}, which {where}; using {inside.name} found in "
                            f"{directory}; `ckpttool repair {directory}` rewrites the state file with relative paths")
            return _result(directory, fs.join(directory, inside.name), inside.prefix, "relocated", warnings)
        warnings.append(f"state file names {excerpt(recorded)}, which is not in {directory}; "
                        "using the newest complete checkpoint on disk")
    elif state is None:
        # A series without a state file (Keras files, SavedModel versions, step directories) is as
        # its framework leaves it: its latest is its highest complete step, said without a warning.
        if any(c.format in TF_FORMATS for c in scan.checkpoints):
            warnings.append(_NO_STATE_FILE.format(directory=directory))
    else:
        warnings.append("state file names no latest checkpoint; using the newest complete checkpoint on disk")
    newest = scan.latest
    if newest is None:
        return LatestResult(directory, None, None, None, None, tuple(warnings))
    return _result(directory, fs.join(directory, newest.name), newest.prefix, "scan", warnings, newest)


def _named_by_state_file(directory: str) -> LatestResult | None:
    """The common case without listing the directory: the state file parses and
    names a checkpoint in this directory whose files are there. None when
    anything is off; the full scan then says what and finds another answer. Local only:
    in a bucket the scan (the state file and one listing) costs fewer requests than
    looking at each file."""
    if fs.is_url(directory):
        return None
    try:
        state = read_state(directory)
    except CkptError:
        return None
    if state is None or not state.model_checkpoint_path:
        return None
    absolute = fs.absolute(directory)
    recorded = state.model_checkpoint_path
    name, problem = resolve_state_entry(absolute, recorded)
    if name is None or problem is not None:
        return None
    as_tf = _as_tensorflow_joins(directory, recorded)
    prefix = fs.join(absolute, name)
    # What a scan would find: the index (or V1 file) itself, not through a symlink.
    index_here = _is_plain_file(prefix + ".index") or (_is_plain_file(prefix) and is_table_file(prefix))
    if not index_here or not checkpoint_exists(as_tf):
        return None
    if fs.real(fs.dirname(as_tf)) != fs.real(absolute):
        return None
    if _is_plain_file(prefix + ".index") and not _shards_present(prefix):
        return None  # incomplete: the scan says what is missing
    return _result(directory, as_tf, prefix, "state", [])


def _newest_without_state_file(directory: str) -> LatestResult | None:
    """What the scan answers for a local directory without a state file whose newest complete
    checkpoint is a TF prefix (_latest_of_scan: that prefix, with the warning), found looking at
    the highest steps alone; None when the scan must say (a state file after all, or unreadable;
    no complete TF prefix: a series' member or nothing)."""
    if fs.is_url(directory):
        return None
    try:
        if read_state(directory) is not None:
            return None
    except CkptError:
        return None
    newest = newest_complete_prefix(directory)
    if newest is None:
        return None
    return _result(directory, fs.join(directory, newest.name), newest.prefix, "scan",
                   [_NO_STATE_FILE.format(directory=directory)], newest)


_NO_STATE_FILE = "no state file in {directory}; using the newest complete checkpoint on disk"
_CHECKED_SHARDS = 64  # more than this many shards: the scan counts them


def _shards_present(prefix: str) -> bool:
    """Whether every data shard the V2 index names is there (False when unsure)."""
    index = prefix + ".index"
    count = shard_count(index, os.stat(index).st_size)
    if count is None or count > _CHECKED_SHARDS:
        return False
    return all(_is_plain_file(f"{prefix}.data-{i:05d}-of-{count:05d}") for i in range(count))


def _is_plain_file(path: str) -> bool:
    if fs.is_url(path):
        return fs.is_file(path)
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return False


def _result(directory, shown, prefix, source, warnings, chosen=None) -> LatestResult:
    """`chosen`: the scan's checkpoint, whose step a series member's name alone does not give."""
    step = chosen.step if chosen is not None else split_step(fs.basename(prefix))[1]
    return LatestResult(directory, shown, prefix, step, source, tuple(warnings),
                        chosen.format if chosen is not None else None)
