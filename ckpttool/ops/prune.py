"""`prune`: delete old checkpoints by retention rules, safely enough for cron.

plan_prune decides (pure: reads the directory, changes nothing); apply_prune
carries a plan out under the directory lock, in an order that keeps the
directory restorable at every instant:
  1. a journal of what is about to go (so an interrupted run is finished by the next);
  2. the state file rewritten atomically without the pruned entries;
  3. each checkpoint's files removed, index first;
  4. the journal removed.
Only regular files (and `*_temp` directories) directly inside the directory
are ever removed; state-file entries that point elsewhere are never followed.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable

from ckpttool.errors import CorruptCheckpoint
from ckpttool.formats.atomic import fsync_directory, write_bytes_atomic
from ckpttool.ops.lock import directory_lock
from ckpttool.ops.retention import RetentionRules, keep_reasons
from ckpttool.ops.scan import DirectoryScan, Problem, scan_directory
from ckpttool.ops.statefile import update_state, without_entries

JOURNAL_FILENAME = ".ckpttool-prune.journal"
CLEAN_DEFAULT_MIN_AGE = 3600.0  # --clean without --min-age spares debris younger than an hour


@dataclass(frozen=True)
class Kept:
    name: str
    step: int | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Deletion:
    name: str
    step: int | None
    size_bytes: int
    kind: str  # "checkpoint" | "incomplete" | "temp" | "resumed"
    paths: tuple[str, ...]


@dataclass(frozen=True)
class PrunePlan:
    directory: str
    kept: tuple[Kept, ...]
    deleted: tuple[Deletion, ...]
    problems: tuple[Problem, ...]

    @property
    def freed_bytes(self) -> int:
        return sum(d.size_bytes for d in self.deleted)


@dataclass(frozen=True)
class PruneResult:
    plan: PrunePlan
    deleted: tuple[Deletion, ...]
    skipped: tuple[str, ...] = field(default=())  # planned, but protected by the time we applied

    @property
    def freed_bytes(self) -> int:
        return sum(d.size_bytes for d in self.deleted)


def protected_checkpoints(scan: DirectoryScan) -> dict[str, str]:
    """Checkpoints no rule may delete: the latest (also of other state files such as
    best_checkpoint), and saves of its family with
    a higher step written after it (a writer that has not updated the state
    file yet; a restarted job's old orphans have higher steps but older files)."""
    protected: dict[str, str] = {name: f"latest in {state_file}" for name, state_file in scan.other_latest.items()
                                 if scan.by_name(name)}
    latest = scan.latest
    if scan.state_latest and scan.by_name(scan.state_latest):
        protected.setdefault(scan.state_latest, "latest")
    if latest is not None:
        protected.setdefault(latest.name, "latest")
        for c in scan.checkpoints:
            in_flight = (c.family == latest.family and c.step is not None and latest.step is not None
                         and c.step > latest.step and c.mtime >= latest.mtime)
            if in_flight and c.name not in protected:
                protected[c.name] = "newer than latest (save in progress?)"
    return protected


def _inside(directory: str, path: str) -> bool:
    return (os.path.realpath(os.path.dirname(path)) == os.path.realpath(directory)
            and not os.path.islink(path))


def _read_journal(directory: str) -> list[Deletion]:
    path = os.path.join(directory, JOURNAL_FILENAME)
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)["deletions"]
        return [Deletion(e["name"], e.get("step"), 0, "resumed", tuple(e["paths"])) for e in entries]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError):
        raise CorruptCheckpoint(f"unreadable prune journal {path}",
                                hint="remove it if no prune is running; it lists files an interrupted prune "
                                     "was deleting") from None


def plan_prune(directory: str, rules: RetentionRules, *, clean: bool = False, now: float | None = None) -> PrunePlan:
    rules.validate()
    now = time.time() if now is None else now
    scan = scan_directory(directory)
    protected = protected_checkpoints(scan)
    complete = [c for c in scan.checkpoints if c.complete]
    reasons = keep_reasons(complete, rules, now, protected)
    debris_age = rules.min_age_seconds if rules.min_age_seconds is not None else CLEAN_DEFAULT_MIN_AGE
    kept, deleted = [], []
    for c in scan.checkpoints:
        if c.complete:
            if reasons[c.name]:
                kept.append(Kept(c.name, c.step, tuple(reasons[c.name])))
            else:
                deleted.append(Deletion(c.name, c.step, c.size_bytes, "checkpoint", c.files))
            continue
        if c.name in protected:
            kept.append(Kept(c.name, c.step, (protected[c.name],)))
        elif clean and now - c.mtime >= debris_age:
            deleted.append(Deletion(c.name, c.step, c.size_bytes, "incomplete", c.files))
        else:
            kept.append(Kept(c.name, c.step, ("incomplete (use --clean)" if not clean else "incomplete, too young",)))
    if clean:
        for leftover in scan.leftovers:
            if now - leftover.mtime >= debris_age:
                deleted.append(Deletion(os.path.basename(leftover.path), None, leftover.size_bytes, "temp",
                                        (leftover.path,)))
    planned = {d.name for d in deleted}
    for pending in _read_journal(scan.directory):
        if pending.name not in planned and pending.name not in protected:
            paths = tuple(p for p in pending.paths if os.path.lexists(p))
            size = sum(os.lstat(p).st_size for p in paths)
            deleted.append(Deletion(pending.name, pending.step, size, "resumed", paths))
            kept = [k for k in kept if k.name != pending.name]
    return PrunePlan(scan.directory, tuple(kept), tuple(deleted), scan.problems)


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass  # already gone: a concurrent writer's own cleanup, or an earlier interrupted run


def _index_first(paths: tuple[str, ...]) -> list[str]:
    # Removing the index first makes the checkpoint invisible to TensorFlow at once.
    return sorted(paths, key=lambda p: (not p.endswith(".index"), p.endswith(".meta"), p))


def apply_prune(plan: PrunePlan, fault: Callable[[str], None] | None = None) -> PruneResult:
    """Carry out `plan`. `fault(step)` is called after every file operation (tests inject crashes there)."""
    fault = fault or (lambda _step: None)
    directory = plan.directory
    with directory_lock(directory):
        scan = scan_directory(directory)  # the directory as it is now, under the lock
        protected = protected_checkpoints(scan)
        todo = [d for d in plan.deleted if d.name not in protected]
        skipped = tuple(d.name for d in plan.deleted if d.name in protected)
        todo = [Deletion(d.name, d.step, d.size_bytes, d.kind, tuple(p for p in d.paths if _inside(directory, p)))
                for d in todo]
        if not todo:
            return PruneResult(plan, (), skipped)
        journal = {"deletions": [{"name": d.name, "step": d.step, "paths": list(d.paths)} for d in todo]}
        write_bytes_atomic(os.path.join(directory, JOURNAL_FILENAME), json.dumps(journal).encode())
        fault("journal written")
        if scan.state is not None:
            drop = {d.name for d in todo}
            listed = {c.name for c in scan.checkpoints if c.in_state}
            if drop & listed:
                # None: a live writer kept replacing the file; its next save lists
                # its own checkpoints anyway, and the latest is never deleted.
                update_state(directory, lambda state: without_entries(state, directory, drop))
                fault("state file rewritten")
        for deletion in todo:
            for path in _index_first(deletion.paths):
                _remove(path)
                fault(f"removed {os.path.basename(path)}")
        os.unlink(os.path.join(directory, JOURNAL_FILENAME))
        fsync_directory(directory)
        fault("journal removed")
    return PruneResult(plan, tuple(todo), skipped)
