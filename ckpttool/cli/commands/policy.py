"""`ckpttool policy check FILE`: which rule of a retention policy governs each run directory; and
`prune --policy FILE`, the prune of every run directory a policy governs, each by its rule.

Each run directory is planned and applied as `prune DIR` would with its rule's options (its lock,
journal and state file, the latest and each series' newest complete member kept, deletion only on
evidence). One that fails (damage, a metric that cannot be read, a lock another run holds: not
waited for) is reported and the others go on; the exit status is then 3.
"""
from __future__ import annotations

import enum
import sys
from typing import Annotated

import typer

from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE, error_fields
from ckpttool.cli.options import DryRun, Json, Quiet, Yes
from ckpttool.errors import BadInput, CkptError, Refused, UsageProblem

PolicyFile = Annotated[str, typer.Argument(metavar="FILE", help="A retention policy (TOML).", show_default=False)]
# A run directory another ckpttool run is pruning is skipped at once: a fleet does not wait on it.
POLICY_LOCK_TIMEOUT = 0.0


class Action(str, enum.Enum):
    check = "check"


def command(action: Annotated[Action, typer.Argument(metavar="check", help="What to do with FILE: check.",
                                                      show_default=False)],
            file: PolicyFile, json_out: Json = False, quiet: Quiet = False):
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
    """`prune --policy FILE`: plan every run directory by its rule, ask (or need --yes), apply each."""
    from ckpttool.cli.commands import prune as single
    from ckpttool.ops.retention.policy import match_policy
    from ckpttool.ops.retention.policy_file import read_policy
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.scoring import DAMAGE_HINT
    from ckpttool.ops.runs.scan import for_each_directory, moved_out_of_tree

    match = match_policy(read_policy(file))
    rule_of = {g.directory: g for g in match.governed}
    render.warn_all(p.message for p in match.problems)

    def failure_or(directory: str, job):
        """job(), or the error that stopped it for this run directory alone (the others go on)."""
        try:
            return job()
        except (CkptError, OSError) as exc:
            return exc

    def plan(directory: str):
        governed = rule_of[directory]
        rule = governed.rule
        if moved := moved_out_of_tree(governed.root, directory):
            raise BadInput(moved)
        planned = plan_prune(directory, rule.retention, clean=rule.clean, ignore_bad_state=rule.ignore_bad_state,
                             metric=rule.metric_for(directory), allow_damaged=rule.allow_damaged_metrics)
        if planned.refusal and not dry_run:  # a dry run shows the plan, and the damage among its problems
            raise BadInput(planned.refusal, hint=DAMAGE_HINT)
        return planned

    directories = [g.directory for g in match.governed]
    planned = for_each_directory(lambda d: failure_or(d, lambda: plan(d)), directories)
    failed = [(d, p) for d, p in zip(directories, planned) if isinstance(p, BaseException)]
    plans = [(d, p) for d, p in zip(directories, planned) if not isinstance(p, BaseException)]
    if any(p.deleted for _d, p in plans) and not dry_run and not yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise Refused("not deleting without --yes when not interactive (nothing deleted)",
                          hint="preview with --dry-run, then rerun with --yes")
        for d, p in plans:
            single._print_plan(_label(rule_of[d]), p, p.deleted, True, True, warn=False)
        if not single._confirm(plans):
            print("nothing done", file=sys.stderr)
            return EXIT_NEGATIVE
    by_directory = dict(plans)
    applied = [(p.deleted, ()) for _d, p in plans] if dry_run else for_each_directory(
        lambda d: failure_or(d, lambda: (lambda result: (result.deleted, result.problems))(
            apply_prune(by_directory[d], single._pause_point, POLICY_LOCK_TIMEOUT))), [d for d, _p in plans])
    failed += [(d, a) for (d, _p), a in zip(plans, applied) if isinstance(a, BaseException)]
    results = [(d, p, a[0], a[1]) for (d, p), a in zip(plans, applied) if not isinstance(a, BaseException)]
    if json_out:
        docs = [{**single._plan_document(d, p, gone, dry_run, left), "rule": rule_of[d].rule.document()}
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
            single._print_plan(_label(rule_of[d]), p, gone, dry_run, True, not_deleted=left)
        single._print_summary([(_label(rule_of[d]), p, gone) for d, p, gone, _l in results], dry_run)
    for d, exc in failed:
        render.warn(f"not pruned: {_label(rule_of[d])}: {error_fields(exc)['message']}")
    left = [x for _d, _p, _g, problems in results for x in problems]
    if left and (quiet or json_out):  # no plan printed them
        render.warn_all(f"{x.path}: {x.message}" for x in left)
    if failed:
        raise BadInput(f"not pruned: {render.plural(len(failed), 'run directory', 'run directories')} of "
                       f"{len(directories)} (see the warnings above); the others were "
                       f"{'planned' if dry_run else 'pruned'}", hint=error_fields(failed[0][1])["hint"])
    if left:
        raise Refused(f"{render.plural(len(left), 'planned item was', 'planned items were')} not deleted: found "
                      "changed since planned, or not removable safely (see the warnings above); the rest was done",
                      hint="look at what is there now; remove it by hand if it should go")
    return 0


def _label(governed) -> str:
    """A run directory as tables and warnings name it: with the rule that governs it."""
    return f"{governed.directory} (rule {governed.rule.index})"
