"""`ckpttool ls DIR`: every checkpoint in a directory, with its problems."""
from __future__ import annotations

from ckpttool.cli import render
from ckpttool.cli.options import Directory, Json, Quiet, Recursive
from ckpttool.storage import fs
from ckpttool.ops.directories import require_directory
from ckpttool.ops.scan import (DirectoryScan, find_checkpoint_dirs, for_each_directory, gc_paused, scan_directory,
                               state_file_problems)


def _problems(scan: DirectoryScan):
    return scan.problems + state_file_problems(scan)


def checkpoints_bytes(scan: DirectoryScan) -> int:
    return sum(c.size_bytes for c in scan.checkpoints)


def scan_document(scan: DirectoryScan, directory: str) -> dict:
    """`directory`: as the user gave it (or as found under the root they gave)."""
    latest = scan.latest
    return {
        "directory": directory,
        "latest": latest.name if latest else None,
        "size_bytes": checkpoints_bytes(scan),
        "leftover_bytes": sum(leftover.size_bytes for leftover in scan.leftovers),
        "checkpoints": [
            {
                "name": c.name, "prefix": c.prefix, "step": c.step, "format": c.format,
                "size_bytes": c.size_bytes, "num_shards": c.num_shards, "complete": c.complete,
                "has_meta": c.has_meta, "in_state": c.in_state, "is_latest": c.is_latest,
                **render.time_fields("mtime", c.mtime), **render.time_fields("timestamp", c.timestamp),
            }
            for c in scan.checkpoints
        ],
        "problems": [{"kind": p.kind, "path": p.path, "message": p.message} for p in _problems(scan)],
    }


# At 80 columns and less the time takes its short form, then the lesser columns go.
_COLUMNS = [
    render.Column("name", kind=render.NAME), render.Column("step", right=True, drop=4),
    render.Column("time", shorten=render.short_time), render.Column("size", right=True),
    render.Column("shards", right=True, drop=2), render.Column("complete"), render.Column("in state", drop=3),
    render.Column("latest"), render.Column("meta", drop=1),
]


def _print_scan(scan: DirectoryScan, directory: str, show_directory: bool) -> None:
    rows = [
        (c.name, "-" if c.step is None else c.step, render.local_time(c.time), render.human_bytes(c.size_bytes),
         c.num_shards or "-", render.yes_no(c.complete), render.yes_no(c.in_state),
         "*" if c.is_latest else "", render.yes_no(c.has_meta))
        for c in scan.checkpoints
    ]
    if rows:
        render.print_table(_COLUMNS, rows, title=directory if show_directory else None)
    else:
        render.print_lines([f"{directory}: no checkpoints"])
    problems = _problems(scan)
    if problems:
        render.print_wrapped(["problems:"] + [f"  {p.kind}: {p.message}" for p in problems] + [""] * show_directory,
                             indent="  ")


_SUMMARY_COLUMNS = [render.Column("directory", kind=render.NAME), render.Column("checkpoints", right=True),
                    render.Column("size", right=True), render.Column("latest", kind=render.NAME)]


def _print_summary(scans: list[DirectoryScan], dirs: list[str]) -> None:
    """Per run directory and in total, as `huggingface-cli scan-cache` sums up a cache."""
    render.print_table(_SUMMARY_COLUMNS, [
        (d, len(s.checkpoints), render.human_bytes(checkpoints_bytes(s)), s.latest.name if s.latest else "-")
        for s, d in zip(scans, dirs)])
    total = sum(checkpoints_bytes(s) for s in scans)
    render.print_wrapped([f"{render.plural(len(dirs), 'run directory', 'run directories')}, "
                        f"{render.plural(sum(len(s.checkpoints) for s in scans), 'checkpoint')}, "
                        f"{render.human_bytes(total)} in total"])


@gc_paused()  # the rows of 100,000 checkpoints are as many objects again
def command(directory: Directory, recursive: Recursive = False, json_out: Json = False, quiet: Quiet = False):
    """List every checkpoint in DIR, from the state file and from the files on disk.

    With --recursive, every run directory under DIR, then each one's size and the total."""
    require_directory(directory, "ls")
    skipped = []  # keys of the tree never followed (`root/../other`): reported, not read
    dirs = find_checkpoint_dirs(directory, skipped) if recursive else [directory]
    render.warn_all(p.message for p in skipped)
    scans = for_each_directory(scan_directory, dirs)
    if json_out:
        if recursive:
            render.emit_json("ls", {
                "root": directory, "num_checkpoints": sum(len(s.checkpoints) for s in scans),
                "total_bytes": sum(checkpoints_bytes(s) for s in scans),
                "directories": [scan_document(s, d) for s, d in zip(scans, dirs)]})
        else:
            render.emit_json("ls", scan_document(scans[0], directory))
    elif quiet:
        render.print_lines(fs.join(d, c.name) if recursive else c.name for s, d in zip(scans, dirs)
                           for c in s.checkpoints)
    elif recursive and not dirs:
        render.print_lines([f"{directory}: no checkpoint directories"])
    else:
        for scan, d in zip(scans, dirs):
            _print_scan(scan, d, show_directory=recursive)
        if recursive:
            _print_summary(scans, dirs)
        elif not scans[0].checkpoints:
            from ckpttool.ops.hints import run_directories_below

            hint = run_directories_below(directory)
            if hint:
                render.hint(hint)
    return 0
