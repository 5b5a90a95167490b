"""`ckpttool latest DIR`: its options for Typer; the body is cli/hot/latest.py."""
from __future__ import annotations

from typing import Annotated

import typer

from ckpttool.cli.hot import latest
from ckpttool.cli.options import (AllowDamagedMetrics, Directory, EventsDir, Json, Metric, MetricsFile, Mode,
                                  NamePatternOpt)


def command(
    directory: Directory,
    absolute: Annotated[bool, typer.Option("--absolute", help="Print an absolute path.")] = False,
    step: Annotated[bool, typer.Option("--step", help="Print the step number only.")] = False,
    complete: Annotated[bool, typer.Option(
        "--complete", help="The newest complete checkpoint (never one with missing shards, nor one whose data "
                           "shard is shorter than its index says: TensorFlow cannot restore it).")] = False,
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

    Complete means TensorFlow can restore it: every data shard its index
    names is there and as long as the index says (a full disk or a copy cut
    short leaves a shorter one). --complete reads the answer's index to tell,
    and walks down past any found cut short, with a warning; so does the
    newest complete checkpoint on disk. A state file's entry without
    --complete is TensorFlow's own answer, given without that read.

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
    return latest.run(directory, absolute=absolute, step=step, complete=complete, best=best, metric=metric, mode=mode,
                      metrics_file=metrics_file, events=events, name_pattern=name_pattern,
                      allow_damaged_metrics=allow_damaged_metrics, json_out=json_out)
