"""`ckpttool repair DIR`: rewrite the state file so TensorFlow can use the directory again."""
from __future__ import annotations

import sys

from ckpttool.cli import render
from ckpttool.cli.options import Directory, DryRun, Json


def command(directory: Directory, dry_run: DryRun = False, json_out: Json = False):
    """Rewrite DIR's state file: relative paths, gone entries dropped, orphans added
    in step order, latest fixed. The old file is kept as checkpoint.bak.

    DIR may be a bucket; runs take turns as prune's do (across hosts on gs://
    and s3://, on the same host only elsewhere)."""
    from ckpttool.storage import fs
    from ckpttool.ops.runs.directories import require_directory
    from ckpttool.ops.runs.repair import BACKUP_FILENAME, apply_repair, plan_repair

    require_directory(directory, "repair")
    plan = plan_repair(directory)
    if not dry_run:
        apply_repair(plan)
    if json_out:
        render.emit_json("repair", {
            "directory": directory, "dry_run": dry_run, "changed": plan.changed, "summary": plan.summary,
            "changes": list(plan.changes) if plan.changed else [], "state": plan.new_text,
            "backup": fs.join(directory, BACKUP_FILENAME) if plan.changed and plan.old_text else None,
        })
        return 0
    if not plan.changed:
        render.print_lines([f"{directory}: {plan.summary}"])
        return 0
    lines = [f"{directory}: {'would rewrite' if dry_run else 'rewrote'} the state file:"]
    lines += [f"  {c}" for c in plan.changes]
    render.print_lines(lines)
    # The state file's lines as written: its writer escapes a name's tab or newline itself, and a
    # U+2028 inside a quoted path is the file's (shown as a field is, the text would not be its own).
    sys.stdout.write("".join(render.for_people(line) + "\n" for line in ["", *plan.new_text.rstrip("\n").split("\n")]))
    return 0
