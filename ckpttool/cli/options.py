"""Option definitions shared by every command, so they are spelled and
documented the same way everywhere."""
from __future__ import annotations

import enum
from typing import Annotated, List, Optional

import typer

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print bare names, one per line.")]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Walk a tree of run directories.")]
DryRun = Annotated[bool, typer.Option("--dry-run", "-n", help="Show what would be done; change nothing.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking (needed when not interactive).")]
Directory = Annotated[str, typer.Argument(metavar="DIR", help="A checkpoint directory.", show_default=False)]
TargetArg = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="A checkpoint prefix, one of its files, a run directory (its latest checkpoint) or a SavedModel.",
        show_default=False,
    ),
]
# Graphs as TARGETs (their Const nodes as variables): inspect, verify, diff, convert.
GraphOpt = Annotated[bool, typer.Option(
    "--graph", help="Read the constants of the TARGET's graph (a SavedModel's saved_model.pb, a checkpoint's .meta) "
                    "instead of its variables. A GraphDef .pb, or a .meta with no checkpoint beside it, is read so "
                    "without it.")]
MinElements = Annotated[Optional[int], typer.Option(
    "--min-elements", metavar="N", min=0, help="Of a graph's constants, leave out those with fewer than N elements "
                                              "(shapes, axes, scalars; default 2).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing DST.")]
NoUpdateState = Annotated[bool, typer.Option(
    "--no-update-state", help="Leave the state file beside DST alone (DST does not become the latest checkpoint).")]
SourceArg = Annotated[str, typer.Argument(
    metavar="SRC", help="The checkpoint to read (prefix, file, run directory or SavedModel).", show_default=False)]

# The rename rules, shared by rename-vars and convert (one implementation: ops/tensors/rename_rules.RenameRules).
MapOpt = Annotated[Optional[List[str]], typer.Option("--map", metavar="OLD=NEW", help="OLD=NEW, exact name (repeatable).")]
MapFile = Annotated[Optional[str], typer.Option("--map-file", metavar="FILE", help="JSON object or `old new` lines.")]
RegexOpt = Annotated[Optional[List[str]], typer.Option(
    "--regex", metavar="PATTERN=REPLACEMENT", help="PATTERN=REPLACEMENT, Python re.sub (repeatable).")]
AddPrefix = Annotated[Optional[str], typer.Option("--add-prefix", metavar="PREFIX", help="Prepend this to every name.")]
StripPrefix = Annotated[Optional[str], typer.Option("--strip-prefix", metavar="PREFIX", help="Remove this leading text where present.")]
Ema = Annotated[bool, typer.Option("--ema", help="Promote X/ExponentialMovingAverage to X, replacing X.")]
DropOpt = Annotated[Optional[List[str]], typer.Option(
    "--drop", metavar="REGEX", help="Leave out source names matching REGEX (repeatable).")]
KeepOpt = Annotated[Optional[List[str]], typer.Option(
    "--keep", metavar="REGEX", help="Keep only source names matching REGEX (repeatable).")]
DropOptimizer = Annotated[bool, typer.Option(
    "--drop-optimizer", help="Leave out optimizer state: in a TF2 checkpoint what its object graph shows only the "
                             "optimizer reaches (slot variables, step, learning rate, moments), never a model "
                             "variable; elsewhere by name: TF1 slots (/Adam, /Adam_1, /Momentum ...), beta1_power, "
                             "optimizer/... (Keras 3 files). Refused if the rules drop every trained variable.")]


class Naming(str, enum.Enum):
    key = "key"
    model = "model"


# --names (inspect, convert, diff; average): one implementation, ops/tensors/model_names.py.
NamesOpt = Annotated[Naming, typer.Option(
    "--names", help="Name variables by their checkpoint key (key), or by their path through the model (model: "
                    "for TF2 checkpoints the shortest object path that passes through no optimizer, without "
                    ".ATTRIBUTES/VARIABLE_VALUE; optimizer state after its variable, e.g. .../kernel/m; other "
                    "sources keep their names). Refused when two variables would get one name.")]


# The metric of retention by quality, shared by prune, ls and latest (one implementation: ops/retention/scoring).
Metric = Annotated[Optional[str], typer.Option(
    "--metric", metavar="TAG",
    help="Score each checkpoint by TAG's value at its step exactly, read from TensorBoard event files under "
         "DIR (TAG, RUN/TAG, or Keras' val_loss = validation/epoch_loss), a trainer_state.json, --metrics or "
         "--name-pattern. Keras logs epochs from 0 but numbers ModelCheckpoint's {epoch} from 1: a Keras "
         "file for {epoch}=k is scored by log epoch k-1, as Keras saved it. NaN/inf: no score.")]
Mode = Annotated[str, typer.Option(
    "--mode", metavar="min|max|auto",
    help="min, max, or auto as Keras' ModelCheckpoint: max for accuracy-like names, min for losses, by whole "
         "words of the name (the choice is printed; a name that says neither or both is refused).")]
MetricsFile = Annotated[Optional[str], typer.Option(
    "--metrics", metavar="FILE", help="Read --metric from this JSON-lines or CSV file (a step or epoch column; "
                                      "Keras' CSVLogger epochs count from 0).")]
EventsDir = Annotated[Optional[str], typer.Option(
    "--events", metavar="DIR", help="Read --metric from the event files under this directory instead of DIR.")]
NamePatternOpt = Annotated[Optional[str], typer.Option(
    "--name-pattern", metavar="TEMPLATE",
    help="Read --metric from checkpoint names by the template given to Keras' ModelCheckpoint "
         "(w.{epoch:02d}-{val_loss:.2f}.weights.h5).")]

AllowDamagedMetrics = Annotated[bool, typer.Option(
    "--allow-damaged-metrics",
    help="Decide by the scores a damaged log still gives (an event record failing its CRC, a line that does "
         "not parse, an unparseable trainer_state.json). Without it such damage is refused: exit 3, naming "
         "the file and byte offset.")]


# The retention rules, shared by prune and ls --summary (one implementation: ops/retention/rules.RetentionRules,
# whose plan ls --summary asks prune for).
KeepLast = Annotated[Optional[int], typer.Option("--keep-last", metavar="N", help="Keep the newest N of each family.")]
KeepEveryHours = Annotated[Optional[float], typer.Option("--keep-every-hours", metavar="H", help="Keep one checkpoint every H hours (as Saver's keep_checkpoint_every_n_hours).")]
KeepEverySteps = Annotated[Optional[int], typer.Option("--keep-every-steps", metavar="K", help="Keep checkpoints whose step is divisible by K.")]
KeepStep = Annotated[Optional[List[int]], typer.Option("--keep-step", metavar="STEP", help="Keep the checkpoint of this step (repeatable).")]
MinAge = Annotated[Optional[str], typer.Option("--min-age", metavar="DURATION", help="Delete nothing younger than this (30m, 12h, 7d).")]
KeepBest = Annotated[Optional[int], typer.Option("--keep-best", metavar="N", help="Keep the N best-scored checkpoints of each family by --metric (the best is kept whenever --metric is given; ties go to the older).")]
DropUnscored = Annotated[bool, typer.Option("--drop-unscored", help="Let other rules decide about checkpoints without a score (by default they are kept).")]
