"""What is in a checkpoint directory: every checkpoint found in the state file
*and* on disk, whether each is complete, and every problem worth reporting.

`ls`, `latest`, `prune` and `repair` all start from `scan_directory`, so they
agree on what a checkpoint is.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ckpttool.errors import CkptError, NotFound
from ckpttool.formats.atomic import TEMP_SUFFIX_RE
from ckpttool.formats.messages import parse_header
from ckpttool.formats.state import STATE_FILENAME, CheckpointState, parse_state, read_state
from ckpttool.formats.table import MAGIC_BYTES, is_table_file, read_first_entry

_DATA_RE = re.compile(r"^(?P<stem>.+)\.data-(?P<shard>\d{5})-of-(?P<count>\d{5})$")
_STEP_RE = re.compile(r"^(?P<family>.*?)-(?P<step>\d+)$")
_TEMPSTATE_RE = re.compile(r"\.tempstate\d+$")
_TEMP_DIR_RE = re.compile(r"_temp(_[0-9a-f]{32})?$")


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    message: str


@dataclass(frozen=True)
class CheckpointInfo:
    name: str  # basename of the prefix, e.g. model.ckpt-50
    prefix: str  # absolute
    family: str  # the prefix stem without its step, e.g. model.ckpt
    step: int | None
    format: str  # "v2" | "v1"
    size_bytes: int
    num_shards: int | None
    complete: bool
    has_meta: bool
    in_state: bool
    is_latest: bool
    mtime: float  # newest modification time of its files
    timestamp: float | None  # save time recorded in the state file
    files: tuple[str, ...]  # absolute paths of every file that belongs to it

    @property
    def time(self) -> float:
        """The checkpoint's age reference: state-file timestamp, else file mtime."""
        return self.timestamp if self.timestamp is not None else self.mtime


@dataclass(frozen=True)
class Leftover:
    """Debris of an interrupted save: a `*_temp` directory or a `.tempstate` file."""

    path: str
    mtime: float
    size_bytes: int


@dataclass(frozen=True)
class DirectoryScan:
    directory: str  # absolute
    checkpoints: tuple[CheckpointInfo, ...]  # oldest first
    problems: tuple[Problem, ...]
    state: CheckpointState | None
    state_error: str | None
    state_latest: str | None  # name of the state file's latest, when it is in this directory
    leftovers: tuple[Leftover, ...] = field(default=())
    # Latest checkpoints named by other state files (Saver(latest_filename=...), e.g.
    # best_checkpoint): name -> that file's name.
    other_latest: dict[str, str] = field(default_factory=dict)

    @property
    def latest(self) -> CheckpointInfo | None:
        return next((c for c in self.checkpoints if c.is_latest), None)

    def by_name(self, name: str) -> CheckpointInfo | None:
        return next((c for c in self.checkpoints if c.name == name), None)


def checkpoint_exists(prefix: str) -> bool:
    """What tf.train.latest_checkpoint accepts: `prefix.index` (V2) or the file `prefix` (V1)."""
    return os.path.isfile(prefix + ".index") or os.path.isfile(prefix)


def split_step(name: str) -> tuple[str, int | None]:
    match = _STEP_RE.match(name)
    return (match["family"], int(match["step"])) if match else (name, None)


def _tree_size(path: str) -> tuple[int, float]:
    total, newest = 0, 0.0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
    try:
        newest = max(newest, os.lstat(path).st_mtime)
    except OSError:
        pass
    return total, newest


def _read_head_and_tail(path: str) -> tuple[bytes, bytes]:
    with open(path, "rb") as handle:
        head = handle.read(4096)
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 8))
        return head, handle.read(8)


def _v2_shard_count(index_path: str) -> int | None:
    """num_shards from the bundle header, read cheaply; None if the index is unusable."""
    try:
        head, tail = _read_head_and_tail(index_path)
    except OSError:
        return None
    if tail != MAGIC_BYTES:
        return None
    first = read_first_entry(head)
    if first is None or first[0] != b"":
        return None
    try:
        return parse_header(first[1], index_path).num_shards
    except CkptError:
        return None


@dataclass
class _Files:
    index: str | None = None
    meta: str | None = None
    v1: str | None = None
    data: dict[int, tuple[str, int]] = field(default_factory=dict)  # shard -> (path, of-count)


def resolve_state_entry(directory: str, entry: str) -> tuple[str | None, Problem | None]:
    """Name of a state-file entry inside `directory`, or the problem with it.

    Absolute paths elsewhere whose basename exists here are stale (the
    directory was moved): they count as that name, with a problem reported.
    Paths that leave the directory are never followed.
    """
    if os.path.isabs(entry):
        parent = os.path.dirname(os.path.normpath(entry))
        if parent == directory or os.path.realpath(parent) == os.path.realpath(directory):
            return os.path.basename(entry), None
        name = os.path.basename(os.path.normpath(entry))
        exists_here = os.path.exists(os.path.join(directory, name + ".index")) or os.path.isfile(
            os.path.join(directory, name))
        if exists_here:
            return name, Problem("stale_path", entry,
                                 f"state file holds absolute path {entry}; found {name} in this directory "
                                 "(directory moved?)")
        return None, Problem("outside", entry, f"state file entry {entry} points outside the directory")
    normalized = os.path.normpath(entry)
    if normalized.startswith("..") or os.sep in normalized or normalized in (".", ""):
        return None, Problem("outside", entry, f"state file entry {entry} leaves the directory")
    return normalized, None


def scan_directory(directory: str) -> DirectoryScan:
    if not os.path.isdir(directory):
        raise NotFound(f"no such directory: {directory}")
    directory = os.path.abspath(directory)
    problems: list[Problem] = []
    state, state_error = None, None
    try:
        state = read_state(directory)
    except CkptError as exc:
        state_error = exc.message
        problems.append(Problem("bad_state_file", os.path.join(directory, STATE_FILENAME), exc.message))

    groups: dict[str, _Files] = {}
    leftovers: list[Leftover] = []
    plain_files: dict[str, os.DirEntry] = {}
    stats: dict[str, os.stat_result] = {}
    with os.scandir(directory) as it:
        entries = list(it)
    for entry in entries:
        name = entry.name
        if entry.is_dir(follow_symlinks=False):
            if _TEMP_DIR_RE.search(name):
                size, mtime = _tree_size(entry.path)
                leftovers.append(Leftover(entry.path, mtime, size))
                problems.append(Problem("temp_dir", entry.path, f"leftover temporary directory {name} "
                                        "from an interrupted save"))
            continue
        if name == STATE_FILENAME or name == STATE_FILENAME + ".bak":
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue  # symlinks and specials are never treated as checkpoint files
            stats[name] = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # renamed or removed since listed: a writer at work
        if _TEMPSTATE_RE.search(name) or TEMP_SUFFIX_RE.search(name):
            leftovers.append(Leftover(entry.path, stats[name].st_mtime, stats[name].st_size))
            problems.append(Problem("temp_file", entry.path, f"leftover temporary file {name}"))
        elif name.endswith(".index"):
            groups.setdefault(name[:-6], _Files()).index = entry.path
        elif name.endswith(".meta"):
            groups.setdefault(name[:-5], _Files()).meta = entry.path
        elif match := _DATA_RE.match(name):
            groups.setdefault(match["stem"], _Files()).data[int(match["shard"])] = (entry.path, int(match["count"]))
        else:
            plain_files[name] = entry

    state_names: dict[str, float | None] = {}
    state_latest = None
    if state is not None:
        for path in state.all_model_checkpoint_paths:
            name, problem = resolve_state_entry(directory, path)
            if problem:
                problems.append(problem)
            if name:
                state_names[name] = state.timestamp_of(path)
        if state.model_checkpoint_path:
            name, problem = resolve_state_entry(directory, state.model_checkpoint_path)
            if problem and problem not in problems:
                problems.append(problem)
            if name:
                state_latest = name
                state_names.setdefault(name, None)

    other_latest = {}
    for name in plain_files:
        if name.endswith(STATE_FILENAME) and stats[name].st_size < 1 << 20:
            latest = _other_state_latest(directory, name)
            if latest:
                other_latest[latest] = name

    # V1 checkpoints are bare table files: look only at names that something
    # else marks as checkpoints (the state file, a .meta beside them).
    for name, entry in plain_files.items():
        marked = name in state_names or (name in groups and groups[name].index is None)
        if marked and is_table_file(entry.path):
            groups.setdefault(name, _Files()).v1 = entry.path

    checkpoints = []
    for name, files in groups.items():
        info = _describe(directory, name, files, stats, state_names, problems)
        if info is not None:
            checkpoints.append(info)
    for name in state_names:
        if name not in groups:
            problems.append(Problem("missing_checkpoint", os.path.join(directory, name),
                                    f"state file lists {name}, whose files are gone"))

    latest_name = state_latest if state_latest and any(
        c.name == state_latest and c.complete for c in checkpoints) else None
    if latest_name is None:
        complete = [c for c in checkpoints if c.complete]
        if complete:
            latest_name = max(complete, key=lambda c: (c.mtime, c.step or 0)).name
    checkpoints = [_with_latest(c, c.name == latest_name) for c in checkpoints]
    checkpoints.sort(key=lambda c: (c.step if c.step is not None else -1, c.time, c.name))
    return DirectoryScan(directory, tuple(checkpoints), tuple(problems), state, state_error,
                         state_latest, tuple(sorted(leftovers, key=lambda l: l.path)), other_latest)


def _other_state_latest(directory: str, filename: str) -> str | None:
    """The latest named by another state file (`best_checkpoint`), if it parses as one."""
    try:
        with open(os.path.join(directory, filename), "rb") as handle:
            state = parse_state(handle.read().decode("utf-8"), filename)
    except (CkptError, OSError, UnicodeDecodeError):
        return None
    if not state.model_checkpoint_path:
        return None
    name, _problem = resolve_state_entry(directory, state.model_checkpoint_path)
    return name


def _with_latest(info: CheckpointInfo, is_latest: bool) -> CheckpointInfo:
    from dataclasses import replace

    return replace(info, is_latest=is_latest)


def _describe(directory, name, files: _Files, stats, state_names, problems) -> CheckpointInfo | None:
    paths = [p for p in (files.index, files.meta, files.v1) if p] + [p for p, _ in files.data.values()]
    if files.index is None and files.v1 is None and not files.data:
        # A lone .meta (a graph without its checkpoint) is not a checkpoint.
        problems.append(Problem("orphan_meta", files.meta, f"{os.path.basename(files.meta)} has no checkpoint"))
        return None
    fmt = "v1" if files.v1 and not files.index else "v2"
    complete, num_shards = True, None
    if fmt == "v2":
        counts = {count for _, count in files.data.values()}
        if files.index is None:
            complete = False
            num_shards = max(counts) if counts else None
            problems.append(Problem("data_without_index", os.path.join(directory, name),
                                    f"{name} has data files but no .index (interrupted save?)"))
        else:
            num_shards = _v2_shard_count(files.index)
            if num_shards is None:
                complete = False
                problems.append(Problem("bad_index", files.index, f"{name}.index is incomplete or corrupt"))
            else:
                missing = [i for i in range(num_shards)
                           if i not in files.data or files.data[i][1] != num_shards]
                if missing:
                    complete = False
                    problems.append(Problem("missing_shards", os.path.join(directory, name),
                                            f"{name} is missing data shard(s) "
                                            + ", ".join(f"{i:05d}-of-{num_shards:05d}" for i in missing)))
    family, step = split_step(name)
    sizes = [stats[os.path.basename(p)].st_size for p in paths]
    mtimes = [stats[os.path.basename(p)].st_mtime for p in paths if p != files.meta] or [
        stats[os.path.basename(p)].st_mtime for p in paths]
    return CheckpointInfo(
        name=name, prefix=os.path.join(directory, name), family=family, step=step, format=fmt,
        size_bytes=sum(sizes), num_shards=num_shards if fmt == "v2" else 1, complete=complete,
        has_meta=files.meta is not None, in_state=name in state_names, is_latest=False,
        mtime=max(mtimes), timestamp=state_names.get(name), files=tuple(sorted(paths)),
    )


def find_checkpoint_dirs(root: str) -> list[str]:
    """Directories under `root` (itself included) that hold checkpoints, without
    following symlinks, entering `*_temp` leftovers or SavedModels' variables."""
    if not os.path.isdir(root):
        raise NotFound(f"no such directory: {root}")
    found = []
    for current, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not _TEMP_DIR_RE.search(d))
        if "saved_model.pb" in files or "saved_model.pbtxt" in files:
            dirs[:] = [d for d in dirs if d != "variables"]
        if STATE_FILENAME in files or any(name.endswith(".index") for name in files):
            found.append(current)
    return found
