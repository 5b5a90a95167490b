"""Applying many prune plans (`prune -r`): run directories several at a time, and a bucket's
deletions batched across run directories.

A bucket plan that plan_prune marked `batchable` (older saves its state file lists, plain objects,
a store that writes conditionally: S3 If-Match) is applied without listing its directory again:
  1. each run directory of a batch locked with its journal carried in the lock object's body (one
     conditional PUT; a journal that would make the lock larger than earlier versions read one is
     an object of its own, as apply_prune writes it), after the newest index of each TF family is
     read if the plan left it unread (`whole_unchecked`: is its data whole? if not, the newest
     whole one is kept: with_whole_checked); and its state file rewritten without
     the pruned entries only if it is still the version the plan listed (If-Match on its ETag): the
     evidence that nothing the plan depends on has changed since (that the saves it deletes are
     still older saves its writer lists). A state file changed since is not touched: that
     directory is applied as a single prune is (scanned again under its lock; a journal object of its
     own removed first);
  2. every index of the batch deleted, in requests of up to 1,000 keys (S3 DeleteObjects), then
     every data file and `.meta`: no index is ever left without its data, so TensorFlow never sees
     half a checkpoint;
  3. the journal objects deleted (if any), then the batch's locks removed together, each only if
     still ours (lock.release_locks: S3 DeleteObjects with each key's ETag): the journals they carry
     go with them.
The keys deleted are exactly those the plan listed and checked (path_problem). An interrupt in 2
leaves the journals (in the locks), which the next prune of each directory finishes: it breaks the
stale lock after writing its journal out as a journal object (ops/runs/lock.py). A failed request in
2 writes each lock's journal out so before removing it (a lock whose journal cannot be written is
left, to be broken so once stale).
Everything else (local directories, other stores, series members, journals to resume, debris) is
applied by apply_prune, a bounded number of directories at a time.
"""
from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from ckpttool.errors import Refused
from ckpttool.formats.tf.state import STATE_FILENAME, format_state
from ckpttool.ops.retention.prune import (JOURNAL_FILENAME, PrunePlan, PruneResult, apply_prune, apply_under_lock,
                                          batchable, journal_document, refuse_unless_inside,
                                          with_whole_checked)
from ckpttool.ops.runs.lock import LOCK_MAX_BYTES, HeldLock, keep_journal, locked_as_planned, release_locks
from ckpttool.ops.runs.statefile import without_entries
from ckpttool.storage import fs

WORKERS = 8  # run directories applied at once: each waits on the disk or the network, not the CPU
# A journal larger than this is an object of its own: the lock's body (the journal, a host name,
# pid, time and token) stays within what earlier versions read as a lock (else they break it at once).
LOCK_JOURNAL_MAX = LOCK_MAX_BYTES - 1024
BATCH_RUNS = 250  # run directories locked together for one round of batched deletes
LOCK_TIMEOUT = 600.0  # seconds a run directory's lock is waited for (apply_prune's default)

Fault = Callable[[str], None]
Done = Callable[[str], None]


@dataclass
class _Prepared:
    """A bucket run directory locked, journalled and its state file rewritten: its files to go."""

    index: int
    plan: PrunePlan
    lock: contextlib.ExitStack
    journal_object: bool  # its journal is an object of its own (too large for the lock's body)


def apply_prunes(plans: list[PrunePlan], fault: Fault | None = None, done: Done | None = None,
                 workers: int = WORKERS, lock_timeout: float = LOCK_TIMEOUT) -> list[PruneResult | Exception]:
    """apply_prune for each plan, in order of `plans`: a result, or the error that stopped that run
    directory (the others go on). `done(directory)` is called as each one is finished. A run
    directory whose lock another run holds for `lock_timeout` seconds is Refused (nothing done)."""
    fault = fault or (lambda _step: None)
    results: list[PruneResult | Exception | None] = [None] * len(plans)
    batched = [i for i, p in enumerate(plans) if p.batchable and p.refusal is None and _still_batchable(p)]
    alone = sorted(set(range(len(plans))) - set(batched))

    def one(i: int) -> None:
        results[i] = caught(lambda: apply_prune(plans[i], fault, lock_timeout))
        if done:
            done(plans[i].directory)

    _each(one, alone, workers)
    for start in range(0, len(batched), BATCH_RUNS):
        _apply_batch([(i, plans[i]) for i in batched[start:start + BATCH_RUNS]], results, fault, done, workers,
                     lock_timeout)
    return results  # type: ignore[return-value]


def _still_batchable(plan: PrunePlan) -> bool:
    """Whether `plan`'s deletions pass plan_prune's batchable check against the scan it carries:
    the batched path deletes with no second look, so a plan changed since plan_prune made it (a
    deletion added by the budget or a caller: the latest, a file of no checkpoint, an orphan the
    state file does not list) is applied as one directory is, scanned again under its lock."""
    scan = plan.scan
    return (scan is not None and scan.directory == plan.directory and plan.state == scan.state
            and plan.state_tag == scan.state_tag and batchable(scan, plan.deleted))


def caught(function, errors: type[BaseException] | tuple[type[BaseException], ...] = Exception):
    """function(), or the error of kind `errors` that stopped it: one run directory's failure is its
    result, and the others go on."""
    try:
        return function()
    except errors as exc:
        return exc


def _each(function: Callable[[int], None], items: list[int], workers: int) -> None:
    """function(item) for each, `workers` at a time; in this thread when there is one (a signal
    then reaches the work itself)."""
    if len(items) <= 1 or workers <= 1:
        for item in items:
            function(item)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        list(pool.map(function, items))


def _apply_batch(batch: list[tuple[int, PrunePlan]], results: list, fault: Fault, done: Done | None,
                 workers: int, lock_timeout: float) -> None:
    prepared: list[_Prepared] = []

    held: list[HeldLock] = []  # the batch's locks, removed together once it is done
    left_locked: set[str] = set()  # run directories whose lock stays, carrying a journal not written out

    def prepare(position: int) -> None:
        i, planned = batch[position]
        # Its newest indexes, if the plan left them unread (before our lock is written: the listing
        # the plan came from still gives their sizes, no request more).
        plan = caught(lambda: with_whole_checked(planned))
        if isinstance(plan, Exception) or not plan.deleted:  # (all it deleted is kept now)
            results[i] = plan if isinstance(plan, Exception) else PruneResult(plan, ())
            if done:
                done(planned.directory)
            return
        lock = contextlib.ExitStack()
        document = journal_document(plan.deleted)
        journal = json.dumps(document).encode()
        journal_object = len(journal) > LOCK_JOURNAL_MAX
        try:
            lock.enter_context(locked_as_planned(plan.directory, plan.directory_id, "nothing deleted",
                                                  lock_timeout, None if journal_object else document, held))
            if _journal_and_rewrite_state(plan, fault, journal if journal_object else None):
                prepared.append(_Prepared(i, plan, lock, journal_object))
                return
            results[i] = caught(lambda: apply_under_lock(plan, fault))  # changed since planned
        except Exception as exc:  # noqa: BLE001 - this run directory only
            results[i] = exc
        except BaseException:  # an interrupt: its lock released on the way out
            lock.close()
            raise
        lock.close()
        if done:
            done(plan.directory)

    try:
        _each(prepare, list(range(len(batch))), workers)
        prepared.sort(key=lambda p: p.index)
        files = [(p.plan.directory, path) for p in prepared for d in p.plan.deleted for path in d.paths]
        _remove([(d, f) for d, f in files if f.endswith(".index")])
        fault("removed the indexes")
        _remove([(d, f) for d, f in files if not f.endswith(".index")])
        fault("removed the data")
        _remove([(p.plan.directory, fs.join(p.plan.directory, JOURNAL_FILENAME)) for p in prepared
                 if p.journal_object])
        fault("journal removed")
        for p in prepared:
            results[p.index] = PruneResult(p.plan, p.plan.deleted)
    except Exception as exc:  # noqa: BLE001 - the batch's run directories keep their journals
        for p in prepared:
            results[p.index] = exc
        # Every lock stays until its journal is written out: an interrupt meanwhile leaves them all.
        left_locked = {p.plan.directory for p in prepared}
        left_locked = _journals_kept(prepared)
    except BaseException:  # an interrupt: the locks stay, carrying their journals, for the next prune
        left_locked = {p.plan.directory for p in prepared}
        raise
    finally:
        def release(position: int) -> None:
            p = prepared[position]
            try:
                p.lock.close()
            except Exception as exc:  # noqa: BLE001
                if not isinstance(results[p.index], Exception):
                    results[p.index] = exc
            if done:
                done(p.plan.directory)

        _each(release, list(range(len(prepared))), workers)
        # A lock that could not be removed is left stale: said for its run directory alone.
        unreleased = release_locks([h for h in held if h.directory not in left_locked])
        for i, plan in batch:
            if plan.directory in unreleased and not isinstance(results[i], Exception):
                results[i] = unreleased[plan.directory]


def _journals_kept(prepared: list[_Prepared]) -> set[str]:
    """After a failed batch: the journal each lock carries written out as its run directory's
    journal object (the next prune finishes it); the run directories whose journal could not be
    written, whose lock stays with the journal in it (a later prune breaks it once stale)."""
    left_locked = set()
    for p in prepared:
        if not p.journal_object:  # (else its journal object is there still: removed only once all went)
            failed = caught(lambda p=p: keep_journal(p.plan.directory, journal_document(p.plan.deleted)))
            if failed is not None:
                left_locked.add(p.plan.directory)
    return left_locked


def _journal_and_rewrite_state(plan: PrunePlan, fault: Fault, journal_object: bytes | None) -> bool:
    """Under the lock (carrying the journal of the plan's deletions, or with `journal_object` written
    here as an object of its own): the state file rewritten without them if it is still the version
    listed. False (a journal object removed, nothing else done) when it is not: the directory is then
    to be scanned again."""
    from ckpttool.storage import remote

    journal = fs.join(plan.directory, JOURNAL_FILENAME)
    if journal_object is not None:
        fs.write_atomic(journal, journal_object)
    fault("journal written")
    drop = {d.name for d in plan.deleted}
    text = format_state(without_entries(plan.state, plan.directory, drop)).encode("utf-8")
    try:
        remote.write_whole(fs.join(plan.directory, STATE_FILENAME), text, if_tag=plan.state_tag)
    except Refused:
        if journal_object is not None:
            fs.remove_files([journal])
        return False
    fault("state file rewritten")
    return True


def _remove(objects: list[tuple[str, str]]) -> None:
    """Exactly these objects (run directory, URL), each checked to lie directly in its run
    directory, in batched requests."""
    for directory, url in objects:
        refuse_unless_inside(directory, url, 0)
    fs.remove_files([url for _directory, url in objects])
