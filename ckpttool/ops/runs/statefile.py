"""Rewriting a directory's state file: entries made relative, dropped entries
removed with their timestamps. Shared by prune and repair."""
from __future__ import annotations

from typing import Callable

from ckpttool.storage import fs
from ckpttool.storage.atomic import commit_replacement, discard_replacement, prepare_replacement
from ckpttool.formats.tf.state import STATE_FILE_CAP, STATE_FILENAME, CheckpointState, format_state, parse_state
from ckpttool.ops.runs.scan import resolve_state_entry


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


def older_than_latest(destination: str) -> str | None:
    """Why making checkpoint `destination` the latest of its directory would surprise: its step is
    older than the latest's (a converted model.ckpt-0 in a run at step 700: training would resume
    from step 0). None when it is newer, has no step, or the directory has no usable state file."""
    from ckpttool.errors import CkptError
    from ckpttool.formats.tf.state import read_state
    from ckpttool.ops.runs.scan import split_step

    directory, name = fs.dirname(destination), fs.basename(destination)
    try:
        state = read_state(directory)
    except CkptError:
        return None
    if state is None or not state.model_checkpoint_path:
        return None
    latest = fs.basename(state.model_checkpoint_path)
    step, latest_step = split_step(name)[1], split_step(latest)[1]
    if step is None or latest_step is None or step >= latest_step or latest == name:
        return None
    return (f"{name} (step {step}) becomes the latest checkpoint in the state file of "
            f"{directory or '.'}, instead of {latest} (step {latest_step}): training would resume from it; "
            "--no-update-state leaves the state file alone")


def _read_raw(path: str, dir_fd: int | None = None) -> bytes | None:
    """The state file's bytes, None if there is none (or it is a link to a file outside the
    directory, never followed: it is then replaced as if there were none)."""
    if dir_fd is None and fs.leaves_its_directory(path):
        return None
    return fs.read_capped(path, STATE_FILE_CAP, "state file", missing_ok=True, dir_fd=dir_fd, inside=True)


def update_state(directory: str, transform: Callable[[CheckpointState], CheckpointState],
                 attempts: int = 50, dir_fd: int | None = None) -> bool | None:
    """Rewrite the state file as transform(current) without losing a concurrent writer's update.

    TensorFlow's savers take no lock, so: prepare and sync the new file, then
    re-read the state file just before the rename and start over if it
    changed meanwhile (a bucket: re-read, then one whole-object write).
    True: rewritten; False: there is no state file; None: a writer kept
    replacing it, so it was left as the writer wrote it. `dir_fd`: the
    descriptor of the local directory, through which the file is read and
    replaced (prune's checked directory).
    """
    import random
    import time

    path = fs.join(directory, STATE_FILENAME)
    for _ in range(attempts):
        before = _read_raw(path, dir_fd)
        if before is None:
            return False
        new_text = format_state(transform(parse_state(before.decode("utf-8"), path))).encode("utf-8")
        if fs.is_url(path):
            if _read_raw(path) == before:
                fs.write_atomic(path, new_text)
                return True
        else:
            tmp = prepare_replacement(path, new_text, dir_fd=dir_fd)
            if _read_raw(path, dir_fd) == before:
                commit_replacement(tmp, path, dir_fd)
                return True
            discard_replacement(tmp, dir_fd)
        time.sleep(random.uniform(0.001, 0.02))  # let the writer's save finish
    return None
