"""`prune -r --drop-failed-runs AGE`: remove run directories of jobs that failed at start-up.

A run directory is dropped when its newest file (by modification time, anywhere under it) is older
than AGE and everything under it is what a framework writes before its first step, each file
proven so by its bytes:
- TensorBoard event files (TF summary writers, Keras' TensorBoard callback in `logs/train`,
  `logs/validation`, the HF Trainer's `runs/<date>_<host>/`, an Estimator's `eval/`) whose every
  record reads whole (CRCs) and parses as an event, none of them past step 0; an event file cut
  short, damaged or empty proves nothing: it keeps its run;
- the TF state file `checkpoint`, when it reads and names nothing past step 0;
- checkpoints of step 0: TF prefixes (complete, or incomplete with an index that begins like
  one), series members of step 0 that are complete and hold only their framework's files.
The HF Trainer writes no `config.json`, `trainer_state.json` or `training_args.bin` before its first
save (they come with `checkpoint-<step>/` and at the end), so those, like anything else (a user's
notes, a link, a bucket key never followed, debris of a save, another state file, a prune journal),
keep the run directory and every file in it. So does any checkpoint or event past step 0: such a run trained.

Run directories are those `prune -r` finds (they hold checkpoints) and those whose event files
lie in them or in their log directories (`logs/`, `train/`, `validation/`, `eval/`, `runs/...`):
each is judged on its own, the root given never removed (only emptied). Removal goes under the
run's lock, judged again there, through the descriptor of the directory checked
(fs.CheckedDirectory): the state file first (TensorFlow then sees no checkpoint), data before
indexes (what is left of an interrupted removal is still provably a step-0 checkpoint for the next
run), log directories, then the run directory itself through its parent's descriptor, only if it
is empty and still the directory emptied. In a bucket: exactly the keys listed, in that order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ckpttool.errors import CkptError, UsageProblem
from ckpttool.formats.tf.state import STATE_FILENAME
from ckpttool.formats.tfevents import EventFileReport, is_event_file, iter_scalars
from ckpttool.ops.retention.debris import incomplete_checkpoint_problem
from ckpttool.ops.runs.lock import LOCK_FILENAME, locked_as_planned
from ckpttool.ops.runs.scan import TF_FORMATS, DirectoryScan, scan_directory, split_step
from ckpttool.storage import fs
from ckpttool.text import excerpt

LOG_DIRECTORY_NAMES = ("logs", "train", "validation", "eval", "runs", "tensorboard")
_MAX_LOG_DEPTH = 3  # runs/<date>_<host>/ ... below a run directory: deeper is not a framework's log
_MAX_FILES = 10_000  # more files than a failed start-up writes: such a directory is not looked through


@dataclass(frozen=True)
class FailedRun:
    """A run directory to drop: its files (relative, in removal order), its directories (relative,
    deepest first), their bytes, and whether the directory itself goes too."""
    directory: str
    newest_mtime: float
    files: tuple[str, ...]
    dirs: tuple[str, ...]
    size_bytes: int
    remove_directory: bool
    directory_id: tuple[int, int] | None = None  # (device, inode) of a local directory when judged


@dataclass(frozen=True)
class KeptRun:
    directory: str
    reason: str


@dataclass(frozen=True)
class FailedRunsPlan:
    root: str
    age_seconds: float
    dropped: tuple[FailedRun, ...]
    kept: tuple[KeptRun, ...]  # run directories that looked failed but are kept, and why

    @property
    def freed_bytes(self) -> int:
        return sum(run.size_bytes for run in self.dropped)

    @property
    def directories(self) -> frozenset[str]:
        return frozenset(run.directory for run in self.dropped)


@dataclass(frozen=True)
class FailedRunsResult:
    plan: FailedRunsPlan
    dropped: tuple[FailedRun, ...]  # removed (the directory too when remove_directory)
    problems: tuple[tuple[str, str], ...]  # (directory, why it was left) for runs planned but left


class _NotFailed(Exception):
    """Why a run directory is not (provably) a failed start-up: it is kept."""


def plan_failed_runs(root: str, checkpoint_dirs: list[str], age_seconds: float, now: float | None = None,
                     skipped: list[str] | None = None) -> FailedRunsPlan:
    """The failed run directories under `root` older than `age_seconds`; reads only.
    `checkpoint_dirs`: those find_checkpoint_dirs found (one walk of the tree is made here for the
    event files)."""
    now = time.time() if now is None else now
    _require_age(age_seconds)
    candidates = list(checkpoint_dirs)
    for current, dirs, files in fs.walk_files(root, skipped):
        dirs.sort()
        if any(is_event_file(name) for name in files):
            run = _run_of_logs(root, current, checkpoint_dirs)
            if run not in candidates:
                candidates.append(run)
    dropped, kept = [], []
    for directory in candidates:
        try:
            dropped.append(judge_run(root, directory, age_seconds, now, others=set(candidates) - {directory}))
        except _NotFailed as why:
            if str(why):
                kept.append(KeptRun(directory, str(why)))
        except OSError as exc:  # a directory that cannot be listed or read: nothing known, nothing deleted
            kept.append(KeptRun(directory, f"cannot be read: {exc.strerror or exc}"))
    return FailedRunsPlan(root, age_seconds, tuple(dropped), tuple(kept))


def _require_age(age_seconds: float) -> None:
    """UsageProblem unless `age_seconds` is a number of seconds >= 0: a NaN (or a negative) age
    makes every run old enough, one starting now included (`now - newest < age` never holds)."""
    if not age_seconds >= 0:  # NaN compares false
        raise UsageProblem(f"bad age {age_seconds!r}: a failed run's age is a number of seconds >= 0")


def _run_of_logs(root: str, directory: str, checkpoint_dirs: list[str]) -> str:
    """The run directory of the event files in `directory`: climbing out of log directories
    (`logs/train` -> the run, `runs/<date>_<host>` -> the HF output directory), never above root
    nor past a directory holding checkpoints."""
    while directory != root and directory not in checkpoint_dirs:
        parent = fs.dirname(directory)
        if fs.basename(directory) in LOG_DIRECTORY_NAMES or fs.basename(parent) == "runs":
            directory = parent
        else:
            break
    return directory


def judge_run(root: str, directory: str, age_seconds: float, now: float, under_lock: bool = False,
              others: set[str] = frozenset()) -> FailedRun:
    """`directory` as a failed run to drop; _NotFailed (its message: why it is kept, empty when it
    is no failed run at all) otherwise. `others`: the other run directories of the tree (one of them
    inside makes this one no run of its own)."""
    directory_id = fs.directory_identity(directory)
    try:
        scan = scan_directory(directory)
    except CkptError as exc:
        raise _NotFailed(f"cannot be read: {exc.message}") from None
    if scan.state_error:
        raise _NotFailed(f"its state file cannot be read: {scan.state_error}")
    past = [c.name for c in scan.checkpoints if c.step != 0]
    if past:
        raise _NotFailed("")  # it trained (or holds a checkpoint without a step): not a failed start-up
    state = scan.state
    for entry in (state.model_checkpoint_path, *state.all_model_checkpoint_paths) if state else ():
        if entry and split_step(fs.basename(entry))[1] != 0:
            raise _NotFailed("")  # its state file names a later save
    members = _step_zero_members(scan)
    files: list[tuple[str, int, float]] = []  # (relative, size, mtime)
    dirs: list[str] = []
    for entry in fs.list_dir(directory):
        name = entry.name
        if under_lock and name == LOCK_FILENAME and fs.is_url(directory):
            continue  # our own lock object
        if entry.kind == "file" and (name == STATE_FILENAME and state is not None or name in members):
            files.append((name, entry.size, entry.mtime))
        elif entry.kind == "file" and is_event_file(name):
            _require_startup_events(entry.path, name)
            files.append((name, entry.size, entry.mtime))
        elif entry.kind == "dir" and entry.path in others:
            raise _NotFailed("")  # a tree of runs, each judged on its own
        elif entry.kind == "dir" and name in members:
            _walk_member(entry.path, name, files, dirs)
        elif entry.kind == "dir":
            _walk_logs(entry.path, name, 1, files, dirs)
        else:
            raise _NotFailed(f"holds {name}{'/' if entry.kind == 'dir' else ''}, which no framework "
                             "writes at start-up: kept with everything in it")
    if not files:
        raise _NotFailed("")
    newest = max(mtime for _name, _size, mtime in files)
    if now - newest < age_seconds:
        raise _NotFailed("")  # young: a job may still be starting
    _refuse_keys_never_followed(directory)
    order = {STATE_FILENAME: 0}
    ordered = sorted(files, key=lambda f: (order.get(f[0], 2 if f[0].endswith(".index") else 1), f[0]))
    return FailedRun(directory, newest, tuple(f[0] for f in ordered), tuple(sorted(dirs, key=_deepest_first)),
                     sum(size for _name, size, _mtime in files), fs.absolute(directory) != fs.absolute(root),
                     directory_id)


def _refuse_keys_never_followed(directory: str) -> None:
    """_NotFailed if a bucket run directory holds a key its listings leave out (a `.`, `..` or
    empty segment: `logs/../notes.txt`): something no framework writes, never followed, so it keeps
    the run as any other file does. One recursive listing, for a run about to be dropped only."""
    if not fs.is_url(directory):
        return
    skipped: list[str] = []
    for _step in fs.walk_files(directory, skipped):
        pass
    if skipped:
        raise _NotFailed(f"holds {excerpt(skipped[0])}, an object key never followed: kept with everything in it")


def _deepest_first(relative: str) -> tuple[int, str]:
    return (-relative.count("/"), relative)


def _step_zero_members(scan: DirectoryScan) -> set[str]:
    """The names (files of TF prefixes, directory and file members of series) of the step-0
    checkpoints whose bytes prove them so; _NotFailed if one does not."""
    names: set[str] = set()
    for c in scan.checkpoints:
        if c.format in TF_FORMATS:
            index = c.prefix + ".index"
            if not c.complete and incomplete_checkpoint_problem(index if index in c.files else None, c.in_state):
                raise _NotFailed(f"holds {c.name}, not provably a checkpoint of step 0")
            names.update(fs.basename(path) for path in c.files)
        elif c.deletable:
            names.add(c.name)
        else:
            raise _NotFailed(f"holds {c.name}, a {c.format} member that is incomplete or holds other files")
    return names


def _walk_member(path: str, relative: str, files: list, dirs: list) -> None:
    """A step-0 directory member (already judged complete and plain by the scan): all of it."""
    dirs.append(relative)
    for entry in fs.list_dir(path):
        child = f"{relative}/{entry.name}"
        if entry.kind == "dir":
            _walk_member(entry.path, child, files, dirs)
        elif entry.kind == "file":
            files.append((child, entry.size, entry.mtime))
        else:
            raise _NotFailed(f"holds {child}, which is not a plain file")
        if len(files) > _MAX_FILES:
            raise _NotFailed(f"holds more than {_MAX_FILES} files")


def _walk_logs(path: str, relative: str, depth: int, files: list, dirs: list) -> None:
    """A log directory: event files of start-up and directories of them, nothing else."""
    if depth > _MAX_LOG_DEPTH:
        raise _NotFailed(f"holds {relative}/, deeper than a framework's logs")
    dirs.append(relative)
    for entry in fs.list_dir(path):
        child = f"{relative}/{entry.name}"
        if entry.kind == "dir":
            _walk_logs(entry.path, child, depth + 1, files, dirs)
        elif entry.kind == "file" and is_event_file(entry.name):
            _require_startup_events(entry.path, child)
            files.append((child, entry.size, entry.mtime))
        else:
            raise _NotFailed(f"holds {child}{'/' if entry.kind == 'dir' else ''}, which no framework writes "
                             "at start-up: kept with everything in it")
        if len(files) > _MAX_FILES:
            raise _NotFailed(f"holds more than {_MAX_FILES} files")


def _require_startup_events(path: str, shown: str) -> None:
    """_NotFailed unless event file `path` reads whole and holds nothing past step 0."""
    report = EventFileReport(path)
    try:
        for _scalar in iter_scalars(path, report, wanted=lambda _tag: False):
            pass
    except CkptError as exc:
        raise _NotFailed(f"{shown} cannot be read ({exc.message})") from None
    if report.damage or report.cut_short or not report.records:
        raise _NotFailed(f"{shown} is {'empty' if not report.records and not report.cut_short else 'damaged or cut short'}"
                         ": not provably an event file of a start-up")
    if report.max_step is not None and report.max_step > 0:
        raise _NotFailed("")  # its logs go past step 0: it trained


def apply_failed_runs(plan: FailedRunsPlan, now: float | None = None) -> FailedRunsResult:
    """Remove each planned run, judged again under its lock; a run found changed is left alone and
    reported, the others go on."""
    now = time.time() if now is None else now
    _require_age(plan.age_seconds)
    done, problems = [], []
    for run in plan.dropped:
        try:
            why = _drop(plan, run, now)
        except CkptError as exc:
            why = exc.message
        if why:
            problems.append((run.directory, why))
        else:
            done.append(run)
    return FailedRunsResult(plan, tuple(done), tuple(problems))


def _drop(plan: FailedRunsPlan, run: FailedRun, now: float) -> str | None:
    with locked_as_planned(run.directory, run.directory_id, "nothing deleted") as checked:
        try:
            again = judge_run(plan.root, run.directory, plan.age_seconds, now, under_lock=True)
        except _NotFailed as why:
            return f"changed since planned: {why or 'no longer a failed start-up'}; nothing deleted"
        if set(again.files) != set(run.files) or set(again.dirs) != set(run.dirs):
            return "changed since planned; nothing deleted"
        removed: set[str] = set()
        if checked is None:  # a bucket: exact keys, the state file first, indexes after the data
            urls = [fs.join(run.directory, *f.split("/")) for f in again.files]
            for group in (urls[:1] if again.files[0] == STATE_FILENAME else [],
                          [u for u in urls if not u.endswith(".index")], [u for u in urls if u.endswith(".index")]):
                fs.remove_files([u for u in group if u not in removed])
                removed.update(group)
            return None
        for name in [f for f in again.files if "/" not in f]:
            if why := checked.remove_file(name):
                return why
        tops = [d for d in again.dirs if "/" not in d]
        for top in tops:
            inside = top + "/"
            why = checked.remove_tree(top, [f[len(inside):] for f in again.files if f.startswith(inside)],
                                      [d[len(inside):] for d in again.dirs if d.startswith(inside)])
            if why:
                return why
        if again.remove_directory:  # as judged now: never the root, whatever the plan says
            parent = fs.open_checked_directory(fs.dirname(fs.absolute(run.directory)))
            with parent:
                return parent.remove_empty_directory(fs.basename(fs.absolute(run.directory)), checked.identity)
    return None
