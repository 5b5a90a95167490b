"""`ckpttool rename-vars SRC DST`: a new checkpoint with variables renamed."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.options import DryRun, Json, Quiet


def command(
    source: Annotated[str, typer.Argument(metavar="SRC", help="The checkpoint to read (prefix, file, run directory or SavedModel).",
                                          show_default=False)],
    destination: Annotated[str, typer.Argument(metavar="DST", help="Prefix of the checkpoint to write, e.g. out/model.ckpt-1.",
                                               show_default=False)],
    map_: Annotated[Optional[List[str]], typer.Option("--map", help="OLD=NEW, exact name (repeatable).")] = None,
    map_file: Annotated[Optional[str], typer.Option("--map-file", help="JSON object or `old new` lines.")] = None,
    regex: Annotated[Optional[List[str]], typer.Option("--regex", help="PATTERN=REPLACEMENT, Python re.sub (repeatable).")] = None,
    add_prefix: Annotated[Optional[str], typer.Option("--add-prefix", help="Prepend this to every name.")] = None,
    strip_prefix: Annotated[Optional[str], typer.Option("--strip-prefix", help="Remove this leading text where present.")] = None,
    ema: Annotated[bool, typer.Option("--ema", help="Promote X/ExponentialMovingAverage to X, replacing X.")] = False,
    drop: Annotated[Optional[List[str]], typer.Option("--drop", help="Leave out source names matching REGEX (repeatable).")] = None,
    keep: Annotated[Optional[List[str]], typer.Option("--keep", help="Keep only source names matching REGEX (repeatable).")] = None,
    link: Annotated[bool, typer.Option("--link", help="Hard-link the data shards instead of copying them.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing DST.")] = False,
    dry_run: DryRun = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Write a new checkpoint at DST with variables renamed; SRC is never modified.

    Rules apply in order: --map/--map-file, --regex, --add-prefix,
    --strip-prefix, --ema; --drop/--keep match source names. TF2 object graphs
    are kept consistent. The state file beside DST is updated to name it.
    """
    from ckpttool.ops.rename import RenameRules, apply_rename, parse_pair, plan_rename, read_map_file

    maps = tuple(parse_pair(m, "--map") for m in map_ or ())
    if map_file:
        maps += read_map_file(map_file)
    rules = RenameRules(maps, tuple(parse_pair(r, "--regex") for r in regex or ()), add_prefix, strip_prefix,
                        ema, tuple(drop or ()), tuple(keep or ()))
    plan = plan_rename(source, destination, rules, overwrite=overwrite)
    bytes_written = 0 if dry_run else apply_rename(plan, link=link).bytes_written
    if json_out:
        render.emit_json("rename-vars", {
            "source": plan.source, "destination": plan.destination, "dry_run": dry_run,
            "renamed": [{"from": old, "to": new} for old, new in plan.renamed],
            "dropped": list(plan.dropped), "unchanged": plan.unchanged, "bytes_written": bytes_written,
        })
    elif quiet:
        render.print_lines(f"{old}\t{new}" for old, new in plan.renamed)
    else:
        rows = [(old, "->", new) for old, new in plan.renamed] + [(name, "dropped", "") for name in plan.dropped]
        if rows:
            render.print_table(["source name", "", "new name"], rows)
        verb = "would write" if dry_run else "wrote"
        render.print_lines([f"{verb} {plan.destination}: {len(plan.renamed)} renamed, {len(plan.dropped)} dropped, "
                            f"{plan.unchanged} unchanged" + ("" if dry_run else
                                                            f", {render.human_bytes(bytes_written)} written")])
    return 0
