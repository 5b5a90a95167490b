"""`ckpttool prune DIR`: delete old checkpoints by retention rules (made for cron)."""
from __future__ import annotations

import sys
from typing import Annotated, List, Optional

import typer

from ckpttool import _pause_for_test
from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE, error_fields
from ckpttool.cli.options import (AllowDamagedMetrics, Directory, DryRun, EventsDir, Json, Metric, MetricsFile, Mode,
                                   NamePatternOpt, Quiet, Recursive, Yes, metric_options)
from ckpttool.errors import BadInput, Refused, UsageProblem
from ckpttool.ops.runs.scan import gc_paused


def _plan_document(directory: str, plan, deleted, dry_run: bool, not_deleted=()) -> dict:
    """`directory`: as given (or as found under the root given). With a metric, every checkpoint
    carries its `score` (null: none) and the document says which metric, direction and source.
    `not_deleted`: what the apply found changed and left alone, among the problems."""
    scored = plan.scores is not None
    return {
        "directory": directory,
        "dry_run": dry_run,
        **({"metric": plan.scores.document()} if scored else {}),
        "kept": [{"name": k.name, "step": k.step, "reasons": list(k.reasons), **({"score": k.score} if scored else {})}
                 for k in plan.kept],
        "deleted": [{"name": d.name, "step": d.step, "size_bytes": d.size_bytes, "kind": d.kind,
                     **({"score": d.score} if scored else {})} for d in deleted],
        "freed_bytes": sum(d.size_bytes for d in deleted),
        "problems": [{"kind": p.kind, "path": p.path, "message": p.message} for p in plan.problems + not_deleted],
        **({"refusal": plan.refusal} if plan.refusal else {}),
    }


_COLUMNS = [render.Column("name", kind=render.NAME), render.Column("step", right=True, drop=1),
            render.Column("action"), render.Column("why / size", kind=render.TEXT)]
_SCORED_COLUMNS = _COLUMNS[:2] + [render.Column("score", right=True)] + _COLUMNS[2:]


def _outcome(deleted: int, kept: int, freed: int, dry_run: bool) -> str:
    return (f"{deleted} {'to delete' if dry_run else 'deleted'}, {kept} kept, {render.human_bytes(freed)} "
            f"{'would be freed' if dry_run else 'freed'}")


def _print_plan(directory: str, plan, deleted, dry_run: bool, recursive: bool, warn: bool = True,
                not_deleted=()) -> None:
    scored = plan.scores is not None
    rows = [(k.name, "-" if k.step is None else k.step, *([render.score_text(k.score)] if scored else []), "keep",
             ", ".join(k.reasons)) for k in plan.kept]
    verb = "would delete" if dry_run else "deleted"
    rows += [(d.name, "-" if d.step is None else d.step, *([render.score_text(d.score)] if scored else []), verb,
              f"{render.human_bytes(d.size_bytes)}" + ("" if d.kind == "checkpoint" else f" ({d.kind})"))
             for d in deleted]
    rows.sort(key=lambda row: (row[1] if isinstance(row[1], int) else -1, row[0]))
    if scored:
        render.print_wrapped([(f"{directory}: " if recursive else "") + plan.scores.describe()])
    render.print_table(_SCORED_COLUMNS if scored else _COLUMNS, rows, title=directory if recursive else None)
    for p in plan.problems + not_deleted if warn else ():
        render.warn(f"{directory}: {p.message}")
    if not recursive:  # a tree gets one table of its directories instead
        render.print_lines([_outcome(len(deleted), len(plan.kept), sum(d.size_bytes for d in deleted), dry_run)])


_SUMMARY_COLUMNS = [render.Column("directory", kind=render.NAME), render.Column("kept", right=True),
                    render.Column("deleted", right=True), render.Column("freed", right=True)]


def _print_summary(results, dry_run: bool) -> None:
    """Per run directory and in total, as `huggingface-cli scan-cache` sums up a cache."""
    render.print_table(_SUMMARY_COLUMNS, [
        (d, len(plan.kept), len(deleted), render.human_bytes(sum(x.size_bytes for x in deleted)))
        for d, plan, deleted in results])
    totals = [sum(len(deleted) for _d, _plan, deleted in results), sum(len(plan.kept) for _d, plan, _x in results),
              sum(x.size_bytes for _d, _plan, deleted in results for x in deleted)]
    render.print_wrapped([f"{render.plural(len(results), 'run directory', 'run directories')}: "
                        + _outcome(*totals, dry_run)])


def _confirm(plans) -> bool:
    """The answer at the prompt: Ctrl-D (no answer) is no; Ctrl-C (or SIGTERM) is an interrupt."""
    count = sum(len(p.deleted) for _d, p in plans)
    size = render.human_bytes(sum(p.freed_bytes for _d, p in plans))
    try:
        return typer.confirm(f"Delete {render.plural(count, 'item')}, {size}?", default=False, err=True)
    except typer.Abort as exc:  # what the prompt makes of KeyboardInterrupt and EOFError
        print(file=sys.stderr)  # end the prompt's line
        if isinstance(exc.__context__, KeyboardInterrupt):
            print("nothing done", file=sys.stderr)
            raise exc.__context__ from None  # exit 130 (143 for SIGTERM), as anywhere else
        return False


@gc_paused()  # plans and rows of 100,000 checkpoints: as many objects as the scan's
def command(
    directory: Directory,
    keep_last: Annotated[Optional[int], typer.Option("--keep-last", metavar="N", help="Keep the newest N of each family.")] = None,
    keep_every_hours: Annotated[Optional[float], typer.Option("--keep-every-hours", metavar="H", help="Keep one checkpoint every H hours (as Saver's keep_checkpoint_every_n_hours).")] = None,
    keep_every_steps: Annotated[Optional[int], typer.Option("--keep-every-steps", metavar="K", help="Keep checkpoints whose step is divisible by K.")] = None,
    keep_step: Annotated[Optional[List[int]], typer.Option("--keep-step", metavar="STEP", help="Keep the checkpoint of this step (repeatable).")] = None,
    min_age: Annotated[Optional[str], typer.Option("--min-age", metavar="DURATION", help="Delete nothing younger than this (30m, 12h, 7d).")] = None,
    keep_best: Annotated[Optional[int], typer.Option("--keep-best", metavar="N", help="Keep the N best-scored checkpoints of each family by --metric (the best is kept whenever --metric is given; ties go to the older).")] = None,
    metric: Metric = None,
    mode: Mode = "auto",
    metrics_file: MetricsFile = None,
    events: EventsDir = None,
    name_pattern: NamePatternOpt = None,
    drop_unscored: Annotated[bool, typer.Option("--drop-unscored", help="Let other rules decide about checkpoints without a score (by default they are kept).")] = False,
    allow_damaged_metrics: AllowDamagedMetrics = False,
    clean: Annotated[bool, typer.Option("--clean", help="Also remove provable debris (incomplete checkpoints, *_temp directories, temp files of saves, Orbax *.orbax-checkpoint-tmp-* and exporter temp-<n> directories) older than --min-age (default 1h); anything else is reported, never deleted.")] = False,
    ignore_bad_state: Annotated[bool, typer.Option("--ignore-bad-state", help="Prune by file times even when the state file cannot be read (by default such a directory is refused: its latest checkpoint is unknown).")] = False,
    recursive: Recursive = False,
    dry_run: DryRun = False,
    yes: Yes = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Delete old checkpoints by retention rules; the latest is always kept.

    A checkpoint is kept if any rule keeps it. Each family (model.ckpt,
    best.ckpt, ...) is judged on its own. Not interactive and no --yes: exit 4.

    With --metric, each family's best is always kept too, and so is every
    checkpoint without a score unless --drop-unscored; a metric that cannot
    be read at all is exit 3, nothing deleted, and so is one read around
    damage (a record failing its CRC, a line that does not parse) unless
    --allow-damaged-metrics. The plan (--dry-run) shows each checkpoint's
    score, why it is kept, where the scores came from, and any damage.

    Keras checkpoint files, SavedModel export versions, Orbax and HF step
    directories are series too, each keeping its newest; a directory is
    deleted only when complete and holding nothing but its framework's files.

    DIR may be a bucket (gs://, s3://, other fsspec URLs). Runs take turns:
    on gs:// and s3:// through a lock object created only if absent, across
    hosts; on other stores only runs on the same host are kept apart.
    """
    from ckpttool.ops.runs.directories import require_directory
    from ckpttool.ops.retention.prune import plan_prune
    from ckpttool.ops.retention.rules import RetentionRules, parse_duration
    from ckpttool.ops.runs.scan import find_checkpoint_dirs, for_each_directory, moved_out_of_tree
    from ckpttool.ops.retention.scoring import DAMAGE_HINT

    rules = RetentionRules(keep_last, keep_every_hours, keep_every_steps, tuple(keep_step or ()),
                           parse_duration(min_age) if min_age is not None else None, keep_best, drop_unscored)
    rules.validate()
    # Without --metric, --allow-damaged-metrics still speaks for trainer_state.json's best_model_checkpoint.
    scoring = metric_options(metric, mode, metrics_file, events, name_pattern, allow_damaged_metrics and bool(metric))
    if scoring is None and (keep_best is not None or drop_unscored):
        raise UsageProblem("--keep-best and --drop-unscored need --metric TAG")
    require_directory(directory, "prune")
    skipped = []  # keys of the tree never followed (`root/../other`): reported, not pruned
    listings: dict = {}  # a bucket's run directories as the tree's one listing shows them
    dirs = find_checkpoint_dirs(directory, skipped, listings) if recursive else [directory]
    render.warn_all(p.message for p in skipped)

    def plan(d: str):
        try:
            if recursive and (moved := moved_out_of_tree(directory, d)):
                raise BadInput(moved)
            planned = plan_prune(d, rules, clean=clean, ignore_bad_state=ignore_bad_state, metric=scoring,
                                 allow_damaged=allow_damaged_metrics, entries=listings.get(d))
            if planned.refusal and not dry_run:  # a dry run shows the plan, and the damage among its problems
                raise BadInput(planned.refusal, hint=DAMAGE_HINT)
            return planned
        except BadInput as exc:
            if not recursive:
                raise
            return exc  # one broken run must not stop a cron job from pruning the others

    planned = for_each_directory(plan, dirs)
    plans = [(d, p) for d, p in zip(dirs, planned) if not isinstance(p, BadInput)]
    refused = [(d, p) for d, p in zip(dirs, planned) if isinstance(p, BadInput)]
    steps = {item.step for _d, plan in plans for item in plan.kept + plan.deleted}
    for step in sorted(set(rules.keep_steps) - steps):
        render.warn(f"--keep-step {step}: no checkpoint has step {step}")
    pending = any(p.deleted for _d, p in plans)
    if pending and not dry_run and not yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise Refused("not deleting without --yes when not interactive (nothing deleted)",
                          hint="preview with --dry-run, then rerun with --yes")
        for d, plan in plans:
            _print_plan(d, plan, plan.deleted, True, recursive, warn=False)
        if not _confirm(plans):
            print("nothing done", file=sys.stderr)
            return EXIT_NEGATIVE
    # Run directories several at a time, a bucket's deletions batched across them (each under its
    # own lock; a failure is raised once the others are done, the first in order, as it is one by one).
    applied = [(p.deleted, ()) for _d, p in plans] if dry_run else _apply_all([p for _d, p in plans],
                                                                            json_out or quiet)
    results = [(d, plan, gone) for (d, plan), (gone, _left) in zip(plans, applied)]
    not_deleted = {d: left for (d, _plan), (_gone, left) in zip(plans, applied)}
    if json_out:
        docs = [_plan_document(d, plan, deleted, dry_run, not_deleted[d]) for d, plan, deleted in results]
        docs += [{"directory": d, "error": error_fields(exc)} for d, exc in refused]
        render.emit_json("prune", docs[0] if not recursive else {
            "root": directory, "dry_run": dry_run, "directories": docs,
            "deleted_count": sum(len(deleted) for _d, _plan, deleted in results),
            "kept_count": sum(len(plan.kept) for _d, plan, _x in results),
            "freed_bytes": sum(doc.get("freed_bytes", 0) for doc in docs)})
    elif quiet:
        render.print_lines(d.name for _d, _plan, deleted in results for d in deleted)
    else:
        for d, plan, deleted in results:
            _print_plan(d, plan, deleted, dry_run, recursive, not_deleted=not_deleted[d])
        if recursive:
            _print_summary(results, dry_run)
    for d, exc in refused:
        render.warn(f"skipped {d}: {exc.message}")
    left = [p for problems in not_deleted.values() for p in problems]
    if left:
        if quiet or json_out:  # no plan printed them
            render.warn_all(f"{p.path}: {p.message}" for p in left)
        raise Refused(f"{render.plural(len(left), 'planned item was', 'planned items were')} not deleted: found "
                      "changed since planned, or not removable safely (see the warnings above); the rest was done",
                      hint="look at what is there now; remove it by hand if it should go")
    if refused:
        raise BadInput(f"not pruned: {render.plural(len(refused), 'directory', 'directories')} of {len(dirs)} "
                       "(see the warnings above)",
                       hint=refused[0][1].hint)
    return 0


def _apply_all(plans, quiet: bool) -> list:
    """(deleted, not deleted) of each plan, applied several at a time; one progress bar for them all
    on a terminal. The first failure, in order, is raised once the others are done."""
    from ckpttool.cli.progress import count_progress
    from ckpttool.ops.retention.batches import apply_prunes

    with count_progress("pruning run directories", len(plans) if len(plans) > 1 else 0, quiet) as advance:
        results = apply_prunes(plans, _pause_point, advance and (lambda _directory: advance(1)))
    for result in results:
        if isinstance(result, Exception):
            raise result
    return [(result.deleted, result.problems) for result in results]


def _pause_point(step: str) -> None:
    """apply_prune's hook after each file operation: a test can stop the run at one it names
    (CKPTTOOL_TEST_PAUSE="prune: journal written") and signal it there, never racing it."""
    _pause_for_test(f"prune: {step}")
