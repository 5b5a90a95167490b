"""`ckpttool rename-vars SRC DST`: a new checkpoint with variables renamed."""
from __future__ import annotations

from typing import Annotated

import typer

from ckpttool.cli import render
from ckpttool.cli.options import (AddPrefix, DropOpt, DropOptimizer, DryRun, Ema, Json, KeepOpt, MapFile, MapOpt,
                                  NoUpdateState, Overwrite, Quiet, RegexOpt, SourceArg, StripPrefix)


def command(
    source: SourceArg,
    destination: Annotated[str, typer.Argument(metavar="DST", help="Prefix of the checkpoint to write, e.g. out/model.ckpt-1.",
                                               show_default=False)],
    map_: MapOpt = None,
    map_file: MapFile = None,
    regex: RegexOpt = None,
    add_prefix: AddPrefix = None,
    strip_prefix: StripPrefix = None,
    ema: Ema = False,
    drop: DropOpt = None,
    keep: KeepOpt = None,
    drop_optimizer: DropOptimizer = False,
    link: Annotated[bool, typer.Option("--link", help="Hard-link the data shards instead of copying them.")] = False,
    overwrite: Overwrite = False,
    no_update_state: NoUpdateState = False,
    dry_run: DryRun = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Write a new checkpoint at DST with variables renamed; SRC is never modified.

    Rules apply in order: --map/--map-file, --regex, --add-prefix,
    --strip-prefix, --ema; --drop/--keep/--drop-optimizer match source names.
    TF2 object graphs are kept consistent. The state file beside DST is updated to name it
    (with a warning when DST is older than the latest checkpoint there; --no-update-state to leave it).
    """
    from ckpttool.ops.tensors.rename import apply_rename, plan_rename
    from ckpttool.ops.tensors.rename_rules import RenameRules

    rules = RenameRules.from_options(maps=map_, map_file=map_file, regexes=regex, add_prefix=add_prefix,
                                     strip_prefix=strip_prefix, ema=ema, drop=drop, keep=keep,
                                     drop_optimizer=drop_optimizer)
    plan = plan_rename(source, destination, rules, overwrite=overwrite, link=link, update_state=not no_update_state)
    if plan.state_warning:
        render.warn(plan.state_warning)
    render.warn_all(plan.warnings)
    bytes_written = 0
    if not dry_run:
        from ckpttool.cli.progress import byte_progress, showing
        from ckpttool.ops.tensors.rename import bytes_to_copy

        with byte_progress("copying", bytes_to_copy(plan) if showing(json_out) and not link else 0,
                           json_out) as advance:
            bytes_written = apply_rename(plan, link=link, on_progress=advance).bytes_written
    if json_out:
        render.emit_json("rename-vars", {
            "source": plan.source, "destination": plan.destination, "dry_run": dry_run,
            "renamed": [{"from": old, "to": new} for old, new in plan.renamed],
            "dropped": list(plan.dropped), "unchanged": plan.unchanged, "bytes_written": bytes_written,
            "warnings": list(plan.warnings),
        })
    elif quiet:
        render.print_rows(plan.renamed)
    else:
        rows = [(old, "->", new) for old, new in plan.renamed] + [(name, "dropped", "") for name in plan.dropped]
        if rows:
            render.print_table([render.Column("source name", kind=render.NAME), render.Column(""),
                                render.Column("new name", kind=render.NAME)], rows)
        verb = "would write" if dry_run else "wrote"
        render.print_wrapped([f"{verb} {plan.destination}: {len(plan.renamed)} renamed, {len(plan.dropped)} dropped, "
                            f"{plan.unchanged} unchanged" + ("" if dry_run else
                                                            f", {render.human_bytes(bytes_written)} written")])
    return 0
