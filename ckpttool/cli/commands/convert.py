"""`ckpttool convert SRC DST`: weights between TF checkpoints, safetensors and .npz (and out of Keras 3 files)."""
from __future__ import annotations

import enum
from typing import Annotated, List, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.options import (AddPrefix, DropOpt, DropOptimizer, DryRun, Ema, Json, KeepOpt, MapFile, MapOpt,
                                  GraphOpt, MinElements, Naming, NamesOpt, NoUpdateState, Overwrite, Quiet, RegexOpt,
                                  StripPrefix)


class TargetFormat(str, enum.Enum):
    tf = "tf"
    safetensors = "safetensors"
    npz = "npz"


def _document(plan, result, dry_run: bool) -> dict:
    return {
        "source": plan.source, "source_format": plan.source_format, "destination": plan.destination,
        "format": plan.to, "dry_run": dry_run, "files": list(result.files if result else plan.files),
        "tensors": len(plan.items), "total_bytes": plan.total_bytes,
        "bytes_written": result.bytes_written if result else 0,
        "renamed": [{"from": old, "to": new} for old, new in plan.renamed],
        "dropped": list(plan.dropped),
        "skipped": [{"name": s.name, "reason": s.reason} for s in plan.skipped],
    }


def command(
    source: Annotated[str, typer.Argument(
        metavar="SRC", help="What to read: a checkpoint (prefix, file, run directory, SavedModel), a .safetensors "
                            "file or *.safetensors.index.json, an .npz, a Keras .weights.h5 or .keras file.",
        show_default=False)],
    destination: Annotated[str, typer.Argument(
        metavar="DST", help="What to write: NAME.safetensors, NAME.safetensors.index.json (sharded), NAME.npz, "
                            "or a checkpoint prefix such as out/model.ckpt-1.", show_default=False)],
    to: Annotated[Optional[TargetFormat], typer.Option(
        "--to", help="Format of DST: tf, safetensors or npz (default: from DST's extension; tf otherwise).")] = None,
    names: NamesOpt = Naming.key,
    map_: MapOpt = None,
    map_file: MapFile = None,
    regex: RegexOpt = None,
    add_prefix: AddPrefix = None,
    strip_prefix: StripPrefix = None,
    ema: Ema = False,
    drop: DropOpt = None,
    keep: KeepOpt = None,
    drop_optimizer: DropOptimizer = False,
    sep: Annotated[Optional[str], typer.Option(
        "--sep", metavar="SEP", help="Replace the scope separator / by this in the new names, last (--sep . for PyTorch-style "
                      "names).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Refuse (exit 3) instead of skipping what DST cannot hold (strings, variants, the TF2 "
                         "object graph).")] = False,
    shard_size: Annotated[Optional[str], typer.Option(
        "--shard-size", metavar="SIZE", help="Split safetensors output into files of at most this size (5GB, 500MiB): "
                             "NAME-00001-of-0000N.safetensors plus NAME.safetensors.index.json.")] = None,
    metadata: Annotated[Optional[List[str]], typer.Option(
        "--metadata", metavar="KEY=VALUE", help="KEY=VALUE for the safetensors __metadata__ (repeatable; e.g. format=pt).")] = None,
    no_source_metadata: Annotated[bool, typer.Option(
        "--no-source-metadata", help="Leave the source's name out of the safetensors __metadata__.")] = False,
    graph: GraphOpt = False,
    min_elements: MinElements = None,
    overwrite: Overwrite = False,
    no_update_state: NoUpdateState = False,
    dry_run: DryRun = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Convert weights between TF checkpoints, safetensors and .npz (Keras 3 files: read only).

    Values are moved bit-exactly with their dtypes, tensor by tensor (memory
    stays bounded). With --names model, variables are first named by their path
    through the model; the rename rules of rename-vars then apply to those names
    (--map, --drop and --keep match them), then --sep. What DST
    cannot hold (strings, variants, the TF2 object graph) is skipped with a
    warning, or refused with --strict; a dtype DST cannot hold is refused
    naming the variable. A TF checkpoint DST is a V2 bundle, with the state
    file beside it updated (with a warning when DST is older than the latest
    checkpoint there; --no-update-state to leave it). Writes are atomic: an interrupted convert leaves no DST.
    """
    from ckpttool.ops.convert import apply_convert, parse_size, plan_convert
    from ckpttool.ops.rename_rules import RenameRules, parse_pair

    rules = RenameRules.from_options(maps=map_, map_file=map_file, regexes=regex, add_prefix=add_prefix,
                                     strip_prefix=strip_prefix, ema=ema, drop=drop, keep=keep,
                                     drop_optimizer=drop_optimizer, sep=sep)
    plan = plan_convert(source, destination, to=to.value if to else None, rules=rules, strict=strict,
                        shard_size=parse_size(shard_size) if shard_size is not None else None,
                        metadata=dict(parse_pair(m, "--metadata") for m in metadata or ()), overwrite=overwrite,
                        update_state=not no_update_state, source_metadata=not no_source_metadata,
                        naming=names.value, from_graph=graph, min_elements=min_elements)
    if plan.state_warning:
        render.warn(plan.state_warning)
    render.warn_all(f"skipped {s.name}: {s.reason}" for s in plan.skipped)
    result = None
    if not dry_run:
        from ckpttool.cli.progress import byte_progress

        with byte_progress("converting", plan.total_bytes, json_out) as advance:
            result = apply_convert(plan, on_progress=advance)
    if json_out:
        render.emit_json("convert", _document(plan, result, dry_run))
    elif quiet:
        render.print_lines(item.name for item in plan.items)
    else:
        if dry_run:
            render.print_table([render.Column("source name", kind=render.NAME),
                                render.Column("new name", kind=render.NAME), render.Column("dtype"),
                                render.Column("shape")],
                               [(i.source, i.name, i.dtype, list(i.shape)) for i in plan.items])
        files = result.files if result else plan.files
        verb = "would write" if dry_run else "wrote"
        render.print_wrapped([f"{verb} {plan.to} {', '.join(files)}: {render.plural(len(plan.items), 'tensor')}, "
                            f"{render.human_bytes(plan.total_bytes)} ({len(plan.renamed)} renamed, "
                            f"{len(plan.dropped)} dropped, {len(plan.skipped)} skipped)"])
    return 0
