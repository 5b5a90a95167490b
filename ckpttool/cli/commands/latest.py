"""`ckpttool latest DIR`: the newest checkpoint prefix, as TensorFlow names it."""
from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE
from ckpttool.cli.options import (AllowDamagedMetrics, Directory, EventsDir, Json, Metric, MetricsFile, Mode,
                                  NamePatternOpt, metric_options)
from ckpttool.errors import UsageProblem
from ckpttool.ops.runs.directories import require_directory


def command(
    directory: Directory,
    absolute: Annotated[bool, typer.Option("--absolute", help="Print an absolute path.")] = False,
    step: Annotated[bool, typer.Option("--step", help="Print the step number only.")] = False,
    complete: Annotated[bool, typer.Option(
        "--complete", help="The newest complete checkpoint (never one with missing shards).")] = False,
    best: Annotated[bool, typer.Option(
        "--best", help="The complete checkpoint with the best --metric score instead (for export jobs); exit 1 "
                       "when none has a score.")] = False,
    metric: Metric = None,
    mode: Mode = "auto",
    metrics_file: MetricsFile = None,
    events: EventsDir = None,
    name_pattern: NamePatternOpt = None,
    allow_damaged_metrics: AllowDamagedMetrics = False,
    json_out: Json = False,
):
    """Print the newest checkpoint in DIR (what tf.train.latest_checkpoint returns).

    Still answers when the directory was moved or its state file is missing or
    broken, and warns when the answer is incomplete (all with a warning).
    Exit 1 when there is no checkpoint.

    Where it deliberately differs from tf.train.latest_checkpoint: a state file
    holding absolute paths into another directory (a copied run) names the
    original's checkpoint, which TensorFlow returns while it exists; latest
    answers the same name in DIR, with a warning (`ckpttool repair DIR` makes
    the paths relative, and both agree again). A missing or unreadable state
    file gives TensorFlow no answer and latest the newest complete checkpoint
    on disk: the highest step, then the newest files.

    With --best --metric TAG: the best-scored complete checkpoint (ties: the
    older); the metric, its direction and source go to stderr. A log read
    around damage is refused (exit 3) unless --allow-damaged-metrics, as
    prune refuses it. JSON: {directory, best, step, score, metric}.

    A series without a state file (Keras checkpoint files, SavedModel
    versions, Orbax or HF step directories) answers its complete member with
    the highest step, with a warning naming newer members that are not
    complete (a Keras file cut short); TF prefixes, when DIR has any, answer
    first.
    """
    from ckpttool.ops.runs.latest import find_latest

    if absolute and step:
        raise UsageProblem("--absolute and --step cannot be used together (--step prints the step only)")
    scoring = metric_options(metric, mode, metrics_file, events, name_pattern, allow_damaged_metrics)
    if best != (scoring is not None):
        raise UsageProblem("--best needs --metric TAG" if best else "--metric goes with --best")
    require_directory(directory, "latest")
    if best:
        return _best(directory, scoring, absolute, step, json_out)
    result = find_latest(directory, complete=complete)
    render.warn_all(result.warnings)
    shown = result.prefix if absolute else result.latest
    if json_out:
        render.emit_json("latest", {"directory": directory, "latest": shown, "step": result.step,
                                    "source": result.source})
    elif result.latest is None:
        print(f"no {'complete ' if complete else ''}checkpoint in {directory}", file=sys.stderr)
    else:
        return _print_answer(result.prefix, result.step, shown, step)
    return 0 if result.latest is not None else EXIT_NEGATIVE


def _print_answer(prefix: str, step_number: int | None, shown: str, step: bool) -> int:
    """The checkpoint's path (as shown), or its step with --step (exit 1 when its name has none)."""
    if step:
        if step_number is None:
            render.warn(f"{os.path.basename(prefix)} has no step number")
            return EXIT_NEGATIVE
        render.print_lines([str(step_number)])
    else:
        render.print_lines([shown])
    return 0


def _best(directory: str, scoring, absolute: bool, step: bool, json_out: bool) -> int:
    from ckpttool.ops.retention.scoring import find_best

    result = find_best(directory, scoring)
    render.warn_all(result.scores.warnings)
    render.warn_all(f"damaged metric source {d.message}" for d in result.scores.damage)
    shown = result.prefix if absolute else result.best
    if json_out:
        render.emit_json("latest", {"directory": directory, "best": shown, "step": result.step,
                                    "score": result.score, "metric": result.scores.document()})
        return 0 if result.best is not None else EXIT_NEGATIVE
    print(result.scores.describe(), file=sys.stderr)
    if result.best is None:
        print(f"no complete checkpoint in {directory} has a {result.scores.tag} score", file=sys.stderr)
        return EXIT_NEGATIVE
    print(f"best: {os.path.basename(result.prefix)}, {result.scores.tag} {result.score:.6g}", file=sys.stderr)
    return _print_answer(result.prefix, result.step, shown, step)
