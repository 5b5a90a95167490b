"""`ckpttool latest DIR`: the newest checkpoint prefix, as TensorFlow names it (its options and help:
cli/commands/latest.py)."""
from __future__ import annotations

import os

from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE
from ckpttool.cli.metric_options import metric_options
from ckpttool.errors import UsageProblem
from ckpttool.ops.runs.directories import require_directory


def run(directory: str, *, absolute: bool = False, step: bool = False, complete: bool = False, best: bool = False,
        metric: str | None = None, mode: str = "auto", metrics_file: str | None = None, events: str | None = None,
        name_pattern: str | None = None, allow_damaged_metrics: bool = False, json_out: bool = False) -> int:
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
        render.say(f"no {'complete ' if complete else ''}checkpoint in {directory}")
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
    if result.cut:
        from ckpttool.ops.runs.wholeness import summary

        render.warn(f"{summary(list(result.cut))}: cut short, TensorFlow cannot restore "
                    f"{'it' if len(result.cut) == 1 else 'them'}; passed over for --best")
    shown = result.prefix if absolute else result.best
    if json_out:
        render.emit_json("latest", {"directory": directory, "best": shown, "step": result.step,
                                    "score": result.score, "metric": result.scores.document()})
        return 0 if result.best is not None else EXIT_NEGATIVE
    render.say(result.scores.describe())
    if result.best is None:
        render.say(f"no complete checkpoint in {directory} has a {result.scores.tag} score")
        return EXIT_NEGATIVE
    render.say(f"best: {os.path.basename(result.prefix)}, {result.scores.tag} {result.score:.6g}")
    return _print_answer(result.prefix, result.step, shown, step)
