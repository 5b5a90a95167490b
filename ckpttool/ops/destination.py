"""Where commands write (freeze/export-json `-o`, rename-vars and convert DST):
refused when it would replace a directory or, without --overwrite, a file;
missing parent directories are created (as tf.io.gfile.makedirs would), only
once there is something to write."""
from __future__ import annotations

import os
import time

from ckpttool.errors import BadInput, Refused
from ckpttool.storage import fs
from ckpttool.storage.atomic import write_bytes_atomic
from ckpttool.formats.tf.state import CheckpointState


def check_destination(path: str, overwrite: bool) -> str:
    """The absolute output path (or URL); Refused (exit 4) naming what is in the way, checked before
    any work."""
    path = fs.absolute(path)
    found = fs.stat_path(path)
    if found is not None and found.kind == "dir" or fs.is_url(path) and fs.is_dir(path):
        raise Refused(f"{path} is a directory; refusing to replace it with a file", hint="name a file inside it")
    if found is not None and not overwrite:
        raise Refused(f"{path} exists (use --overwrite to replace it)")
    if not fs.is_url(path):
        check_parent_creatable(path)
    return path


def refuse_writing_over_source(sources: list[str], destinations: list[str], command: str) -> None:
    """SRC is never modified: Refused if a path to be written or replaced is one of the files the
    command reads, however it is reached (the same name, a symlink, a bind mount, a file:// URL, a
    protocol alias such as s3a:// for s3://): storage's canonical identity of each is compared."""
    owner = {key: source for source in sources for key in fs.identity(source)}
    for path in destinations:
        source = next((owner[key] for key in fs.identity(path) if key in owner), None)
        if source is not None:
            raise Refused(f"destination {path} is the source's {source}; {command} never modifies SRC")


def files_read(target, given: str | None = None) -> list[str]:
    """Every file a command reading `target` (a resolved Target) reads, to protect them all: the
    path as given, the checkpoint's prefix, index, data shards and graph, the run directory's state
    file, and for a SavedModel every file under its directory (its graph, variables, assets)."""
    from ckpttool.formats.tf.state import STATE_FILENAME

    files = [path for path in (given, target.prefix, target.prefix + ".index", target.meta_path) if path]
    if target.saved_model_dir:
        for current, _dirs, names in fs.walk_files(target.saved_model_dir):
            files.extend(fs.join(current, name) for name in names)
    elif target.directory:
        files.append(fs.join(target.directory, STATE_FILENAME))
    stem = fs.basename(target.prefix) + ".data-"
    try:
        files.extend(e.path for e in fs.list_dir(fs.dirname(target.prefix) or ".") if e.name.startswith(stem))
    except (BadInput, OSError):
        pass  # no directory to list (a graph-only SavedModel): no data shards either
    return files


def check_parent_creatable(path: str) -> None:
    """BadInput unless the directories above `path` exist or can be made (no file is in the way)."""
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BadInput(f"cannot create {path}: {parent} is a file, not a directory")


def write_destination(path: str, data: bytes) -> None:
    """Create the missing parent directories, then write `data` atomically (a bucket: one whole object)."""
    if fs.is_url(path):
        fs.write_atomic(path, data)
        return
    created = make_parents(path)
    try:
        write_bytes_atomic(path, data)
    except BaseException:
        remove_empty(created)
        raise


def make_parents(path: str) -> list[str]:
    """Create the missing directories above `path`; those created, deepest first (for remove_empty)."""
    missing = []
    parent = os.path.dirname(fs.local_absolute(path))
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    os.makedirs(os.path.dirname(fs.local_absolute(path)), exist_ok=True)
    return missing


def remove_empty(directories: list[str]) -> None:
    """Undo make_parents after a failed write: remove those directories that are still empty."""
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:
            return  # not empty (someone else's now) or gone: leave it and those above it


def update_destination_state(destination: str) -> None:
    from ckpttool.formats.tf.state import read_state, write_state
    from ckpttool.ops.runs.statefile import update_state

    directory, name = fs.dirname(destination), fs.basename(destination)

    def add(state: CheckpointState) -> CheckpointState:
        paths = [p for p in state.all_model_checkpoint_paths if fs.basename(p) != name]
        times_ok = len(state.all_model_checkpoint_timestamps) == len(state.all_model_checkpoint_paths)
        stamps = [t for p, t in zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps)
                  if fs.basename(p) != name] if times_ok else []
        return CheckpointState(name, tuple(paths + [name]),
                               tuple(stamps + [time.time()]) if times_ok else (), state.last_preserved_timestamp)

    try:
        existing = read_state(directory)
    except BadInput:
        existing = None  # an unparseable state file is replaced, as TensorFlow's next save would
    if existing is None or update_state(directory, add) is False:  # no usable state file: start one
        write_state(directory, CheckpointState(name, (name,), (time.time(),)))
