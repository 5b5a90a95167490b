"""`ckpttool verify TARGET`: read everything, check every CRC, report all damage; `--all` /
`--recursive`: every checkpoint of a directory or a tree, one summary (its options and help:
cli/commands/verify.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE
from ckpttool.errors import UsageProblem

if TYPE_CHECKING:
    from ckpttool.ops.tensors.manifest import ManifestCheck
    from ckpttool.ops.tensors.verify import DirectoryVerifyReport, VerifyReport


def report_document(report: "VerifyReport") -> dict:
    return {
        "checkpoint": report.checkpoint, "ok": report.ok, "checked_tensors": report.checked_tensors,
        "checked_bytes": report.checked_bytes,
        "errors": [_problem_document(e) for e in report.errors],
        "warnings": [_problem_document(e) for e in report.warnings],
    }


def _problem_document(problem) -> dict:
    return {"name": problem.name, "problem": problem.problem, "message": problem.message,
            "tensors": list(problem.tensors)}


def _directory_document(report: "DirectoryVerifyReport") -> dict:
    checkpoints = report.checkpoints
    return {
        "directory": report.directory, "ok": report.ok, "num_checkpoints": len(checkpoints),
        "damaged": sum(not r.ok for r in checkpoints),
        "checked_tensors": sum(r.checked_tensors for r in checkpoints),
        "checked_bytes": sum(r.checked_bytes for r in checkpoints),
        "checkpoints": [report_document(r) for r in checkpoints],
    }


_ERROR_COLUMNS = [render.Column("name", kind=render.NAME), render.Column("problem"),
                  render.Column("message", kind=render.TEXT)]
_SUMMARY_COLUMNS = [render.Column("checkpoint", kind=render.NAME), render.Column("result"),
                    render.Column("tensors", right=True), render.Column("checked", right=True),
                    render.Column("problems", right=True, drop=1)]


def _print_errors(report: "VerifyReport", title: str | None = None) -> None:
    render.print_table(_ERROR_COLUMNS, [(e.name, e.problem, e.message) for e in report.errors], title=title)


def _verdict(errors: int) -> str:
    return "OK" if not errors else f"DAMAGED ({render.plural(errors, 'problem')})"


def _print_directory(report: "DirectoryVerifyReport") -> None:
    checkpoints = report.checkpoints
    render.print_table(_SUMMARY_COLUMNS, [
        (r.checkpoint, "ok" if r.ok else "DAMAGED", r.checked_tensors, render.human_bytes(r.checked_bytes),
         len(r.errors)) for r in checkpoints])
    render.warn_all(f"{r.checkpoint}: {w.message}" for r in checkpoints for w in r.warnings)
    for r in checkpoints:
        if r.errors:
            _print_errors(r, title=f"{r.checkpoint}:")
    damaged = sum(not r.ok for r in checkpoints)
    verdict = "OK: " if not damaged else f"DAMAGED: {damaged} of "
    render.print_wrapped([f"{verdict}{render.plural(len(checkpoints), 'checkpoint')} in {report.directory}: "
                        f"{render.plural(sum(r.checked_tensors for r in checkpoints), 'tensor')}, "
                        f"{render.human_bytes(sum(r.checked_bytes for r in checkpoints))} checked"
                        + (f", {render.plural(sum(len(r.errors) for r in checkpoints), 'problem')}"
                           if damaged else "")])


def _difference_document(d) -> dict:
    return {"name": d.name, "change": d.change, "message": d.message,
            **({"renamed_to": d.renamed_to} if d.renamed_to is not None else {})}


def manifest_document(check: "ManifestCheck") -> dict:
    return {"checkpoint": check.checkpoint, "manifest": check.manifest, "ok": check.ok, "mode": check.mode,
            "digest": check.digest,
            "checked_files": check.checked_files, "checked_tensors": check.checked_tensors,
            "checked_bytes": check.checked_bytes, "files": [_difference_document(d) for d in check.files],
            "tensors": [_difference_document(d) for d in check.tensors]}


_DIFFERENCE_COLUMNS = [render.Column("file or tensor", kind=render.NAME), render.Column("change"),
                       render.Column("message", kind=render.TEXT)]


def _verify_manifest(target: str, manifest_path: str, tensors: bool, ignore_names: bool, quick: bool,
                     json_out: bool, quiet: bool) -> int:
    from ckpttool.cli.progress import byte_progress, showing
    from ckpttool.ops.targets import resolve_target
    from ckpttool.ops.tensors.manifest import check_manifest, read_manifest
    from ckpttool.ops.tensors.verify import total_bytes

    manifest = read_manifest(manifest_path)  # a bad manifest is reported before anything is read
    resolved = resolve_target(target)
    render.say_resolved(target, resolved, header=not quiet)
    with byte_progress("checking", total_bytes(resolved) if showing(json_out) else 0, json_out) as advance:
        check = check_manifest(resolved, manifest, manifest_path, tensors=tensors, ignore_names=ignore_names,
                               quick=quick, on_progress=advance)
    if json_out:
        render.emit_json("verify", manifest_document(check))
    elif quiet:
        render.print_lines(d.name for d in check.files + check.tensors)
    else:
        rows = [(d.name, d.change, d.message) for d in check.files + check.tensors]
        if rows:
            render.print_table(_DIFFERENCE_COLUMNS, rows)
        verdict = "OK" if check.ok else f"DIFFERENT ({render.plural(len(rows), 'difference')})"
        what = (f"{render.plural(check.checked_files, 'file')} ({render.human_bytes(check.checked_bytes)})"
                if check.mode == "files" else
                f"{render.plural(check.checked_tensors, 'tensor')} ({render.human_bytes(check.checked_bytes)})")
        how = " by CRC-32C" if check.digest == "crc32c" else ""
        render.print_wrapped([f"{verdict}: {check.checkpoint} against {manifest_path}: {what} compared{how}"])
    return 0 if check.ok else EXIT_NEGATIVE


def run(target: str, *, all_: bool = False, recursive: bool = False, graph: bool = False,
        manifest: str | None = None, tensors: bool = False, ignore_names: bool = False, quick: bool = False,
        json_out: bool = False, quiet: bool = False) -> int:
    from ckpttool.cli.progress import byte_progress, showing
    from ckpttool.ops.runs.directories import require_directory
    from ckpttool.ops.targets import resolve_target
    from ckpttool.ops.tensors.verify import directory_bytes, total_bytes, verify_checkpoint, verify_directory

    if manifest is None and (tensors or ignore_names or quick):
        flag = "--tensors" if tensors else "--ignore-names" if ignore_names else "--quick"
        raise UsageProblem(f"{flag} goes with --manifest")
    if manifest is not None:
        if all_ or recursive or graph:
            raise UsageProblem("--manifest checks one checkpoint: not with --all, --recursive or --graph")
        return _verify_manifest(target, manifest, tensors, ignore_names, quick, json_out, quiet)
    if all_ or recursive:
        require_directory(target, "verify")
        size = directory_bytes(target, recursive) if showing(json_out) else 0  # only a bar needs it
        with byte_progress("verifying", size, json_out) as advance:
            report = verify_directory(target, recursive=recursive, on_progress=advance)
        reports = report.checkpoints
        if json_out:
            render.emit_json("verify", _directory_document(report))
        elif quiet:
            render.print_rows((r.checkpoint, e.name) for r in reports for e in r.errors)
        else:
            _print_directory(report)
        return 0 if report.ok else EXIT_NEGATIVE
    resolved = resolve_target(target, graph=graph)
    render.say_resolved(target, resolved, header=not quiet)
    with byte_progress("verifying", total_bytes(resolved) if showing(json_out) else 0, json_out) as advance:
        single = verify_checkpoint(resolved, on_progress=advance)
    if json_out:
        render.emit_json("verify", report_document(single))
    elif quiet:
        render.print_lines(e.name for e in single.errors)
    else:
        render.warn_all(w.message for w in single.warnings)
        _print_errors(single)
        render.print_wrapped([f"{_verdict(len(single.errors))}: {single.checkpoint}: "
                            f"{render.plural(single.checked_tensors, 'tensor')}, "
                            f"{render.human_bytes(single.checked_bytes)} checked"])
    return 0 if single.ok else EXIT_NEGATIVE
