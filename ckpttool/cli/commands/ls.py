"""`ckpttool ls DIR`: every checkpoint in a directory, with its problems."""
from __future__ import annotations

from ckpttool.cli import render
from ckpttool.cli.options import Directory, Json, Quiet, Recursive
from ckpttool.ops.scan import DirectoryScan, find_checkpoint_dirs, for_each_directory, scan_directory


def scan_document(scan: DirectoryScan) -> dict:
    latest = scan.latest
    return {
        "directory": scan.directory,
        "latest": latest.name if latest else None,
        "checkpoints": [
            {
                "name": c.name, "prefix": c.prefix, "step": c.step, "format": c.format,
                "size_bytes": c.size_bytes, "num_shards": c.num_shards, "complete": c.complete,
                "has_meta": c.has_meta, "in_state": c.in_state, "is_latest": c.is_latest,
                "mtime": render.iso_utc(c.mtime), "timestamp": c.timestamp,
            }
            for c in scan.checkpoints
        ],
        "problems": [{"kind": p.kind, "path": p.path, "message": p.message} for p in scan.problems],
    }


def _print_scan(scan: DirectoryScan, show_directory: bool) -> None:
    rows = [
        (c.name, "-" if c.step is None else c.step, render.local_time(c.time), render.human_bytes(c.size_bytes),
         c.num_shards or "-", render.yes_no(c.complete), render.yes_no(c.in_state),
         "*" if c.is_latest else "", render.yes_no(c.has_meta))
        for c in scan.checkpoints
    ]
    title = scan.directory if show_directory else None
    if rows:
        render.print_table(["name", "step", "time", "size", "shards", "complete", "in state", "latest", "meta"],
                           rows, right=["step", "size", "shards"], title=title)
    else:
        render.print_lines([f"{scan.directory}: no checkpoints"])
    if scan.problems:
        render.print_lines(["problems:"] + [f"  {p.kind}: {p.message}" for p in scan.problems])


def command(directory: Directory, recursive: Recursive = False, json_out: Json = False, quiet: Quiet = False):
    """List every checkpoint in DIR, from the state file and from the files on disk."""
    dirs = find_checkpoint_dirs(directory) if recursive else [directory]
    scans = for_each_directory(scan_directory, dirs)
    if json_out:
        if recursive:
            render.emit_json("ls", {"root": directory, "directories": [scan_document(s) for s in scans]})
        else:
            render.emit_json("ls", scan_document(scans[0]))
    elif quiet:
        render.print_lines(c.prefix if recursive else c.name for s in scans for c in s.checkpoints)
    else:
        for scan in scans:
            _print_scan(scan, show_directory=recursive)
    return 0
