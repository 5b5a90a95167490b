"""`prune`: delete old checkpoints by retention rules, safely enough for cron.

plan_prune decides (pure: reads the directory, changes nothing); apply_prune
carries a plan out under the directory lock, in an order that keeps the
directory restorable at every instant:
  1. a journal of what is about to go (so an interrupted run is finished by the next);
  2. the state file rewritten atomically without the pruned entries;
  3. each checkpoint's files removed, index first;
  4. the journal removed.
Only regular files (and `*_temp` directories) directly inside the directory
are ever removed (in a bucket: exact keys, a `*_temp` prefix as the part files
listed under it); state-file entries that point elsewhere are never followed.
A local directory is opened once and checked to be the one planned; the lock,
the journal, the state file and every removal go through that descriptor
(storage/fs.py's CheckedDirectory), and each directory to remove is listed
before the journal is written. Whatever is found in the place of what was
planned (a directory or link where a file was, a tree changed since it was
listed, one nested deeper than ckpttool goes) is left alone and reported in
the result's `problems`; the CLI then exits 4 once the rest is done.

Series besides TF prefixes (ops/runs/series.py): a Keras checkpoint is its one file;
a directory member (SavedModel version, Orbax or HF step) is removed as a tree
only when the scan made under the lock still finds it complete and holding
nothing but plain files and directories its framework writes: its files
bottom-up (its commit files last, so that a run interrupted half way is still
provably that member when the journal resumes it), then its directories,
never following a link (in a bucket: exactly the keys listed under it).
Each series family's latest (highest complete step) is always kept.
"""
from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from ckpttool.errors import BadInput, CkptError, CorruptCheckpoint, Refused, UsageProblem
from ckpttool.formats.damage import Damage
from ckpttool.formats.tf.state import STATE_FILENAME, CheckpointState
from ckpttool.storage import fs
from ckpttool.storage.fs import read_capped
from ckpttool.ops.retention.debris import (incomplete_checkpoint_problem, is_checkpoint_file_of, is_temp_dir_name,
                                 is_temp_file_debris, temp_dir_debris_problem, temp_dir_parts,
                                 temp_file_debris_problem)
from ckpttool.ops.runs.lock import (LOCK_FILENAME, PRUNE_JOURNAL, PRUNE_JOURNAL_MAX_BYTES, changed_since_planned,
                                    locked_as_planned, read_lock_journal)
from ckpttool.ops.retention.rules import RetentionRules, keep_reasons
from ckpttool.ops.runs import series
from ckpttool.ops.runs.scan import (TF_FORMATS, CheckpointInfo, DirectoryScan, Problem, gc_paused, scan_directory,
                               series_latest_name)
from ckpttool.ops.retention.scoring import DAMAGE_HINT, MetricOptions, Scores, damage_refusal, score_checkpoints
from ckpttool.ops.runs.statefile import update_state, without_entries
from ckpttool.ops.runs.wholeness import first_whole, summary

JOURNAL_FILENAME = PRUNE_JOURNAL
JOURNAL_MAX_BYTES = PRUNE_JOURNAL_MAX_BYTES
CLEAN_DEFAULT_MIN_AGE = 3600.0  # --clean without --min-age spares debris younger than an hour


@dataclass(frozen=True)
class Kept:
    name: str
    step: int | None
    reasons: tuple[str, ...]
    score: float | None = None


@dataclass(frozen=True)
class Deletion:
    name: str
    step: int | None
    size_bytes: int
    kind: str  # "checkpoint" | "incomplete" | "temp" | "resumed"
    paths: tuple[str, ...]
    score: float | None = None


@dataclass(frozen=True)
class PrunePlan:
    directory: str
    kept: tuple[Kept, ...]
    deleted: tuple[Deletion, ...]
    problems: tuple[Problem, ...]
    ignore_bad_state: bool = False
    scores: Scores | None = None  # with a metric rule: every complete checkpoint's score
    directory_id: tuple[int, int] | None = None  # (device, inode) of a local directory when planned
    refusal: str | None = None  # why it must not be applied: it deletes by scores read from a damaged source
    allow_damaged: bool = False  # the user allows deciding by what a damaged log still gives
    state: CheckpointState | None = None  # the state file as planned by
    state_tag: str | None = None  # its version as listed (S3 ETag): a batched apply rewrites it only if unchanged
    batchable: bool = False  # a bucket's deletions that may be batched with other run directories'
    # Batchable, planned without reading each TF family's newest index (is its data whole?): the
    # batched apply (and `prune --budget`) reads it first, by the listing planned by, and keeps
    # what it protects (with_whole_checked): `deleted` may then shrink, never grow.
    whole_unchecked: bool = False
    # The directory as planned by (its checkpoints, sizes, listing): `prune --budget` weighs the run by
    # it, with no second listing. Never trusted to apply: apply_prune scans again under the lock.
    scan: DirectoryScan | None = field(default=None, repr=False, compare=False)

    @property
    def freed_bytes(self) -> int:
        return sum(d.size_bytes for d in self.deleted)


@dataclass(frozen=True)
class PruneResult:
    plan: PrunePlan
    deleted: tuple[Deletion, ...]
    skipped: tuple[str, ...] = field(default=())  # planned, but protected by the time we applied
    problems: tuple[Problem, ...] = field(default=())  # planned, but found changed: left alone ("not_deleted")

    @property
    def freed_bytes(self) -> int:
        return sum(d.size_bytes for d in self.deleted)


def protected_checkpoints(scan: DirectoryScan, damage: list[Damage] | None = None,
                          read_indexes: bool = True) -> dict[str, str]:
    """Checkpoints no rule may delete: the latest (also of other state files such as
    best_checkpoint), the HF Trainer's best_model_checkpoint, and saves of its family with
    a higher step written after it (a writer that has not updated the state
    file yet; a restarted job's old orphans have higher steps but older files). A trainer_state.json
    read around damage (the best may be unknown or another) is added to `damage`. Not
    `read_indexes`: each TF family's newest complete checkpoint is taken to be whole, unread
    (with_whole_checked reads them later)."""
    protected: dict[str, str] = {name: f"latest in {state_file}" for name, state_file in scan.other_latest.items()
                                 if scan.by_name(name)}
    latest = scan.latest
    if scan.state_latest and scan.by_name(scan.state_latest):
        protected.setdefault(scan.state_latest, "latest")
    if latest is not None:
        protected.setdefault(latest.name, "latest")
    for c in _series_family_latest(scan):
        protected.setdefault(c.name, "latest of its series")
        best, damaged = series.hf_best_checkpoint(c.prefix) if c.format == "hf" else (None, None)
        if damaged is not None and damage is not None:
            damage.append(damaged)
        if best and scan.by_name(best):  # the Trainer keeps it for load_best_model_at_end
            protected.setdefault(best, "best_model_checkpoint in trainer_state.json")
    for name, why in (_newest_whole_tf(scan) if read_indexes else {}).items():
        protected.setdefault(name, why)
    for c in _series_newer_than_complete(scan):
        protected.setdefault(c.name, "incomplete, newer than its series' newest complete member (save in progress?)")
    if latest is not None:
        for c in scan.checkpoints:
            in_flight = (c.family == latest.family and c.step is not None and latest.step is not None
                         and c.step > latest.step and c.mtime >= latest.mtime)
            if in_flight and c.name not in protected:
                protected[c.name] = "newer than latest (save in progress?)"
    return protected


def _newest_whole_tf(scan: DirectoryScan) -> dict[str, str]:
    """For each TF family whose newest complete checkpoint's data shards end before its index says
    (ops/runs/wholeness.py), the newest one whose do not, with the reason it is kept. One index is
    read per family (more only while checkpoints are found cut short), in a bucket too."""
    return _first_whole_by_family(reversed([c for c in scan.checkpoints if c.complete]), "newest")


def _best_whole_tf(complete: list[CheckpointInfo], scores: Scores) -> dict[str, str]:
    """For each TF family whose best-scored checkpoint's data is cut short, the best-scored one whose
    is whole, with why it is kept: what `latest --best` answers, TensorFlow cannot restore the one
    the metric rules keep as best. Reads the best's index (more only while they are found cut)."""
    by_name = {c.name: c for c in complete}
    return _first_whole_by_family((by_name[name] for name in scores.ranked(by_name)), "best")


def _first_whole_by_family(preferred_first, what: str) -> dict[str, str]:
    """For each TF family among the complete checkpoints `preferred_first` (the one a rule keeps
    first, first) whose first one's data is cut short, the first whose is whole, and why it is kept
    (`what`: newest, best)."""
    families: dict[str, list[CheckpointInfo]] = {}
    for c in preferred_first:
        if c.format == "v2":
            families.setdefault(c.family, []).append(c)
    found = {}
    for members in families.values():
        whole, cut = first_whole(members)
        if whole is not None and cut:
            found[whole.name] = f"{what} of its family whose data is whole ({summary(cut)})"
    return found


def with_whole_checked(plan: PrunePlan) -> PrunePlan:
    """`plan`, planned with each TF family's newest index unread (`whole_unchecked`), with them read
    now (one read per family): a deletion that reading protects (the newest whole checkpoint, when
    newer ones are cut short) kept instead, with the reason; one kept already gets the reason too (as
    plan_prune gives it: `prune --budget` never takes it, the output says why). Only deletions go:
    never more than planned."""
    if not plan.whole_unchecked:
        return plan
    scan = plan.scan
    protects = _newest_whole_tf(scan)
    # plan_prune's protected_checkpoints gives a TF checkpoint the first reason that protects it: one
    # protected already as a latest keeps its reasons.
    first = {*scan.other_latest, scan.state_latest, scan.latest.name if scan.latest is not None else None}
    kept = tuple(replace(k, reasons=(protects[k.name],) + k.reasons) if k.name in protects and k.name not in first
                 else k for k in plan.kept)
    kept += tuple(Kept(d.name, d.step, (protects[d.name],), d.score) for d in plan.deleted if d.name in protects)
    order = {c.name: i for i, c in enumerate(scan.checkpoints)}
    return replace(plan, kept=tuple(sorted(kept, key=lambda k: order.get(k.name, -1))), whole_unchecked=False,
                   deleted=tuple(d for d in plan.deleted if d.name not in protects))


def _series_family_latest(scan: DirectoryScan) -> list[CheckpointInfo]:
    """The latest of each series family (no state file names one): its complete member with the
    highest step, then the newest."""
    families: dict[str, list[CheckpointInfo]] = {}
    for c in scan.checkpoints:
        if c.format not in TF_FORMATS and c.complete:
            families.setdefault(c.family, []).append(c)
    return [scan.by_name(series_latest_name(members)) for members in families.values()]


def _series_newer_than_complete(scan: DirectoryScan) -> list[CheckpointInfo]:
    """Incomplete series members with a higher step than their family's newest complete one (or in a
    family with none): a save being written looks just like one cut short (Keras writes to the final
    name), so `--clean` never takes them."""
    newest = {c.family: c.step for c in _series_family_latest(scan)}
    return [c for c in scan.checkpoints if c.format not in TF_FORMATS and not c.complete
            and (c.family not in newest or (c.step or 0) > (newest[c.family] or 0))]


def _refuse_bad_state(scan: DirectoryScan) -> None:
    if scan.state_error:
        raise BadInput(f"{scan.state_error}; not pruning, since the latest checkpoint is unknown (nothing deleted)",
                       hint=f"`ckpttool repair {scan.directory}` rewrites the state file from the checkpoints on disk; "
                            "--ignore-bad-state prunes by file times instead")


def path_problem(scan: DirectoryScan, name: str, path: str) -> str | None:
    """None if `path` may be deleted as part of item `name` of a prune of scan.directory, else why not.

    Only entries directly inside the directory (by real path), named as a
    file of checkpoint `name` (NAME.index/.meta/.data-N-of-M), or `name`
    itself when the scan recognised it as a V1 checkpoint or it is debris;
    never a symlink, never a directory other than a `*_temp` debris directory.
    A bucket's entries are judged by the scan's listing (no request per file).
    """
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return f"{name!r} is not a checkpoint name"
    base = fs.basename(path)
    if fs.is_url(path) or os.path.isabs(path):
        parent = fs.dirname(path)
        if parent != scan.directory and fs.real(parent) != fs.real(scan.directory):
            return f"{path} is not in {scan.directory}"
    elif path != base:
        return f"{path} is not a file name"
    full = fs.join(scan.directory, base)
    if base in ("", ".", "..") or fs.dirname(fs.real(full)) != fs.real(scan.directory):
        return f"{path} is not a file directly inside {scan.directory}"
    kind = _kind(scan, full, base)
    if kind == "link":
        return f"{base} is a symbolic link"
    if kind not in (None, "file", "dir", "both"):
        return f"{base} is not a regular file"
    if is_checkpoint_file_of(name, base) and kind != "dir":
        return None  # a bucket's "both": the object alone is deleted, never what is below it
    if base == name and (series_problem := _series_path_problem(scan, full, base, kind)) != "not series":
        return series_problem
    if base == name:
        if _is_temp_dir(scan, full, base):
            return temp_dir_debris_problem(full)
        known = scan.by_name(name)
        if kind is None or is_temp_file_debris(base) or known is not None and known.format == "v1":
            return None
    return f"{base} is not a file of checkpoint {name}"


def _series_path_problem(scan: DirectoryScan, full: str, base: str, kind: str | None) -> str | None:
    """For a series member or debris `base`: None if it may go now (a Keras file; a directory member
    the scan finds deletable, or series debris, all plain files and directories), else why not;
    "not series" when `base` is neither."""
    known = scan.by_name(base)
    # Debris is what the scan found to be (its writer's naming and contents), never a name alone.
    debris = known is None and (kind == "dir" or kind is None) and any(
        leftover.series and fs.basename(leftover.path) == base for leftover in scan.leftovers)
    if (known is None or known.format in TF_FORMATS) and not debris:
        return "not series"
    if kind is None:
        return None  # gone already
    if known is not None and not known.is_directory:
        if kind != "file":
            return f"{base} is not a regular file"
        # Incomplete, its bytes no longer showing it cut short: written again since it was planned.
        return None if known.complete or known.cut_short else f"{base} is being written (not provably cut short)"
    if kind != "dir":
        return f"{base} is not a directory"
    if known is not None and not known.deletable:
        return f"{base}/ is not a complete {known.format} member holding only its framework's files"
    return None


def _is_temp_dir(scan: DirectoryScan, full: str, base: str) -> bool:
    """Whether `full` is to be judged (and removed) as a `*_temp` directory: a directory, or a bucket
    name that is an object and a prefix at once and named like one (its object is then kept)."""
    kind = _kind(scan, full, base)
    return kind == "dir" or kind == "both" and is_temp_dir_name(base)


def _kind(scan: DirectoryScan, full: str, base: str) -> str | None:
    """What is at `full` now: "file", "dir", "link", "other", or None if nothing (a bucket: per the
    scan's listing, "both" for an object that is also a prefix; a local directory: lstat, right
    before any deletion)."""
    if fs.is_url(full):
        return scan.listing.get(base)
    try:
        mode = os.lstat(full).st_mode
    except FileNotFoundError:
        return None  # already gone: nothing to do, but the name must still be one we would delete
    if stat.S_ISLNK(mode):
        return "link"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _read_journal(scan: DirectoryScan, protected: dict[str, str], problems: list[Problem]) -> list[Deletion]:
    """What an interrupted prune was deleting, each path checked as if we had planned it ourselves.

    A journal lies in a directory that others may write to: if one entry
    names anything else (a directory, `..`, the state file, the latest
    checkpoint, a file outside), nothing at all is resumed. An entry naming a member nested deeper
    than prune removes (a journal of a version that tried) is left out and reported in `problems`:
    the journal is then cleared, never resumed again and again.
    """
    resumed = _read_journal_object(scan, protected, problems)
    if fs.is_url(scan.directory) and LOCK_FILENAME in scan.listing:
        # A batched prune carries its journal in its lock object's body (ops/retention/batches.py):
        # one that is listed is resumed as a journal object is (its lock broken when stale).
        raw = read_lock_journal(scan.directory)
        if raw is not None:
            names = {d.name for d in resumed}
            resumed += [d for d in _journal_deletions(scan, raw, fs.join(scan.directory, LOCK_FILENAME),
                                                      protected, problems) if d.name not in names]
    return resumed


def _read_journal_object(scan: DirectoryScan, protected: dict[str, str], problems: list[Problem]) -> list[Deletion]:
    """_read_journal's entries of the journal object."""
    path = fs.join(scan.directory, JOURNAL_FILENAME)
    if JOURNAL_FILENAME not in scan.listing and (fs.is_url(path) or not os.path.lexists(path)):
        return []

    def refuse(why: str) -> CorruptCheckpoint:
        return _journal_refusal(path, why)

    owner = _journal_owner(scan, path)
    if owner is None and not fs.is_url(path):
        return []  # removed since the listing
    raw = read_capped(path, JOURNAL_MAX_BYTES, "prune journal", missing_ok=True)
    if raw is None:
        return []  # removed since the listing: a concurrent prune finished (plans are checked again under the lock)
    now = _journal_owner(scan, path)
    if owner is not None and now is None:
        return []  # removed while read: a concurrent prune finished
    if owner != now:
        raise refuse("was replaced while it was read")
    if owner is not None and owner[2] not in (os.geteuid(), os.stat(scan.directory).st_uid):
        # Anyone who may add a file here could plant one, and resuming overrides the rules.
        raise refuse(f"belongs to uid {owner[2]}, neither this user nor the directory's owner")
    return _journal_deletions(scan, raw, path, protected, problems)


def _journal_refusal(path: str, why: str) -> CorruptCheckpoint:
    return CorruptCheckpoint(f"prune journal {path} {why}; refusing to resume it (nothing deleted)",
                             hint="if no prune is running, look at it and remove it")


def _journal_deletions(scan: DirectoryScan, raw: bytes, path: str, protected: dict[str, str],
                       problems: list[Problem]) -> list[Deletion]:
    """The entries of journal `raw` (read from `path`), each checked as _read_journal says."""

    def refuse(why: str) -> CorruptCheckpoint:
        return _journal_refusal(path, why)

    try:
        entries = json.loads(raw)["deletions"]
        pending = [(e["name"], e.get("step"), e["paths"]) for e in entries]
    except (ValueError, KeyError, TypeError):
        raise refuse("is unreadable") from None
    resumed = []
    for name, step, entry_paths in pending:
        if not isinstance(name, str) or not isinstance(entry_paths, list) or \
                not all(isinstance(p, str) for p in entry_paths):
            raise refuse("holds an entry that is not a name with a list of paths")
        if name in protected:
            raise refuse(f"names {name}, which must be kept ({protected[name]})")
        if (known := scan.by_name(name)) is not None and known.too_deep:
            problems.append(Problem("journal_entry_kept", known.prefix,
                                    f"the prune journal lists {name}/: {known.too_deep}: not deleted"))
            continue
        paths, size = [], 0
        for entry_path in entry_paths:
            problem = path_problem(scan, name, entry_path)
            if problem:
                raise refuse(f"lists {entry_path!r}: {problem}")
            full = fs.join(scan.directory, fs.basename(entry_path))
            left = _size_if_present(scan, full)
            if left is not None:
                paths.append(full)
                size += left
        resumed.append(Deletion(name, step if isinstance(step, int) else None, size, "resumed", tuple(paths)))
    return resumed


def _journal_owner(scan: DirectoryScan, path: str) -> tuple[int, int, int] | None:
    """(device, inode, owner uid) of a local journal (lstat: a planted symlink is its planter's),
    None in a bucket or when it is gone."""
    if fs.is_url(scan.directory):
        return None
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino, found.st_uid


def _size_if_present(scan: DirectoryScan, full: str) -> int | None:
    """Bytes of `full` if it is still there, else None, in one look: a plan takes no lock, and the
    prune that wrote the journal may be deleting these files right now (the plan is checked again
    under the lock). A bucket's are judged by the listing, their sizes not looked up (0)."""
    if fs.is_url(full):
        return 0 if fs.basename(full) in scan.listing else None
    try:
        return os.lstat(full).st_size
    except FileNotFoundError:
        return None


def _not_debris(scan: DirectoryScan, leftover_path: str) -> str | None:
    name = fs.basename(leftover_path)
    if series.is_debris_name(name):  # an Orbax tmp or exporter temp-<n> directory: plain files and dirs only
        problem = _series_path_problem(scan, leftover_path, name, "dir")
        return problem or series.plain_tree(leftover_path)[2]
    if _is_temp_dir(scan, leftover_path, name):
        return temp_dir_debris_problem(leftover_path)
    state = scan.state
    listed = {fs.basename(p) for p in (state.model_checkpoint_path, *state.all_model_checkpoint_paths)} if state else set()
    return temp_file_debris_problem(leftover_path, lambda stem: scan.by_name(stem) is not None or stem in listed,
                                    {STATE_FILENAME, *scan.other_latest.values()})


def _score(scan: DirectoryScan, complete: list, rules: RetentionRules, metric: MetricOptions | None) -> Scores | None:
    """The scores of the complete checkpoints, or None without a metric. Metrics that cannot be read
    at all raise BadInput (nothing is deleted); so does --drop-unscored when no checkpoint has a score
    (steps that never match would otherwise leave only what the other rules keep)."""
    if metric is None:
        if rules.keep_best is not None or rules.drop_unscored:
            raise UsageProblem("--keep-best and --drop-unscored need --metric TAG")
        return None
    scores = score_checkpoints(scan.directory, complete, metric)
    if rules.drop_unscored and complete and not scores.scored:
        steps = ", ".join(str(c.step) for c in complete[:5]) + (" ..." if len(complete) > 5 else "")
        raise BadInput(f"no checkpoint in {scan.directory} has a {metric.tag} score from {scores.source} "
                       f"(checkpoint steps {steps}); not pruning with --drop-unscored (nothing deleted)",
                       hint="check that the metric is logged at the checkpoints' steps (or epochs)")
    return scores


@gc_paused()  # as many objects as the scan's, per checkpoint
def plan_prune(directory: str, rules: RetentionRules, *, clean: bool = False, now: float | None = None,
               ignore_bad_state: bool = False, metric: MetricOptions | None = None,
               allow_damaged: bool = False, entries: list[fs.Entry] | None = None,
               scan: DirectoryScan | None = None, whole_check_at_apply: bool = False,
               helper: bool = False) -> PrunePlan:
    """What a prune of `directory` would keep and delete; reads only.

    Refuses (BadInput) when the state file exists but cannot be read: the
    latest checkpoint it names is then unknown, and a rolled-back latest
    looks old by file times. `ignore_bad_state` judges by file times anyway.
    With `metric`, the metric rules apply (`keep_best`, the best always kept,
    unscored ones kept unless `drop_unscored`); a metric that cannot be read
    refuses the whole plan (BadInput). A metric log or the HF Trainer's trainer_state.json read
    around damage is listed in `problems`, and makes `refusal` say why the plan is not to be applied
    when its deletions depend on what the damage may have lost, unless `allow_damaged` (or the
    metric's own allow_damaged). `entries`: the directory's listing when the caller has it (a
    bucket's tree listing, find_checkpoint_dirs), else it is listed here; `scan`: the directory as
    the caller just scanned it (`ls -r --summary`), else it is scanned here (`helper`: as
    scan_directory's).
    `whole_check_at_apply`: a bucket plan that batchable() passes leaves reading each TF family's
    newest index (is its data whole?) to the batched apply, before its lock (`whole_unchecked`): one
    request less per run directory in planning, none more in all. A dry run, and a plan shown for
    confirmation, read it here, so that what they show is what a prune does.
    """
    rules.validate()
    now = time.time() if now is None else now
    directory_id = fs.directory_identity(directory)
    scan = scan if scan is not None else scan_directory(directory, entries, helper=helper)
    if not ignore_bad_state:
        _refuse_bad_state(scan)
    best_damage: list[Damage] = []
    # Only a bucket's may wait: batchable() holds for bucket plans alone, and a local index costs no request.
    unread = whole_check_at_apply and fs.is_url(scan.directory)
    protected = protected_checkpoints(scan, best_damage, read_indexes=not unread)
    allow_damaged = allow_damaged or metric is not None and metric.allow_damaged
    complete = [c for c in scan.checkpoints if c.complete]
    scores = _score(scan, complete, rules, metric)
    score = scores.score if scores is not None else (lambda _name: None)
    if scores is not None:  # read even when the newest's index waits for the apply: the rules need it now
        for name, why in _best_whole_tf(complete, scores).items():
            protected.setdefault(name, why)
    reasons = keep_reasons(complete, rules, now, protected, scores)
    debris_age = rules.min_age_seconds if rules.min_age_seconds is not None else CLEAN_DEFAULT_MIN_AGE
    kept, deleted = [], []
    for c in scan.checkpoints:
        if c.complete:
            if reasons[c.name]:
                kept.append(Kept(c.name, c.step, tuple(reasons[c.name]), score(c.name)))
            elif c.unexpected:
                shown = ", ".join(c.unexpected[:3]) + (", ..." if len(c.unexpected) > 3 else "")
                kept.append(Kept(c.name, c.step, (f"holds files its framework does not write: {shown}",),
                                 score(c.name)))
            elif c.too_deep:
                kept.append(Kept(c.name, c.step, (f"{c.too_deep}: never deleted",), score(c.name)))
            else:
                deleted.append(Deletion(c.name, c.step, c.size_bytes, "checkpoint", c.files, score(c.name)))
            continue
        index = c.prefix + ".index"
        if c.name in protected:
            kept.append(Kept(c.name, c.step, (protected[c.name],)))
        elif c.format not in TF_FORMATS and not (clean and c.cut_short):
            # A series deletes only the members it recognises as complete, and under --clean a file
            # whose bytes show it was cut short (an interrupted save's leftover).
            kept.append(Kept(c.name, c.step, (f"incomplete {c.format} member: kept",)))
        elif not clean:
            kept.append(Kept(c.name, c.step, ("incomplete (use --clean)",)))
        elif c.format in TF_FORMATS and (
                not_debris := incomplete_checkpoint_problem(index if index in c.files else None, c.in_state)):
            kept.append(Kept(c.name, c.step, (f"left alone, not provably a checkpoint: {not_debris}",)))
        elif now - c.mtime < debris_age:
            kept.append(Kept(c.name, c.step, ("incomplete, too young",)))
        else:
            deleted.append(Deletion(c.name, c.step, c.size_bytes, "incomplete", c.files))
    problems = list(scan.problems)
    problems += [Problem("metric", scan.directory, warning) for warning in (scores.warnings if scores else ())]
    problems += [Problem("metric_damaged", damage.path, f"damaged metric source {damage.message}"
                         + ("; pruned by the scores still readable (--allow-damaged-metrics)" if metric.allow_damaged
                            else "; prune deletes by these scores only with --allow-damaged-metrics"))
                 for damage in (scores.damage if scores else ())]
    problems += [Problem("metric_damaged", damage.path, f"damaged {damage.message}: the HF Trainer's "
                         "best_model_checkpoint may be lost" + ("; pruned all the same (--allow-damaged-metrics)"
                                                               if allow_damaged else
                                                               "; its checkpoints are pruned only with "
                                                               "--allow-damaged-metrics"))
                 for damage in best_damage]
    for leftover in scan.leftovers if clean else ():
        if not_debris := _not_debris(scan, leftover.path):
            problems.append(Problem("not_debris", leftover.path, f"left alone: {not_debris}"))
        elif now - leftover.mtime >= debris_age:
            deleted.append(Deletion(fs.basename(leftover.path), None, leftover.size_bytes, "temp",
                                    (leftover.path,)))
    planned = {d.name for d in deleted}
    for pending in _read_journal(scan, protected, problems):
        if fs.is_url(directory) and reasons.get(pending.name) and not _only_commit_files_left(scan, pending.name):
            # A bucket journal has no owner to check (a local one must be ours): it may finish what is
            # half deleted, never delete a complete checkpoint these rules keep.
            problems.append(Problem("journal_entry_kept", fs.join(scan.directory, pending.name),
                                    f"the prune journal lists {pending.name}, which these rules keep: not deleted"))
            continue
        if pending.name not in planned:
            deleted.append(pending)
            kept = [k for k in kept if k.name != pending.name]
    refused = damage_refusal(scores, metric, "not pruning by these scores (nothing deleted)") \
        if scores is not None and any(d.kind == "checkpoint" for d in deleted) else None
    if refused is None and best_damage and not allow_damaged and _deletes_hf_members(scan, deleted):
        refused = _unknown_best(best_damage[0])
    plan = PrunePlan(scan.directory, tuple(kept), tuple(deleted), tuple(problems), ignore_bad_state,
                     scores=scores, directory_id=directory_id, refusal=refused.message if refused else None,
                     allow_damaged=allow_damaged, state=scan.state, state_tag=scan.state_tag,
                     batchable=batchable(scan, deleted), whole_unchecked=unread, scan=scan)
    # Applied as one directory is (not batched), the read would not be saved: done now.
    return plan if plan.batchable else with_whole_checked(plan)


# A rule's deletion, or the budget's (budget.BUDGET_KIND): either is a checkpoint as listed.
_BATCHABLE_KINDS = ("checkpoint", "budget")


def batchable(scan: DirectoryScan, deleted: tuple[Deletion, ...] | list[Deletion]) -> bool:
    """Whether a bucket's deletions may be carried out with other run directories' in batches, with
    no second look at the directory (ops/retention/batches.py): every one an older save its state
    file lists (not the latest, not an orphan or debris, no journal to resume, no lock listed: a run
    at work or killed, whose lock may carry a journal, no other state file),
    made of plain objects directly in it, and the store can rewrite the state file only if it is
    still the version listed. Anything else is applied as one directory is (apply_prune)."""
    from ckpttool.storage import remote

    if not (deleted and fs.is_url(scan.directory) and scan.state is not None and scan.state_tag
            and not scan.other_latest and JOURNAL_FILENAME not in scan.listing and LOCK_FILENAME not in scan.listing
            and remote.conditional_tags(scan.directory)):
        return False
    for d in deleted:
        known = scan.by_name(d.name)
        if (d.kind not in _BATCHABLE_KINDS or known is None or known.format not in TF_FORMATS or not known.in_state
                or known.is_latest or d.name == scan.state_latest):
            return False
        if any(scan.listing.get(fs.basename(p)) != "file" or path_problem(scan, d.name, p) for p in d.paths):
            return False
    return True


def journal_document(todo) -> dict:
    """The journal of `todo`'s deletions: file names only, so that it stays valid if the directory
    is moved before it is resumed."""
    return {"deletions": [{"name": d.name, "step": d.step, "paths": [fs.basename(p) for p in d.paths]}
                          for d in todo]}


def journal_bytes(todo) -> bytes:
    """journal_document(todo) as a journal object's bytes."""
    return json.dumps(journal_document(todo)).encode()


def apply_under_lock(plan: PrunePlan, fault: Callable[[str], None]) -> PruneResult:
    """apply_prune's work on a bucket's run directory whose lock the caller holds: scanned again,
    checked, journalled, rewritten and deleted from as apply_prune does it."""
    return _apply(plan, fault, None)


def _deletes_hf_members(scan: DirectoryScan, deleted) -> bool:
    """Whether `deleted` takes an HF Trainer step by the rules (its best_model_checkpoint among
    them, for all we know, when the trainer_state.json naming it is damaged)."""
    return any(d.kind != "resumed" and (known := scan.by_name(d.name)) is not None and known.format == "hf"
               for d in deleted)


def _unknown_best(damage: Damage) -> BadInput:
    return BadInput(f"damaged {damage.message}: the HF Trainer's best_model_checkpoint cannot be read whole; "
                    "not pruning its checkpoints (nothing deleted)",
                    hint="--allow-damaged-metrics prunes without knowing it (keeping the best only if it was "
                         "read before the damage); prune --dry-run lists the damage")


def _only_commit_files_left(scan: DirectoryScan, name: str) -> bool:
    """A directory member whose removal stopped before its commit files (they go last, so that it
    still reads as complete and a journal can finish it): nothing but those files is left. Such a
    member is half deleted whatever the rules say; a whole one never holds its commit files alone."""
    known = scan.by_name(name)
    if known is None or not known.is_directory:
        return False
    files, _dirs, problem = series.plain_tree(known.files[0])
    return not problem and bool(files) and set(files) <= set(series.LAST_FILES.get(known.format, ()))


def _commit_files(scan: DirectoryScan, path: str) -> tuple[str, ...]:
    """The files of directory member `path` that its framework's commit consists of (removed last)."""
    known = scan.by_name(fs.basename(path))
    return series.LAST_FILES.get(known.format, ()) if known is not None else ()


def _series_tree_listing(scan: DirectoryScan, path: str) -> tuple[list[str], list[str], str | None]:
    """A directory member or series debris as plain_tree lists it now (under the lock), its
    framework's commit files last: (files, directories, None), or why it is not to be removed."""
    files, dirs, problem = series.plain_tree(path)
    last = _commit_files(scan, path)
    files.sort(key=lambda f: (f in last, last.index(f) if f in last else 0))
    return files, dirs, problem


def _remove_series_tree(scan: DirectoryScan, path: str) -> None:
    """A bucket's directory member or series debris: exactly the keys listed under it now (under the
    lock), its commit files in a request of their own, last. Anything else found in it (planted
    since the scan under the lock): nothing removed, the next `ls` reports it."""
    files, _dirs, problem = _series_tree_listing(scan, path)
    if problem:
        return
    last = _commit_files(scan, path)
    urls = [path + "/" + relative for relative in files]
    for url, relative in zip(urls, files):
        refuse_unless_inside(scan.directory, url, relative.count("/") + 1)
    first = [u for u, f in zip(urls, files) if f not in last]
    fs.remove_files(first)
    fs.remove_files(urls[len(first):])


def _is_series_tree(scan: DirectoryScan, path: str) -> bool:
    base = fs.basename(path)
    known = scan.by_name(base)
    return known.is_directory if known is not None else bool(series.is_debris_name(base)) and any(
        leftover.path == path for leftover in scan.leftovers)


def _index_first(paths: tuple[str, ...]) -> list[str]:
    # Removing the index first makes the checkpoint invisible to TensorFlow at once.
    return sorted(paths, key=lambda p: (not p.endswith(".index"), p.endswith(".meta"), p))


def _remove_batched(scan: DirectoryScan, todo: list[Deletion], fault: Callable[[str], None]) -> None:
    """A bucket's deletions in as few requests as the store allows: every index first (so TensorFlow
    stops seeing those checkpoints at once), then the data and the rest; `_temp` prefixes last.

    Exact keys only: a file is its object (nothing below it), a `_temp` prefix the part files
    just listed under it (no recursive delete); each one checked to lie under the directory as
    listed."""
    trees = [p for d in todo for p in d.paths if _is_series_tree(scan, p)]
    files = [p for d in todo for p in d.paths if p not in trees and not _is_temp_dir(scan, p, fs.basename(p))]
    parts = [part for d in todo for p in d.paths if p not in trees and _is_temp_dir(scan, p, fs.basename(p))
             for part in _verified_parts(p)]
    for url, depth in [(f, 0) for f in files] + [(p, 1) for p in parts]:
        refuse_unless_inside(scan.directory, url, depth)
    indexes = [p for p in files if p.endswith(".index")]
    fs.remove_files(indexes)
    fault("removed the indexes")
    fs.remove_files([p for p in files if not p.endswith(".index")])
    fault("removed the data")
    fs.remove_files(parts)
    for tree in trees:
        _remove_series_tree(scan, tree)
        fault(f"removed {fs.basename(tree)}/")


def refuse_unless_inside(directory: str, url: str, depth: int) -> None:
    """`url` must be `directory/NAME` (depth 0) or `directory/NAME_temp/PART` (depth 1), as listed."""
    inside = directory + "/"
    rest = url[len(inside):] if url.startswith(inside) else ""
    if not rest or rest.count("/") != depth:
        raise Refused(f"{url} is not an object of {directory}; not deleting it")


def _verified_parts(temp_dir: str) -> tuple[str, ...]:
    problem, parts = temp_dir_parts(temp_dir)
    return () if problem else parts


def _present(scan: DirectoryScan, path: str) -> bool:
    """Whether `path` is still there, by the scan made under the lock (a bucket: its listing)."""
    if fs.is_url(path):
        return fs.basename(path) in scan.listing
    return os.path.lexists(path)


def _deletable_now(scan: DirectoryScan, deletion: Deletion, problems: list[Problem]) -> Deletion:
    """`deletion` with only the paths still there that may still go, by the scan under the lock;
    each one there that may not (a link, a directory or anything else found in a file's place, a
    member holding more than its framework's files now) reported in `problems`."""
    paths = []
    for path in deletion.paths:
        if not _present(scan, path):
            continue  # gone already: a plan applied twice, or after another run
        problem = path_problem(scan, deletion.name, path)
        if problem:
            problems.append(Problem("not_deleted", path, f"not deleted: {problem}"))
        else:
            paths.append(path)
    return replace(deletion, paths=tuple(paths))


def _listed_trees(scan: DirectoryScan, todo: list[Deletion],
                  problems: list[Problem]) -> dict[str, tuple[list[str], list[str]]]:
    """The local directories among `todo`'s paths, as listed now (under the lock, before anything
    is deleted): (files, directories) of a series member or debris (commit files last), the part
    files of a `*_temp` directory. One that cannot be removed whole (a link or anything else
    planted in it, nested deeper than ckpttool goes) is reported in `problems` and left out."""
    trees = {}
    for path in (p for d in todo for p in d.paths):
        base = fs.basename(path)
        if _is_series_tree(scan, path):
            files, dirs, problem = _series_tree_listing(scan, path)
        elif _kind(scan, path, base) == "dir":
            problem, parts = temp_dir_parts(path)
            files, dirs = [fs.basename(part) for part in parts], []
        else:
            continue
        problem = problem or fs.too_deep(files, dirs)
        if problem:
            problems.append(Problem("not_deleted", path, f"not deleted: {base}/: {problem}"))
        else:
            trees[path] = (files, dirs)
    return trees


def apply_prune(plan: PrunePlan, fault: Callable[[str], None] | None = None,
                lock_timeout: float = 600.0) -> PruneResult:
    """Carry out `plan`. `fault(step)` is called after every file operation (tests inject crashes there).
    Refused when another run holds the directory's lock for `lock_timeout` seconds (nothing done).

    A local directory is opened once, checked to be the one planned (device and inode) and
    locked through that descriptor; the journal, the state file and every deletion go through
    it (fs.CheckedDirectory), never through its path again. What is found in the place of what
    was planned is left alone and reported in the result's `problems` ("not_deleted")."""
    fault = fault or (lambda _step: None)
    if plan.refusal is not None:
        raise BadInput(plan.refusal, hint=DAMAGE_HINT)
    # `prune -r` plans every run, then applies each by its path: a component swapped for a symlink
    # since would have the rules judged on another directory's checkpoints.
    with locked_as_planned(plan.directory, plan.directory_id, "nothing deleted", lock_timeout) as checked:
        return _apply(plan, fault, checked)


def _apply(plan: PrunePlan, fault: Callable[[str], None], checked: fs.CheckedDirectory | None) -> PruneResult:
    """apply_prune under the lock: locally through `checked`, in a bucket (None) by exact keys."""
    directory = plan.directory
    scan = scan_directory(directory)  # the directory as it is now, under the lock
    if not plan.ignore_bad_state:
        _refuse_bad_state(scan)
    best_damage: list[Damage] = []
    protected = protected_checkpoints(scan, best_damage)
    if best_damage and not plan.allow_damaged and _deletes_hf_members(scan, plan.deleted):
        raise _unknown_best(best_damage[0])  # damaged since it was planned
    skipped = tuple(d.name for d in plan.deleted if d.name in protected)
    problems: list[Problem] = []
    # Only what is still there: a plan applied twice (or after another run) deletes nothing
    # the second time, and says so. An interrupted run's journal entry stays while its
    # journal does, even with no file left: its state-file entries must still go.
    todo = [_deletable_now(scan, d, problems) for d in plan.deleted if d.name not in protected]
    trees = _listed_trees(scan, todo, problems) if checked is not None else {}
    if checked is not None and not checked.still_reached():
        raise changed_since_planned(directory, "nothing deleted")  # the scan and listings were of another one
    refused = {p.path for p in problems}
    todo = [replace(d, paths=tuple(p for p in d.paths if p not in refused)) for d in todo]
    # Nothing of these may go: their state-file entries stay, and they are not reported deleted.
    kept_whole = {d.name for d in plan.deleted if refused.intersection(d.paths)} - {d.name for d in todo if d.paths}
    drop = {d.name for d in todo} - kept_whole  # state-file entries to remove, of vanished checkpoints too
    journal_left = JOURNAL_FILENAME in scan.listing
    planned = plan.scan.listing if plan.scan is not None else None
    if journal_left and planned is not None and JOURNAL_FILENAME not in planned and not (
            LOCK_FILENAME in planned and fs.is_url(directory) and _journal_within_plan(plan)):
        # A run killed since we planned left it (in a bucket, perhaps written out of the stale lock
        # we just broke): ours would replace it, and its half-deleted checkpoints stay for ever.
        # Only the journal of the lock the plan listed and read, written out when we broke it, is
        # ours to replace: a lock listed is no proof that the journal found is that one's.
        raise Refused(f"an interrupted prune's journal appeared in {directory} since it was planned; nothing deleted",
                      hint="run prune again: it finishes that journal first")
    todo = [d for d in todo if d.paths or d.kind == "resumed" and journal_left]
    if not todo and not (journal_left and checked is not None):
        # (A local journal whose entries are all done or refused goes all the same: nothing of it
        # is left to resume, and every later run would report it again.)
        return PruneResult(plan, (), skipped, tuple(problems))
    dir_fd = checked.fd if checked is not None else None
    fs.write_atomic(fs.join(directory, JOURNAL_FILENAME), journal_bytes(todo), dir_fd=dir_fd)
    fault("journal written")
    if scan.state is not None:
        listed = {c.name for c in scan.checkpoints if c.in_state}
        if drop & listed:
            # None: a live writer kept replacing the file; its next save lists
            # its own checkpoints anyway, and the latest is never deleted.
            update_state(directory, lambda state: without_entries(state, directory, drop), dir_fd=dir_fd)
            fault("state file rewritten")
    if checked is None:
        _remove_batched(scan, todo, fault)
        fs.remove_files([fs.join(directory, JOURNAL_FILENAME)])
    else:
        kept_whole |= _remove_through(checked, todo, trees, problems, fault)
        checked.remove_file(JOURNAL_FILENAME)
        os.fsync(checked.fd)
    fault("journal removed")
    return PruneResult(plan, tuple(d for d in todo if d.name not in kept_whole), skipped, tuple(problems))


def _journal_within_plan(plan: PrunePlan) -> bool:
    """Whether the journal object now in `plan`'s bucket directory names nothing but checkpoints the
    plan deletes (as the listed lock's journal it read, written out when the lock was broken, does):
    ours then lists them all again. False when it names more, or cannot be read (one GET, only when
    a journal appeared)."""
    try:
        raw = fs.read_capped(fs.join(plan.directory, JOURNAL_FILENAME), JOURNAL_MAX_BYTES, "prune journal")
        names = {e["name"] for e in json.loads(raw)["deletions"]}
    except (CkptError, ValueError, KeyError, TypeError):
        return False
    return names <= {d.name for d in plan.deleted}


def _remove_through(checked: fs.CheckedDirectory, todo: list[Deletion], trees: dict[str, tuple[list[str], list[str]]],
                    problems: list[Problem], fault: Callable[[str], None]) -> set[str]:
    """Each deletion's files (index first) and directories (as `trees` listed them) removed through
    the checked directory's descriptor; what is found changed is left and reported in `problems`.
    Returns the names of which nothing at all was removed."""
    untouched = set()
    for deletion in todo:
        removed = False
        for path in _index_first(deletion.paths):
            name = fs.basename(path)
            why = checked.remove_tree(name, *trees[path]) if path in trees else checked.remove_file(name)
            if why:
                problems.append(Problem("not_deleted", path, f"not deleted: {why}"))
            removed = removed or not why
            fault(f"removed {name}")
        if deletion.paths and not removed:
            untouched.add(deletion.name)
    return untouched
