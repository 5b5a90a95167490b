"""Rewriting a directory's state file: entries made relative, dropped entries
removed with their timestamps. Shared by prune and repair."""
from __future__ import annotations

import os
from typing import Callable

from ckpttool.formats.state import (STATE_FILENAME, CheckpointState, commit_replacement, discard_replacement,
                                    format_state, parse_state, prepare_replacement)
from ckpttool.ops.scan import resolve_state_entry


def without_entries(state: CheckpointState, directory: str, drop: set[str]) -> CheckpointState:
    """`state` minus the checkpoints named in `drop`; entries inside the
    directory become relative names, entries elsewhere are kept verbatim."""
    has_times = len(state.all_model_checkpoint_timestamps) == len(state.all_model_checkpoint_paths)
    times = state.all_model_checkpoint_timestamps if has_times else [None] * len(state.all_model_checkpoint_paths)
    paths, stamps = [], []
    for path, stamp in zip(state.all_model_checkpoint_paths, times):
        name, _problem = resolve_state_entry(directory, path)
        if name in drop:
            continue
        paths.append(name or path)
        stamps.append(stamp)
    latest_name, _problem = resolve_state_entry(directory, state.model_checkpoint_path)
    return CheckpointState(
        model_checkpoint_path=latest_name or state.model_checkpoint_path,
        all_model_checkpoint_paths=tuple(paths),
        all_model_checkpoint_timestamps=tuple(stamps) if has_times else (),
        last_preserved_timestamp=state.last_preserved_timestamp,
    )


def _read_raw(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def update_state(directory: str, transform: Callable[[CheckpointState], CheckpointState], attempts: int = 20) -> bool:
    """Rewrite the state file as transform(current) without losing a concurrent writer's update.

    TensorFlow's savers take no lock, so: prepare and sync the new file, then
    re-read the state file just before the rename and start over if it
    changed meanwhile. Returns False if there is no state file any more.
    """
    path = os.path.join(directory, STATE_FILENAME)
    for _ in range(attempts):
        before = _read_raw(path)
        if before is None:
            return False
        new_text = format_state(transform(parse_state(before.decode("utf-8"), path)))
        tmp = prepare_replacement(path, new_text.encode("utf-8"))
        if _read_raw(path) == before:
            commit_replacement(tmp, path)
            return True
        discard_replacement(tmp)
    raise RuntimeError(f"state file {path} kept changing while it was being rewritten")
