"""`ls -r --summary`: one row per run directory of a tree — its checkpoints (complete and damaged), its
newest step and time, its best score by a metric, its bytes, and the bytes prune's rules given on the
same command line would free (the plan prune itself makes: plan_prune, never a second reading of
the rules)."""
from __future__ import annotations

from dataclasses import dataclass

from ckpttool.errors import BadInput
from ckpttool.ops.retention.prune import plan_prune
from ckpttool.ops.retention.rules import RetentionRules
from ckpttool.ops.retention.scoring import MetricOptions, Scores
from ckpttool.ops.runs.scan import DirectoryScan


@dataclass(frozen=True)
class RunSummary:
    directory: str  # as given (or as found under the root given)
    checkpoints: int
    complete: int
    damaged: int  # incomplete or cut short: not restorable as they are
    newest_step: int | None  # the highest step of a complete checkpoint
    newest_time: float | None  # the time (state file's, else files') of the newest complete checkpoint
    best: str | None  # with a metric: the best-scored complete checkpoint's name
    best_score: float | None
    size_bytes: int  # every checkpoint's bytes (as `ls` counts them)
    leftover_bytes: int  # the debris' (leftover temp files and directories)
    reclaimable_bytes: int | None  # what the rules given would free; None without rules or when refused
    problem: str | None = None  # why reclaimable_bytes is None although rules were given


def summarize_run(directory: str, scan: DirectoryScan, scores: Scores | None, rules: RetentionRules | None,
                  metric: MetricOptions | None) -> RunSummary:
    """The row of run directory `scan` (as scanned; `scores` as read for it, if a metric was given)."""
    complete = [c for c in scan.checkpoints if c.complete]
    newest = max(complete, key=lambda c: c.time, default=None)
    best = next(iter(scores.best([c.name for c in complete])), None) if scores is not None else None
    reclaimable, problem = None, None
    if rules is not None:
        try:
            plan = plan_prune(scan.directory, rules, metric=metric, scan=scan)  # no second listing
        except BadInput as exc:  # one run's unreadable state file or metric hides no other run
            problem = exc.message
        else:
            if plan.refusal:
                problem = plan.refusal
            else:
                reclaimable = plan.freed_bytes
    return RunSummary(
        directory, len(scan.checkpoints), len(complete), len(scan.checkpoints) - len(complete),
        max((c.step for c in complete if c.step is not None), default=None),
        newest.time if newest is not None else None, best, scores.score(best) if best else None,
        sum(c.size_bytes for c in scan.checkpoints), sum(x.size_bytes for x in scan.leftovers),
        reclaimable, problem)
