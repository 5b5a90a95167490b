"""`ckpttool prune DIR`: delete old checkpoints by retention rules (made for cron); `prune --policy
FILE`, every run directory a retention policy governs, each by its rule; and `ckpttool policy check
FILE`, which rule governs each run directory.

Under a policy each run directory is planned and applied as `prune DIR` would with its rule's options
(its lock, journal and state file, the latest and each series' newest complete member kept, deletion
only on evidence), several at a time and batched in buckets as `prune -r` is (the same _apply_all).
One that fails (damage, a metric that cannot be read, a lock another run holds: not waited for) is
reported and the others go on; the exit status is then 3.
"""
from __future__ import annotations

import enum
import sys
from typing import Annotated, Optional

import typer

from ckpttool import _pause_for_test
from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE, error_fields
from ckpttool.cli import fleet
from ckpttool.cli.metric_options import metric_options, retention_rules
from ckpttool.cli.options import (AllowDamagedMetrics, DropUnscored, DryRun, EventsDir, Json, KeepBest,
                                  KeepEveryHours, KeepEverySteps, KeepLast, KeepStep, Metric, MetricsFile, MinAge, Mode,
                                  NamePatternOpt, Quiet, Recursive, Yes)
from ckpttool.errors import BadInput, CkptError, Refused, UsageProblem
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


def _confirm(plans, failed=None) -> bool:
    """The answer at the prompt: Ctrl-D (no answer) is no; Ctrl-C (or SIGTERM) is an interrupt. The
    count and size take in the failed run directories `failed` (--drop-failed-runs) drops too."""
    count = sum(len(p.deleted) for _d, p in plans)
    size = render.human_bytes(sum(p.freed_bytes for _d, p in plans) + (failed.freed_bytes if failed else 0))
    runs = len(failed.dropped) if failed is not None else 0
    runs_text = render.plural(runs, "failed run directory", "failed run directories")
    what = render.plural(count, "item") + (f" and {runs_text}" if runs else "")
    try:
        return typer.confirm(f"Delete {what}, {size}?", default=False, err=True)
    except typer.Abort as exc:  # what the prompt makes of KeyboardInterrupt and EOFError
        print(file=sys.stderr)  # end the prompt's line
        if isinstance(exc.__context__, KeyboardInterrupt):
            print("nothing done", file=sys.stderr)
            raise exc.__context__ from None  # exit 130 (143 for SIGTERM), as anywhere else
        return False


def _agreed(plans, dry_run: bool, yes: bool, recursive: bool, label=lambda d: d, failed=None) -> bool:
    """Whether to apply `plans` (and drop `failed`'s runs): at once with --dry-run or --yes or when
    nothing is to go; else the plan is shown and the person at the terminal asked. Not interactive
    without --yes: Refused (exit 4), nothing deleted."""
    pending = any(p.deleted for _d, p in plans) or bool(failed and failed.dropped)
    if not pending or dry_run or yes:
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise Refused("not deleting without --yes when not interactive (nothing deleted)",
                      hint="preview with --dry-run, then rerun with --yes")
    for d, plan in plans:
        _print_plan(label(d), plan, plan.deleted, True, recursive, warn=False)
    if failed is not None:
        fleet.print_failed_runs(failed, None, True)
    if _confirm(plans, failed):
        return True
    print("nothing done", file=sys.stderr)
    return False


@gc_paused()  # plans and rows of 100,000 checkpoints: as many objects as the scan's
def command(
    directory: Annotated[Optional[str], typer.Argument(metavar="DIR", help="A checkpoint directory (none with --policy).", show_default=False)] = None,
    policy: Annotated[Optional[str], typer.Option("--policy", metavar="FILE", help="Prune every run directory a retention policy (TOML) governs, each by its rule; no DIR or rule options then (docs/guides/policies.md).")] = None,
    keep_last: KeepLast = None,
    keep_every_hours: KeepEveryHours = None,
    keep_every_steps: KeepEverySteps = None,
    keep_step: KeepStep = None,
    min_age: MinAge = None,
    keep_best: KeepBest = None,
    metric: Metric = None,
    mode: Mode = "auto",
    metrics_file: MetricsFile = None,
    events: EventsDir = None,
    name_pattern: NamePatternOpt = None,
    drop_unscored: DropUnscored = False,
    allow_damaged_metrics: AllowDamagedMetrics = False,
    clean: Annotated[bool, typer.Option("--clean", help="Also remove provable debris (incomplete checkpoints, *_temp directories, temp files of saves, Orbax *.orbax-checkpoint-tmp-* and exporter temp-<n> directories) older than --min-age (default 1h); anything else is reported, never deleted.")] = False,
    ignore_bad_state: Annotated[bool, typer.Option("--ignore-bad-state", help="Prune by file times even when the state file cannot be read (by default such a directory is refused: its latest checkpoint is unknown).")] = False,
    recursive: Recursive = False,
    budget: fleet.Budget = None,
    drop_failed_runs: fleet.DropFailedRuns = None,
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

    With --policy FILE (no DIR, no rule options): every run directory a
    retention policy governs, each by the first rule whose glob matches it;
    `ckpttool policy check FILE` shows which. One that fails is reported and
    the others go on (exit 3).

    DIR may be a bucket (gs://, s3://, other fsspec URLs). Runs take turns:
    on gs:// and s3:// through a lock object created only if absent, across
    hosts; on other stores only runs on the same host are kept apart.
    """
    if policy is not None:
        refuse_with_policy([name for name, value in (
            ("DIR", directory), ("--keep-last", keep_last), ("--keep-every-hours", keep_every_hours),
            ("--keep-every-steps", keep_every_steps), ("--keep-step", keep_step), ("--min-age", min_age),
            ("--keep-best", keep_best), ("--metric", metric), ("--mode", None if mode == "auto" else mode),
            ("--metrics", metrics_file), ("--events", events), ("--name-pattern", name_pattern),
            ("--drop-unscored", drop_unscored or None), ("--allow-damaged-metrics", allow_damaged_metrics or None),
            ("--clean", clean or None), ("--ignore-bad-state", ignore_bad_state or None),
            ("--recursive", recursive or None), ("--budget", budget),
            ("--drop-failed-runs", drop_failed_runs)) if value is not None])
        return prune_by_policy(policy, dry_run, yes, json_out, quiet)
    if directory is None:
        raise UsageProblem("missing DIR: the checkpoint directory to prune (or --policy FILE)",
                           hint="see `ckpttool prune --help`")
    from ckpttool.ops.runs.directories import require_directory
    from ckpttool.ops.retention.prune import plan_prune
    from ckpttool.ops.retention.budget import budget_as_applied, fit_budget
    from ckpttool.ops.retention.failed_runs import apply_failed_runs, plan_failed_runs
    from ckpttool.ops.runs.scan import find_checkpoint_dirs, for_each_directory, moved_out_of_tree
    from ckpttool.ops.retention.scoring import DAMAGE_HINT

    rules = retention_rules(keep_last, keep_every_hours, keep_every_steps, keep_step, min_age, keep_best, drop_unscored)
    rules, budget_bytes, failed_age = fleet_options(rules, budget, drop_failed_runs, recursive)
    # Without --metric, --allow-damaged-metrics still speaks for trainer_state.json's best_model_checkpoint.
    scoring = metric_options(metric, mode, metrics_file, events, name_pattern, allow_damaged_metrics and bool(metric))
    if scoring is None and (keep_best is not None or drop_unscored):
        raise UsageProblem("--keep-best and --drop-unscored need --metric TAG")
    require_directory(directory, "prune")
    skipped = []  # keys of the tree never followed (`root/../other`): reported, not pruned
    listings: dict = {}  # a bucket's run directories as the tree's one listing shows them
    dirs = find_checkpoint_dirs(directory, skipped, listings) if recursive else [directory]
    render.warn_all(p.message for p in skipped)
    failed = plan_failed_runs(directory, dirs, failed_age) if failed_age is not None else None
    dirs = [d for d in dirs if failed is None or d not in failed.directories] if rules is not None else []

    refused_scans: dict = {}  # run directories whose plan is refused, as scanned: --budget counts their bytes

    def plan(d: str):
        try:
            if recursive and (moved := moved_out_of_tree(directory, d)):
                raise BadInput(moved)
            planned = plan_prune(d, rules, clean=clean, ignore_bad_state=ignore_bad_state, metric=scoring,
                                 allow_damaged=allow_damaged_metrics, entries=listings.get(d),
                                 whole_check_at_apply=yes and not dry_run,
                                 helper=not recursive and not render.to_terminal())
            if planned.refusal and not dry_run:  # a dry run shows the plan, and the damage among its problems
                refused_scans[d] = planned.scan
                raise BadInput(planned.refusal, hint=DAMAGE_HINT)
            return planned
        except BadInput as exc:
            if not recursive:
                raise
            return exc  # one broken run must not stop a cron job from pruning the others

    planned = for_each_directory(plan, dirs)
    plans = [(d, p) for d, p in zip(dirs, planned) if not isinstance(p, BadInput)]
    refused = [(d, p) for d, p in zip(dirs, planned) if isinstance(p, BadInput)]
    outcome = None
    if budget_bytes is not None:
        plans, outcome = fit_budget(plans, budget_bytes, [d for d, _exc in refused], refused_scans)
    steps = {item.step for _d, plan in plans for item in plan.kept + plan.deleted}
    for step in sorted(set(rules.keep_steps if rules else ()) - steps):
        render.warn(f"--keep-step {step}: no checkpoint has step {step}")
    if not _agreed(plans, dry_run, yes, recursive, failed=failed):
        return EXIT_NEGATIVE
    # Run directories several at a time, a bucket's deletions batched across them (each under its
    # own lock; a failure is raised once the others are done, the first in order, as it is one by one).
    applied = _apply_all([p for _d, p in plans], dry_run, json_out or quiet)
    unapplied = _unapplied(plans, applied, recursive)
    if outcome is not None and not dry_run:  # the budget as met: a run that failed freed nothing
        outcome = budget_as_applied(outcome, [p for _d, p in plans],
                                    [None if isinstance(a, Exception) else a[1] for a in applied])
    done = [(d, outcome) for (d, _plan), outcome in zip(plans, applied) if not isinstance(outcome, Exception)]
    results = [(d, plan, gone) for d, (plan, gone, _left) in done]
    failed_result = apply_failed_runs(failed) if failed is not None and not dry_run else None
    not_deleted = {d: left for d, (_plan, _gone, left) in done}
    if json_out:
        docs = [_plan_document(d, plan, deleted, dry_run, not_deleted[d]) for d, plan, deleted in results]
        docs += [{"directory": d, "error": error_fields(exc)} for d, exc in refused + unapplied]
        render.emit_json("prune", docs[0] if not recursive else {
            "root": directory, "dry_run": dry_run, "directories": docs,
            "deleted_count": sum(len(deleted) for _d, _plan, deleted in results),
            "kept_count": sum(len(plan.kept) for _d, plan, _x in results),
            "freed_bytes": sum(doc.get("freed_bytes", 0) for doc in docs),
            **(fleet.budget_document(outcome) if outcome is not None else {}),
            **(fleet.failed_runs_document(failed, failed_result, dry_run) if failed is not None else {})})
    elif quiet:
        render.print_lines(d.name for _d, _plan, deleted in results for d in deleted)
        render.print_lines(run.directory for run in (failed_result.dropped if failed_result else ()))
    else:
        for d, plan, deleted in results:
            _print_plan(d, plan, deleted, dry_run, recursive, not_deleted=not_deleted[d])
        if recursive and rules is not None:  # (--drop-failed-runs alone prunes no run)
            _print_summary(results, dry_run)
        if failed is not None:
            fleet.print_failed_runs(failed, failed_result, dry_run)
        if outcome is not None:
            render.print_lines([fleet.budget_line(outcome, dry_run)])
    if (quiet or json_out) and failed_result is not None:  # no table printed them
        render.warn_all(f"{directory}: not dropped: {why}" for directory, why in failed_result.problems)
    for d, exc in refused:
        render.warn(f"skipped {d}: {exc.message}")
    for d, exc in unapplied:
        render.warn(f"not pruned: {d}: {error_fields(exc)['message']}")
    if unapplied:  # the first failure's own error and exit status, as when run directories are pruned one by one
        raise unapplied[0][1]
    _refuse_if_left([p for problems in not_deleted.values() for p in problems], quiet or json_out)
    if refused:
        raise BadInput(f"not pruned: {render.plural(len(refused), 'directory', 'directories')} of {len(dirs)} "
                       "(see the warnings above)",
                       hint=refused[0][1].hint)
    if failed_result is not None and failed_result.problems:
        raise Refused(f"{render.plural(len(failed_result.problems), 'failed run was', 'failed runs were')} not "
                      "dropped: found changed since planned (see the warnings above); the rest was done")
    if outcome is not None and outcome.missed_by:
        render.warn(f"budget of {render.human_bytes(outcome.budget_bytes)} missed by "
                    f"{render.human_bytes(outcome.missed_by)}: nothing else may be deleted")
        return EXIT_NEGATIVE
    return 0


def fleet_options(rules, budget: str | None, drop_failed_runs: str | None, recursive: bool):
    """(rules, budget in bytes, AGE in seconds) of the fleet options: rules None when only
    --drop-failed-runs is given (no run is pruned), keep_all when only --budget is."""
    from dataclasses import replace

    from ckpttool.ops.retention.rules import parse_duration
    from ckpttool.ops.retention.selection import parse_size

    for value, option in ((budget, "--budget"), (drop_failed_runs, "--drop-failed-runs")):
        if value is not None and not recursive:
            raise UsageProblem(f"{option} needs --recursive (-r): it acts on a tree of run directories")
    budget_bytes = int(parse_size(budget)) if budget is not None else None
    age = parse_duration(drop_failed_runs) if drop_failed_runs is not None else None
    if not rules.given and budget_bytes is not None:
        rules = replace(rules, keep_all=True)
    elif not rules.given and age is not None:
        rules = None
    if rules is not None:
        rules.validate()
    return rules, budget_bytes, age


def _apply_all(plans, dry_run: bool, quiet: bool, lock_timeout: float | None = None) -> list:
    """(plan, deleted, not deleted) of each plan, or the error that stopped it (the others go on),
    applied several at a time and a bucket's deletions batched across run directories
    (ops/retention/batches.py); one progress bar for them all on a terminal. The plan is the one
    applied: a batched bucket plan that had not read its newest indexes keeps what reading them
    protects. A dry run applies nothing."""
    from ckpttool.cli.progress import count_progress
    from ckpttool.ops.retention.batches import LOCK_TIMEOUT, apply_prunes

    if dry_run:
        return [(p, p.deleted, ()) for p in plans]
    with count_progress("pruning run directories", len(plans) if len(plans) > 1 else 0, quiet) as advance:
        results = apply_prunes(plans, _pause_point, advance and (lambda _directory: advance(1)),
                               lock_timeout=LOCK_TIMEOUT if lock_timeout is None else lock_timeout)
    return [result if isinstance(result, Exception) else (result.plan, result.deleted, result.problems)
            for result in results]


def _unapplied(plans, applied, recursive: bool) -> list:
    """(directory, error) of each plan whose apply failed. A single directory's error is raised at
    once; under -r the others' deletions are reported first and the first failure is raised after
    them, whatever it is (out of memory, a bug): the others were applied all the same, so what they
    deleted must be said. (An interrupt is no failure here: it stops every run directory.)"""
    unapplied = [(d, outcome) for (d, _plan), outcome in zip(plans, applied) if isinstance(outcome, Exception)]
    if unapplied and not recursive:
        raise unapplied[0][1]
    return unapplied


def _refuse_if_left(left, unprinted: bool) -> None:
    """Refused (exit 4) when planned items were found changed and left alone; said on stderr first
    when no plan printed them (--quiet, --json)."""
    if not left:
        return
    if unprinted:
        render.warn_all(f"{p.path}: {p.message}" for p in left)
    raise Refused(f"{render.plural(len(left), 'planned item was', 'planned items were')} not deleted: found "
                  "changed since planned, or not removable safely (see the warnings above); the rest was done",
                  hint="look at what is there now; remove it by hand if it should go")


def _pause_point(step: str) -> None:
    """apply_prune's hook after each file operation: a test can stop the run at one it names
    (CKPTTOOL_TEST_PAUSE="prune: journal written") and signal it there, never racing it."""
    _pause_for_test(f"prune: {step}")


# -- policies ----------------------------------------------------------------------------------

PolicyFile = Annotated[str, typer.Argument(metavar="FILE", help="A retention policy (TOML).", show_default=False)]
# A run directory another ckpttool run is pruning is skipped at once: a fleet does not wait on it.
POLICY_LOCK_TIMEOUT = 0.0


class Action(str, enum.Enum):
    check = "check"


def policy_command(
    action: Annotated[Action, typer.Argument(metavar="check", help="What to do with FILE: check.", show_default=False)],
    file: PolicyFile,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Show which rule of a retention policy governs each run directory.

    Run directories are found as `prune -r` finds them, under each
    directory a rule's globs match; the first rule (in file order) whose
    glob matches a run directory or one of its parents governs it. Also
    listed: run directories beside the matched ones (under their parent
    directories) that no rule governs. Nothing is read but listings and
    file names; nothing is changed. A glob that matches nothing, an
    unknown key or a bad value: exit 2, naming the file, line and key.
    """
    from ckpttool.ops.retention.policy import match_policy
    from ckpttool.ops.retention.policy_file import read_policy

    match = match_policy(read_policy(file), survey=True)
    counts = {rule.index: 0 for rule in match.policy.rules}
    for governed in match.governed:
        counts[governed.rule.index] += 1
    if json_out:
        render.emit_json("policy", {
            "policy": file,
            "rules": [{**rule.document(), "matched": list(roots), "governs": counts[rule.index]}
                      for rule, roots in zip(match.policy.rules, match.matched)],
            "directories": [{"directory": g.directory, "rule": g.rule.document()} for g in match.governed],
            "ungoverned": list(match.ungoverned),
            "problems": [{"kind": p.kind, "path": p.path, "message": p.message} for p in match.problems]})
        return 0
    render.warn_all(p.message for p in match.problems)
    if quiet:
        render.print_lines(g.directory for g in match.governed)
        return 0
    render.print_table([render.Column("directory", kind=render.NAME), render.Column("rule", right=True),
                        render.Column("paths", kind=render.TEXT)],
                       [(g.directory, g.rule.index, " ".join(g.rule.paths)) for g in match.governed])
    for rule in match.policy.rules:
        if not counts[rule.index]:
            render.warn(f"{file}:{rule.line}: rule {rule.index} governs no run directory "
                        "(an earlier rule's glob matches them, or they hold no checkpoints)")
    lines = [f"{render.plural(len(match.governed), 'run directory', 'run directories')} governed by "
             f"{render.plural(len(match.policy.rules), 'rule')}"]
    if match.ungoverned:
        lines += [f"{render.plural(len(match.ungoverned), 'run directory', 'run directories')} "
                  "governed by no rule:"] + [f"  {d}" for d in match.ungoverned]
    render.print_lines(lines)
    return 0


def refuse_with_policy(given: list[str]) -> None:
    """`prune --policy` takes its rules and directories from the file only."""
    if given:
        raise UsageProblem(f"--policy takes the directories and rules from the policy file: not with "
                           f"{', '.join(given)}", hint="move the rule into the policy file, or prune DIR without "
                                                       "--policy")


def prune_by_policy(file: str, dry_run: bool, yes: bool, json_out: bool, quiet: bool) -> int:
    """`prune --policy FILE`: plan every run directory by its rule, ask (or need --yes), apply them
    as `prune -r` does (several at a time, a bucket's deletions batched across run directories)."""
    from ckpttool.ops.retention.policy import plan_policy
    from ckpttool.ops.retention.policy_file import read_policy

    planned = plan_policy(read_policy(file), dry_run, whole_check_at_apply=yes and not dry_run)
    match = planned.match
    rule_of = {g.directory: g for g in match.governed}
    render.warn_all(p.message for p in match.problems)

    def label(directory: str) -> str:
        return _label(rule_of[directory])

    directories = [g.directory for g in match.governed]
    failed = [(g.directory, exc) for g, exc in planned.failed]
    plans = [(g.directory, p) for g, p in planned.planned]
    if not _agreed(plans, dry_run, yes, True, label):
        return EXIT_NEGATIVE
    applied = _apply_all([p for _d, p in plans], dry_run, json_out or quiet, POLICY_LOCK_TIMEOUT)
    failed += [(d, a) for (d, _p), a in zip(plans, applied) if isinstance(a, BaseException)]
    results = [(d, *a) for (d, _p), a in zip(plans, applied) if not isinstance(a, BaseException)]
    if json_out:
        docs = [{**_plan_document(d, p, gone, dry_run, left), "rule": rule_of[d].rule.document()}
                for d, p, gone, left in results]
        docs += [{"directory": d, "rule": rule_of[d].rule.document(), "error": error_fields(exc)}
                 for d, exc in failed]
        render.emit_json("prune", {
            "policy": file, "dry_run": dry_run, "directories": docs,
            "deleted_count": sum(len(gone) for _d, _p, gone, _l in results),
            "kept_count": sum(len(p.kept) for _d, p, _g, _l in results),
            "freed_bytes": sum(doc.get("freed_bytes", 0) for doc in docs),
            "failed_count": len(failed),
            "problems": [{"kind": p.kind, "path": p.path, "message": p.message} for p in match.problems]})
    elif quiet:
        render.print_lines(x.name for _d, _p, gone, _l in results for x in gone)
    else:
        for d, p, gone, left in results:
            _print_plan(label(d), p, gone, dry_run, True, not_deleted=left)
        _print_summary([(label(d), p, gone) for d, p, gone, _l in results], dry_run)
    for d, exc in failed:
        render.warn(f"not pruned: {label(d)}: {error_fields(exc)['message']}")
    left = [x for _d, _p, _g, problems in results for x in problems]
    if failed:
        if left and (quiet or json_out):
            render.warn_all(f"{x.path}: {x.message}" for x in left)
        # One that is no checkpoint or storage problem (out of memory, a bug): its own error and exit
        # status, after the others' deletions (done all the same) were reported.
        unexpected = next((exc for _d, exc in failed if not isinstance(exc, (CkptError, OSError))), None)
        if unexpected is not None:
            raise unexpected
        raise BadInput(f"not pruned: {render.plural(len(failed), 'run directory', 'run directories')} of "
                       f"{len(directories)} (see the warnings above); the others were "
                       f"{'planned' if dry_run else 'pruned'}", hint=error_fields(failed[0][1])["hint"])
    _refuse_if_left(left, quiet or json_out)
    return 0


def _label(governed) -> str:
    """A run directory as tables and warnings name it: with the rule that governs it."""
    return f"{governed.directory} (rule {governed.rule.index})"
