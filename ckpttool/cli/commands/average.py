"""`ckpttool average SRC... -o DST`: the element-wise mean of checkpoints, written as convert writes."""
from __future__ import annotations

import enum
import sys
from typing import Annotated, List, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.commands.convert import (DtypeOpt, KeepDtypeOpt, LayoutOpt, MetadataOpt, SepOpt, ShardSizeOpt,
                                           StrictOpt, ToOpt, TransposeOpt)
from ckpttool.cli.hot.convert import transform_options, transformed, warn_overflow
from ckpttool.cli.options import (AddPrefix, AllowDamagedMetrics, DropOpt, DryRun, Ema, Json, KeepOpt, MapFile, MapOpt,
                                  Naming, NamesOpt, Overwrite, Quiet, RegexOpt, StripPrefix)


class Mode(str, enum.Enum):
    auto = "auto"
    min = "min"
    max = "max"


def _document(plan, result, dry_run: bool) -> dict:
    convert = plan.convert
    return {
        "sources": [{"prefix": s.prefix, "step": s.step, "score": s.score} for s in plan.sources],
        "selection": plan.selection, "metric_source": plan.metric_source,
        **({"metric": plan.scores.document()} if plan.scores is not None else {}),
        "destination": convert.destination, "format": convert.to, "dry_run": dry_run,
        "files": list(result.files if result else convert.files),
        "tensors": len(convert.items), "total_bytes": convert.total_bytes,
        "bytes_written": result.bytes_written if result else 0,
        "averaged": list(plan.averaged), "taken_from_newest": list(plan.taken),
        "renamed": [{"from": old, "to": new} for old, new in convert.renamed],
        "dropped": list(convert.dropped),
        "skipped": [{"name": s.name, "reason": s.reason} for s in convert.skipped],
        "transformed": transformed(convert),
        "overflowed": [{"name": n, "count": c} for n, c in (result.overflowed if result else ())],
        "warnings": list(plan.warnings + convert.warnings),
    }


def _say_sources(plan, dry_run: bool) -> None:
    """On stderr, for people: which checkpoints are averaged, with their scores when a metric chose them."""
    scores = plan.scores
    if scores is not None:
        render.say(scores.describe())
    print(f"{'would average' if dry_run else 'averaging'} {render.plural(len(plan.sources), 'checkpoint')} "
          f"({plan.selection}):", file=sys.stderr)
    for s in plan.sources:
        score = f", {scores.tag} {render.score_text(s.score)}" if scores is not None else ""
        render.say(f"  {s.prefix} (step {'-' if s.step is None else s.step}{score})")


def command(
    sources: Annotated[List[str], typer.Argument(
        metavar="SRC...", help="The checkpoints to average (prefixes, files, .safetensors, .npz, Keras files, PyTorch "
                               ".pt/.pth/.bin files), or one run directory with --last, --steps or --best.",
        show_default=False)],
    output: Annotated[str, typer.Option(
        "--output", "-o", metavar="DST", help="What to write, as convert's DST: a checkpoint prefix, "
                                              "NAME.safetensors, NAME.safetensors.index.json or NAME.npz.",
        show_default=False)],
    last: Annotated[Optional[int], typer.Option("--last", metavar="N", help="The last N complete checkpoints of the run "
                                                               "directory.")] = None,
    steps: Annotated[Optional[str], typer.Option("--steps", metavar="A,B,...", help="The checkpoints of these steps "
                                                                                   "in the run directory.")] = None,
    best: Annotated[Optional[int], typer.Option("--best", metavar="N", help="The N best checkpoints of the run directory by "
                                                               "--metric.")] = None,
    metric: Annotated[Optional[str], typer.Option(
        "--metric", metavar="TAG", help="With --best: the eval metric, from --metrics FILE, trainer_state.json or "
                                        "TensorBoard event files under the run directory.")] = None,
    metrics_file: Annotated[Optional[str], typer.Option(
        "--metrics", metavar="FILE", help="With --best: JSON lines or CSV with a step (or epoch) column.")] = None,
    mode: Annotated[Mode, typer.Option("--mode", help="With --best: min or max is better (auto: from the metric's "
                                                      "name, as Keras does).")] = Mode.auto,
    allow_damaged_metrics: AllowDamagedMetrics = False,
    keep_optimizer: Annotated[bool, typer.Option(
        "--keep-optimizer", help="Keep the optimizer's state (averaged like the weights); left out by "
                                 "default.")] = False,
    to: ToOpt = None,
    names: NamesOpt = Naming.key,
    map_: MapOpt = None,
    map_file: MapFile = None,
    regex: RegexOpt = None,
    add_prefix: AddPrefix = None,
    strip_prefix: StripPrefix = None,
    ema: Ema = False,
    drop: DropOpt = None,
    keep: KeepOpt = None,
    sep: SepOpt = None,
    strict: StrictOpt = False,
    shard_size: ShardSizeOpt = None,
    metadata: MetadataOpt = None,
    layout: LayoutOpt = None,
    transpose: TransposeOpt = None,
    dtype: DtypeOpt = None,
    keep_dtype: KeepDtypeOpt = None,
    overwrite: Overwrite = False,
    dry_run: DryRun = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Average checkpoints: the element-wise mean of every floating variable.

    Floating variables are averaged and written in their dtype: float64 as
    numpy's float64 mean, bit for bit; float32, float16 and bfloat16 summed
    in float32, then divided by n (off the exact mean by at most about
    n * 2**-24 times the mean of the values' magnitudes, plus 2**-150 where
    the mean is below float32's normal range, plus the rounding to
    float16/bfloat16; two float32 sources give the correctly rounded mean; a
    sum beyond float32's range is taken in float64); integer and string variables (step counters) come from the newest
    checkpoint (highest step, else the last given). The optimizer is left
    out unless --keep-optimizer. The sources must hold the same names, dtypes
    and shapes (exit 3 naming the first that differs); one checkpoint given
    twice (through a symlink, a hard link, a file:// URL or a protocol alias)
    is refused (exit 2). Streams a chunk of each source at a time; writes what convert writes, with its rename,
    layout and dtype options, applied in convert's order. With --names model the sources are paired by
    their variables' paths through the model (TF2 checkpoints whose keys differ) and written under them.

    With --best N --metric TAG, the checkpoints are scored and ranked as
    prune --keep-best and latest --best rank them (Keras {epoch} files by
    the log epoch before, ties to the older; a damaged log refused unless
    --allow-damaged-metrics); the sources and their scores go to stderr.
    """
    from ckpttool.ops.tensors.average import apply_average, plan_average
    from ckpttool.ops.tensors.convert import parse_size
    from ckpttool.ops.tensors.rename_rules import RenameRules, parse_pair

    rules = RenameRules.from_options(maps=map_, map_file=map_file, regexes=regex, add_prefix=add_prefix,
                                     strip_prefix=strip_prefix, ema=ema, drop=drop, keep=keep, sep=sep)
    plan = plan_average(sources, output, last=last, steps=steps, best=best, metric=metric,
                        metrics_file=metrics_file, mode=mode.value, allow_damaged_metrics=allow_damaged_metrics,
                        keep_optimizer=keep_optimizer, naming=names.value,
                        to=to.value if to else None, rules=rules, overwrite=overwrite, strict=strict,
                        shard_size=parse_size(shard_size) if shard_size is not None else None,
                        metadata=dict(parse_pair(m, "--metadata") for m in metadata or ()),
                        **transform_options(layout.value if layout else None, transpose, dtype.value if dtype else None,
                                            keep_dtype))
    render.warn_all(plan.warnings + plan.convert.warnings)
    render.warn_all(f"skipped {s.name}: {s.reason}" for s in plan.convert.skipped)
    if not json_out and not quiet:
        _say_sources(plan, dry_run)
    result = None
    if not dry_run:
        from ckpttool.cli.progress import byte_progress

        with byte_progress("averaging", plan.convert.total_bytes, json_out) as advance:
            result = apply_average(plan, on_progress=advance)
        warn_overflow(result)
    convert = plan.convert
    if json_out:
        render.emit_json("average", _document(plan, result, dry_run))
    elif quiet:
        render.print_lines(item.name for item in convert.items)
    else:
        files = result.files if result else convert.files
        verb = "would write" if dry_run else "wrote"
        render.print_lines([f"{verb} {convert.to} {', '.join(files)}: the mean of "
                            f"{render.plural(len(plan.sources), 'checkpoint')} ({plan.selection}), "
                            f"{len(plan.averaged)} averaged, {len(plan.taken)} taken from the newest, "
                            f"{len(convert.dropped)} dropped, {render.human_bytes(convert.total_bytes)}"])
    return 0
