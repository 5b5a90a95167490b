"""`ckpttool ls DIR`: its options for Typer; the body is cli/hot/ls.py."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from ckpttool.cli import fleet
from ckpttool.cli.hot import ls
from ckpttool.cli.options import (Directory, DropUnscored, EventsDir, Json, KeepBest, KeepEveryHours, KeepEverySteps,
                                  KeepLast, KeepStep, Metric, MetricsFile, MinAge, Mode, NamePatternOpt, Quiet,
                                  Recursive)


def command(
    directory: Directory,
    recursive: Recursive = False,
    metric: Metric = None,
    mode: Mode = "auto",
    metrics_file: MetricsFile = None,
    events: EventsDir = None,
    name_pattern: NamePatternOpt = None,
    sort: Annotated[Optional[str], typer.Option(
        "--sort", metavar="KEY[:asc|:desc]",
        help="Order by step or time (oldest first), size (largest first) or metric (best first; unscored "
             "last).")] = None,
    filters: Annotated[Optional[List[str]], typer.Option(
        "--filter", metavar="FIELD OP VALUE",
        help="Only checkpoints with size>1GB, age>7d, metric<0.3, step>=1000 (< <= > >= = !=; repeatable, all "
             "must hold; sizes in KB/MB/GB or KiB/MiB/GiB).")] = None,
    summary: fleet.Summary = False,
    keep_last: KeepLast = None,
    keep_every_hours: KeepEveryHours = None,
    keep_every_steps: KeepEverySteps = None,
    keep_step: KeepStep = None,
    min_age: MinAge = None,
    keep_best: KeepBest = None,
    drop_unscored: DropUnscored = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """List every checkpoint in DIR, from the state file and from the files on disk.

    Besides TF prefixes: Keras checkpoint files with a number in their name,
    SavedModel export versions (`<n>/`), Orbax `<step>/` and HF
    `checkpoint-<step>/` directories, each family a series of its own.

    With --recursive, every run directory under DIR, then each one's size and the total.
    With --metric, each checkpoint's score too (see prune for where scores come from).
    With --summary, one row per run directory; prune's rule options then say what they would free."""
    return ls.run(directory, recursive=recursive, metric=metric, mode=mode, metrics_file=metrics_file, events=events,
                  name_pattern=name_pattern, sort=sort, filters=filters, summary=summary, keep_last=keep_last,
                  keep_every_hours=keep_every_hours, keep_every_steps=keep_every_steps, keep_step=keep_step,
                  min_age=min_age, keep_best=keep_best, drop_unscored=drop_unscored, json_out=json_out, quiet=quiet)
