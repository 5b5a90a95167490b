"""`ckpttool verify TARGET`: read everything, check every CRC, report all damage."""
from __future__ import annotations

from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE
from ckpttool.cli.options import Json, Quiet, TargetArg


def command(target: TargetArg, json_out: Json = False, quiet: Quiet = False):
    """Check every tensor's CRC, shard presence and sizes. Exit 1 on damage."""
    from ckpttool.cli.progress import byte_progress
    from ckpttool.ops.verify import total_bytes, verify_checkpoint

    with byte_progress("verifying", total_bytes(target) if not json_out else 0, json_out) as advance:
        report = verify_checkpoint(target, on_progress=advance)
    render.warn_all(report.target.warnings)
    if json_out:
        render.emit_json("verify", {
            "checkpoint": report.checkpoint, "ok": report.ok, "checked_tensors": report.checked_tensors,
            "checked_bytes": report.checked_bytes,
            "errors": [{"name": e.name, "problem": e.problem, "message": e.message} for e in report.errors],
        })
    elif quiet:
        render.print_lines(e.name for e in report.errors)
    else:
        if report.errors:
            render.print_table(["name", "problem", "message"],
                               [(e.name, e.problem, e.message) for e in report.errors])
        verdict = "OK" if report.ok else f"DAMAGED ({len(report.errors)} problem(s))"
        render.print_lines([f"{verdict}: {report.checkpoint}: {report.checked_tensors} tensors, "
                            f"{render.human_bytes(report.checked_bytes)} checked"])
    return 0 if report.ok else EXIT_NEGATIVE
