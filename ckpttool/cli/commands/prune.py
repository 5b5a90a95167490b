"""`ckpttool prune DIR`: delete old checkpoints by retention rules (made for cron)."""
from __future__ import annotations

import sys
from typing import Annotated, List, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE
from ckpttool.cli.options import Directory, DryRun, Json, Quiet, Recursive, Yes
from ckpttool.errors import BadInput, Refused


def _plan_document(plan, deleted, dry_run: bool) -> dict:
    return {
        "directory": plan.directory,
        "dry_run": dry_run,
        "kept": [{"name": k.name, "step": k.step, "reasons": list(k.reasons)} for k in plan.kept],
        "deleted": [{"name": d.name, "step": d.step, "size_bytes": d.size_bytes, "kind": d.kind} for d in deleted],
        "freed_bytes": sum(d.size_bytes for d in deleted),
        "problems": [{"kind": p.kind, "path": p.path, "message": p.message} for p in plan.problems],
    }


_COLUMNS = [render.Column("name", kind=render.NAME), render.Column("step", right=True, drop=1),
            render.Column("action"), render.Column("why / size", kind=render.TEXT)]


def _print_plan(plan, deleted, dry_run: bool, show_directory: bool, warn: bool = True) -> None:
    rows = [(k.name, "-" if k.step is None else k.step, "keep", ", ".join(k.reasons)) for k in plan.kept]
    verb = "would delete" if dry_run else "deleted"
    rows += [(d.name, "-" if d.step is None else d.step, verb,
              f"{render.human_bytes(d.size_bytes)}" + ("" if d.kind == "checkpoint" else f" ({d.kind})"))
             for d in deleted]
    rows.sort(key=lambda row: (row[1] if isinstance(row[1], int) else -1, row[0]))
    if rows:
        render.print_table(_COLUMNS, rows, title=plan.directory if show_directory else None)
    for p in plan.problems if warn else ():
        render.warn(f"{plan.directory}: {p.message}")
    total = render.human_bytes(sum(d.size_bytes for d in deleted))
    render.print_lines([f"{len(deleted)} to delete, {len(plan.kept)} kept, {total} "
                        f"{'would be freed' if dry_run else 'freed'}"])


def _confirm(plans) -> bool:
    count = sum(len(p.deleted) for p in plans)
    size = render.human_bytes(sum(p.freed_bytes for p in plans))
    return typer.confirm(f"Delete {count} item(s), {size}?", default=False, err=True)


def command(
    directory: Directory,
    keep_last: Annotated[Optional[int], typer.Option("--keep-last", help="Keep the newest N of each family.")] = None,
    keep_every_hours: Annotated[Optional[float], typer.Option("--keep-every-hours", help="Keep one checkpoint every H hours (as Saver's keep_checkpoint_every_n_hours).")] = None,
    keep_every_steps: Annotated[Optional[int], typer.Option("--keep-every-steps", help="Keep checkpoints whose step is divisible by K.")] = None,
    keep_step: Annotated[Optional[List[int]], typer.Option("--keep-step", help="Keep the checkpoint of this step (repeatable).")] = None,
    min_age: Annotated[Optional[str], typer.Option("--min-age", help="Delete nothing younger than this (30m, 12h, 7d).")] = None,
    clean: Annotated[bool, typer.Option("--clean", help="Also remove provable debris (incomplete checkpoints, *_temp directories, temp files of saves) older than --min-age (default 1h); anything else is reported, never deleted.")] = False,
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
    """
    from ckpttool.ops.prune import apply_prune, plan_prune
    from ckpttool.ops.retention import RetentionRules, parse_duration
    from ckpttool.ops.scan import find_checkpoint_dirs

    rules = RetentionRules(keep_last, keep_every_hours, keep_every_steps, tuple(keep_step or ()),
                           parse_duration(min_age) if min_age is not None else None)
    rules.validate()
    dirs = find_checkpoint_dirs(directory) if recursive else [directory]
    plans, refused = [], []
    for d in dirs:
        try:
            plans.append(plan_prune(d, rules, clean=clean, ignore_bad_state=ignore_bad_state))
        except BadInput as exc:
            if not recursive:
                raise
            refused.append((d, exc))  # one broken run must not stop a cron job from pruning the others
    steps = {item.step for plan in plans for item in plan.kept + plan.deleted}
    for step in sorted(set(rules.keep_steps) - steps):
        render.warn(f"--keep-step {step}: no checkpoint has step {step}")
    pending = any(p.deleted for p in plans)
    if pending and not dry_run and not yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise Refused("not deleting without --yes when not interactive (nothing deleted)",
                          hint="preview with --dry-run, then rerun with --yes")
        for plan in plans:
            _print_plan(plan, plan.deleted, True, recursive, warn=False)
        if not _confirm(plans):
            print("nothing done", file=sys.stderr)
            return EXIT_NEGATIVE
    results = [(plan, plan.deleted if dry_run else apply_prune(plan).deleted) for plan in plans]
    if json_out:
        docs = [_plan_document(plan, deleted, dry_run) for plan, deleted in results]
        docs += [{"directory": d, "error": {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint}}
                 for d, exc in refused]
        render.emit_json("prune", docs[0] if not recursive else {"root": directory, "dry_run": dry_run,
                                                                  "directories": docs})
    elif quiet:
        render.print_lines(d.name for _plan, deleted in results for d in deleted)
    else:
        for plan, deleted in results:
            _print_plan(plan, deleted, dry_run, recursive)
    if refused:
        for d, exc in refused:
            render.warn(f"skipped {d}: {exc.message}")
        raise BadInput(f"{len(refused)} of {len(dirs)} directories were not pruned (see the warnings above)",
                       hint=refused[0][1].hint)
    return 0
