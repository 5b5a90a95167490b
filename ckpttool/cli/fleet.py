"""What the fleet options print: `ls -r --summary` (a row per run directory and the totals), and
`prune -r`'s `--budget` and `--drop-failed-runs` (the options, their JSON and their lines)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ckpttool.cli import render

Summary = Annotated[bool, typer.Option(
    "--summary", help="One row per run directory instead of its checkpoints: checkpoints (complete, damaged), "
                      "newest step and time, the best score by --metric, bytes, and the bytes the prune rules "
                      "given here would free (--keep-last ...); largest first, then the totals.")]
Budget = Annotated[Optional[str], typer.Option(
    "--budget", metavar="SIZE",
    help="With -r: after the rules, delete further checkpoints oldest first across runs until the tree's "
         "checkpoints fit in SIZE (500GB, 20TB, 1.5TiB); never a run's latest, a series' newest, the best by "
         "--metric, a --keep-step or one younger than --min-age. Not met: exit 1, saying by how much.")]
DropFailedRuns = Annotated[Optional[str], typer.Option(
    "--drop-failed-runs", metavar="AGE",
    help="With -r: remove run directories whose newest file is older than AGE (7d) holding only what a "
         "framework writes at start-up (event files, a state file and checkpoints of step 0 at most); "
         "anything else keeps the directory and all in it.")]


# -- ls -r --summary -------------------------------------------------------------------------------

def summary_row_document(row, scored: bool, with_rules: bool) -> dict:
    return {"directory": row.directory, "checkpoints": row.checkpoints, "complete": row.complete,
            "damaged": row.damaged, "newest_step": row.newest_step, **render.time_fields("newest_time", row.newest_time),
            **({"best": row.best, "best_score": row.best_score} if scored else {}),
            "size_bytes": row.size_bytes, "leftover_bytes": row.leftover_bytes,
            **({"reclaimable_bytes": row.reclaimable_bytes, "problem": row.problem} if with_rules else {})}


def summary_totals(rows, with_rules: bool) -> dict:
    return {"runs": len(rows), "checkpoints": sum(r.checkpoints for r in rows),
            "complete": sum(r.complete for r in rows), "damaged": sum(r.damaged for r in rows),
            "size_bytes": sum(r.size_bytes for r in rows), "leftover_bytes": sum(r.leftover_bytes for r in rows),
            **({"reclaimable_bytes": sum(r.reclaimable_bytes or 0 for r in rows)} if with_rules else {})}


def largest_first(rows) -> list:
    return sorted(rows, key=lambda r: (-r.size_bytes, r.directory))


def print_summary_table(rows, scored: bool, with_rules: bool) -> None:
    columns = [render.Column("directory", kind=render.NAME), render.Column("complete", right=True),
               render.Column("damaged", right=True, drop=2), render.Column("newest step", right=True, drop=3),
               render.Column("newest time", shorten=render.short_time, drop=1)]
    columns += [render.Column("best", right=True)] if scored else []
    columns += [render.Column("size", right=True)]
    columns += [render.Column("reclaimable", right=True)] if with_rules else []
    totals = summary_totals(rows, with_rules)
    table = [(r.directory, r.complete, r.damaged, "-" if r.newest_step is None else r.newest_step,
              render.local_time(r.newest_time), *([render.score_text(r.best_score)] if scored else []),
              render.human_bytes(r.size_bytes),
              *([render.human_bytes(r.reclaimable_bytes) if r.reclaimable_bytes is not None else "?"]
                if with_rules else [])) for r in rows]
    table.append((f"total ({render.plural(len(rows), 'run directory', 'run directories')})", totals["complete"],
                  totals["damaged"], "", "", *([""] if scored else []), render.human_bytes(totals["size_bytes"]),
                  *([render.human_bytes(totals["reclaimable_bytes"])] if with_rules else [])))
    render.print_table(columns, table)
    for r in rows:
        if with_rules and r.problem:
            render.warn(f"{r.directory}: reclaimable unknown: {r.problem}")


# -- prune -r --budget -------------------------------------------------------------------------------

def budget_document(outcome) -> dict:
    return {"budget": {"budget_bytes": outcome.budget_bytes, "bytes_before": outcome.bytes_before,
                       "bytes_after": outcome.bytes_after, "deleted_count": outcome.deleted,
                       "missed_by_bytes": outcome.missed_by}}


def budget_line(outcome, dry_run: bool) -> str:
    verb = "would be deleted" if dry_run else "deleted"
    text = (f"budget {render.human_bytes(outcome.budget_bytes)}: {render.human_bytes(outcome.bytes_before)} of "
            f"checkpoints after the rules, {render.human_bytes(outcome.bytes_after)} once "
            f"{render.plural(outcome.deleted, 'more checkpoint')} {verb}")
    if outcome.missed_by:
        return text + f"; missed by {render.human_bytes(outcome.missed_by)} (nothing else may go)"
    return text


# -- prune -r --drop-failed-runs ---------------------------------------------------------------------

def failed_runs_document(plan, result, dry_run: bool) -> dict:
    dropped = plan.dropped if dry_run else result.dropped
    return {"failed_runs": {
        "age_seconds": plan.age_seconds,
        "dropped": [{"directory": run.directory, "files": list(run.files), "size_bytes": run.size_bytes,
                     "directory_removed": run.remove_directory, **render.time_fields("newest_mtime", run.newest_mtime)}
                    for run in dropped],
        "kept": [{"directory": run.directory, "reason": run.reason} for run in plan.kept],
        "freed_bytes": sum(run.size_bytes for run in dropped),
        "problems": [{"directory": d, "message": why} for d, why in (result.problems if result else ())]}}


def print_failed_runs(plan, result, dry_run: bool) -> None:
    dropped = plan.dropped if dry_run else result.dropped
    rows = [(run.directory, "would drop" if dry_run else "dropped",
             f"{render.plural(len(run.files), 'file')}, {render.human_bytes(run.size_bytes)}"
             + ("; the directory too" if run.remove_directory else "")) for run in dropped]
    rows += [(run.directory, "keep", run.reason) for run in plan.kept]
    if rows:
        render.print_table([render.Column("failed run", kind=render.NAME), render.Column("action"),
                            render.Column("why / size", kind=render.TEXT)], rows)
    render.print_lines([f"failed runs: {render.plural(len(dropped), 'run directory', 'run directories')} "
                        f"{'to drop' if dry_run else 'dropped'}, {render.human_bytes(sum(r.size_bytes for r in dropped))}"
                        f" {'would be freed' if dry_run else 'freed'}"])
    for directory, why in result.problems if result else ():
        render.warn(f"{directory}: not dropped: {why}")
