"""`prune --budget SIZE`: after the rules, delete further checkpoints, oldest first across every run
directory of a tree, until the checkpoints left fit in SIZE.

What may go is what the rules kept only for a count or a spacing (keep-last, keep-every-hours,
keep-every-steps, the ranks of keep-best below the best, an unscored checkpoint, no rule at all):
never a run's latest or any checkpoint protected_checkpoints keeps (each series' newest complete
member, the HF Trainer's best), the best by the metric, a --keep-step, one younger than --min-age,
one that is incomplete or holds files its framework does not write, nor any checkpoint of a plan
refused for damaged scores (a deletion would depend on them). The budget counts checkpoint bytes,
the bytes `ls -r` totals (logs and other files are not the budget's: nothing deletes them).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from ckpttool.errors import CkptError
from ckpttool.ops.retention.prune import Deletion, PrunePlan, batchable, with_whole_checked
from ckpttool.ops.retention.rules import yields_to_budget
from ckpttool.ops.runs.scan import DirectoryScan, scan_directory

BUDGET_KIND = "budget"  # a Deletion's kind when the budget, not a rule, takes it


@dataclass(frozen=True)
class BudgetOutcome:
    budget_bytes: int
    bytes_before: int  # checkpoint bytes left by the rules alone
    bytes_after: int  # left once the budget's deletions are done too
    deleted: int  # checkpoints the budget deletes beyond the rules

    @property
    def missed_by(self) -> int:
        """Bytes over the budget once everything that may go is gone (0: it fits)."""
        return max(0, self.bytes_after - self.budget_bytes)


def fit_budget(plans: list[tuple[str, PrunePlan]], budget_bytes: int, untouched: list[str] = (),
               scans: dict[str, DirectoryScan] | None = None) -> tuple[list[tuple[str, PrunePlan]], BudgetOutcome]:
    """`plans` (as given, per run directory) with the budget's deletions added, and the outcome.
    `untouched`: run directories of the tree not pruned (their plan refused): their checkpoints
    count, none of them goes. Each plan is weighed by the scan it was made from (plan.scan), an
    untouched directory by its scan in `scans` (by directory, as planned); only a directory with
    neither is scanned here."""
    scans = scans or {}
    # The newest indexes a plan left unread (a bucket's, read as the batch applies it): read now,
    # since what they protect is never the budget's.
    plans = _whole_checked(plans)
    left = sum(_checkpoint_bytes(scans.get(d) or d) for d in untouched)
    candidates = []  # (time, step, order of the plan, name, checkpoint)
    weighed: dict[int, DirectoryScan] = {}
    for index, (_d, plan) in enumerate(plans):
        scan = weighed[index] = plan.scan or scans.get(plan.directory) or scan_directory(plan.directory)
        going = {d.name for d in plan.deleted}
        left += sum(c.size_bytes for c in scan.checkpoints if c.name not in going)
        if plan.refusal is not None or (plan.scores is not None and plan.scores.damage and not plan.allow_damaged):
            continue
        for kept in plan.kept:
            c = scan.by_name(kept.name)
            if c is not None and c.deletable and yields_to_budget(kept.reasons):
                candidates.append((c.time, c.step if c.step is not None else -1, index, c.name, c, kept.score))
    before = left
    taken: dict[int, list[Deletion]] = {}
    for _time, _step, index, _name, c, score in sorted(candidates, key=lambda t: t[:4]):
        if left <= budget_bytes:
            break
        taken.setdefault(index, []).append(Deletion(c.name, c.step, c.size_bytes, BUDGET_KIND, c.files, score))
        left -= c.size_bytes
    fitted = []
    for index, (d, plan) in enumerate(plans):
        extra = taken.get(index, [])
        if extra:
            names = {x.name for x in extra}
            deleted = plan.deleted + tuple(extra)
            # Batched (no second look under the lock) only if the budget's deletions pass the check too.
            plan = replace(plan, kept=tuple(k for k in plan.kept if k.name not in names), deleted=deleted,
                           batchable=plan.scan is not None and batchable(weighed[index], deleted))
        fitted.append((d, plan))
    return fitted, BudgetOutcome(budget_bytes, before, left, sum(len(x) for x in taken.values()))


def _whole_checked(plans: list[tuple[str, PrunePlan]]) -> list[tuple[str, PrunePlan]]:
    """Each plan with_whole_checked, a bucket's several at a time (one request each, waiting on the
    network)."""
    if not any(p.whole_unchecked for _d, p in plans):
        return plans
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(zip([d for d, _p in plans], pool.map(lambda item: with_whole_checked(item[1]), plans)))


def budget_as_applied(outcome: BudgetOutcome, plans: list[PrunePlan],
                      deleted: list[tuple[Deletion, ...] | None]) -> BudgetOutcome:
    """`outcome` as the plans were carried out (`deleted`: what each deleted, None where its run
    directory failed): a planned deletion not done (that run failed, or it was kept after all:
    a newest index read as it was applied) still counts as there."""
    rules_left = budget_left = done_by_budget = 0
    for plan, gone in zip(plans, deleted):
        names = {d.name for d in gone or ()}
        for d in plan.deleted:
            c = plan.scan.by_name(d.name) if plan.scan is not None else None
            if c is None:
                continue  # not a checkpoint the budget counted (debris, a temp)
            if d.name in names:
                done_by_budget += d.kind == BUDGET_KIND
            elif d.kind == BUDGET_KIND:
                budget_left += c.size_bytes
            else:
                rules_left += c.size_bytes
    return replace(outcome, bytes_before=outcome.bytes_before + rules_left, deleted=done_by_budget,
                   bytes_after=outcome.bytes_after + rules_left + budget_left)


def _checkpoint_bytes(directory: str | DirectoryScan) -> int:
    """Checkpoint bytes of a directory, or of it as already scanned."""
    try:
        scan = directory if isinstance(directory, DirectoryScan) else scan_directory(directory)
    except CkptError:
        return 0  # unreadable: nothing known to count
    return sum(c.size_bytes for c in scan.checkpoints)
