"""Checkpoint scores for retention by quality: each checkpoint's value of a metric, which are best.

Generic over CheckpointInfo (its step, its name, and whether it is numbered by Keras epochs): the
values come from ops/metrics (a metrics file, trainer_state.json, TensorBoard event files) or from
the checkpoints' own names (`--name-pattern`). A checkpoint's score is the metric's value at its step
exactly; a Keras ModelCheckpoint file numbered `{epoch}`=k gets the value logged for epoch k-1, as
Keras saved it. No value there (or a NaN/infinite one): no score.

Ranking: lower is better for mode "min", higher for "max"; between equal scores the older
checkpoint ranks first, as Keras' `save_best_only` keeps the first to reach a value. `Scores.ranked`
is the one ranking: prune's --keep-best, latest --best, ls --sort metric and average --best (and
the API under them) all choose by it.

Damage: a source read around damage (a record failing its CRC, a line that does not parse) may have
lost scores, so a choice made by them may not be the one the logs hold. `Scores.damage` says where;
`damage_refusal` is the refusal every command that decides by scores gives unless the user allows
it (MetricOptions.allow_damaged, `--allow-damaged-metrics`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ckpttool.errors import BadInput, UsageProblem
from ckpttool.formats.damage import Damage
from ckpttool.ops.retention import metrics
from ckpttool.ops.runs.scan import CheckpointInfo, scan_directory
from ckpttool.ops.runs.wholeness import first_whole
from ckpttool.storage import fs

MODES = ("auto", "min", "max")


@dataclass(frozen=True)
class MetricOptions:
    """Where a metric's values come from, and which way is better."""
    tag: str
    mode: str = "auto"
    metrics_file: str | None = None
    events_dir: str | None = None
    name_pattern: str | None = None
    allow_damaged: bool = False  # decide by the scores a damaged source still gives (--allow-damaged-metrics)

    def validate(self) -> None:
        if not self.tag:
            raise UsageProblem("--metric needs a tag name (val_loss, validation/epoch_accuracy ...)")
        if self.mode not in MODES:
            raise UsageProblem(f"--mode takes min, max or auto, not {self.mode!r}")
        if self.name_pattern is not None:
            if self.metrics_file or self.events_dir:
                raise UsageProblem("--name-pattern reads scores from checkpoint names: "
                                   "not with --metrics or --events")
            pattern = metrics.NamePattern.parse(self.name_pattern)
            if self.tag not in pattern.fields:
                raise UsageProblem(f"--name-pattern {self.name_pattern!r} has no field {{{self.tag}}} "
                                   f"for --metric {self.tag!r}")


@dataclass(frozen=True)
class Scores:
    tag: str
    mode: str  # "min" | "max"
    mode_given: bool  # False: chosen by --mode auto
    source: str  # what answered: "events /run/validation (epoch_loss)", "names (w.{epoch:02d}-{val_loss}.h5)"
    by_name: dict[str, float | None]  # every checkpoint scored -> its score, None if it has none
    steps: dict[str, int | None]  # name -> step, for ranking ties (older first)
    warnings: tuple[str, ...] = ()
    keras_aligned: bool = False  # some checkpoint was scored by the log epoch before its {epoch}
    epochs_as_steps: bool = False  # epochs logged from 0 matched to checkpoints not numbered by Keras' {epoch}
    damage: tuple[Damage, ...] = ()  # where the sources read could not be read (scores may be missing)

    def score(self, name: str) -> float | None:
        return self.by_name.get(name)

    @property
    def scored(self) -> int:
        return sum(score is not None for score in self.by_name.values())

    def describe(self) -> str:
        """One line for people: the tag, the direction and how it was chosen, the source."""
        direction = "lower is better" if self.mode == "min" else "higher is better"
        how = f"--mode {self.mode}" if self.mode_given else f"--mode auto chose {self.mode}"
        line = f"metric {self.tag}: {direction} ({how}), from {self.source}"
        if self.keras_aligned:
            line += "; Keras {epoch} k scored by log epoch k-1"
        if self.epochs_as_steps:
            line += "; log epochs (from 0) matched to other checkpoints' numbers as they are"
        return line

    def ranked(self, names: Iterable[str]) -> list[str]:
        """The scored names among `names`, best first (ties: the older first)."""
        scored = [n for n in names if self.by_name.get(n) is not None]
        sign = 1.0 if self.mode == "min" else -1.0
        return sorted(scored, key=lambda n: (sign * self.by_name[n], _step_key(self.steps.get(n)), n))

    def best(self, names: Iterable[str], count: int = 1) -> list[str]:
        """The `count` best of `names` (fewer when fewer are scored), best first."""
        return self.ranked(names)[:count]

    def document(self) -> dict:
        """The JSON form (without the per-checkpoint scores, which go with each checkpoint)."""
        return {"tag": self.tag, "mode": self.mode, "mode_given": self.mode_given, "source": self.source,
                "keras_epochs_aligned": self.keras_aligned, "epochs_as_steps": self.epochs_as_steps,
                "scored": self.scored,
                "unscored": len(self.by_name) - self.scored,
                "damaged": [{"path": d.path, "offset": d.offset, "message": d.message} for d in self.damage]}


def _step_key(step: int | None) -> float:
    return float("inf") if step is None else step


def score_checkpoints(directory: str, checkpoints: Iterable[CheckpointInfo], options: MetricOptions) -> Scores:
    """Every checkpoint's score. Raises BadInput when the metric cannot be read at all (no source,
    a tag no source has: the message names the tags there are), UsageProblem for bad options (a
    direction --mode auto cannot tell: asked only once the tag is found, so a misspelt tag is
    named as missing rather than as a name without a direction)."""
    options.validate()
    checkpoints = list(checkpoints)
    given = options.mode in ("min", "max")
    steps = {c.name: c.step for c in checkpoints}
    if options.name_pattern is not None:
        pattern = metrics.NamePattern.parse(options.name_pattern)
        by_name = {c.name: pattern.score(c.name, options.tag) for c in checkpoints}
        mode = metrics.infer_mode(options.tag, options.mode)
        return Scores(options.tag, mode, given, f"checkpoint names ({options.name_pattern})", by_name, steps)
    series = metrics.read_metric(directory, options.tag, options.metrics_file, options.events_dir)
    mode = metrics.infer_mode(options.tag, options.mode)
    by_name = {c.name: series.score_at(c.step, c.keras_epochs) for c in checkpoints}
    aligned = series.zero_based_epochs and any(c.keras_epochs for c in checkpoints)
    as_steps = series.zero_based_epochs and not all(c.keras_epochs for c in checkpoints)
    return Scores(options.tag, mode, given, series.source, by_name, steps, series.warnings, aligned, as_steps,
                  series.damage)


DAMAGE_HINT = ("--allow-damaged-metrics decides by the scores still readable; ls --metric (and prune "
               "--dry-run) lists the damage")


def damage_refusal(scores: Scores, options: MetricOptions, refusing: str) -> BadInput | None:
    """The refusal of a choice made by damaged scores (None: undamaged, or the user allows it).
    `refusing` says what is not done: "not pruning by these scores (nothing deleted)"."""
    if not scores.damage or options.allow_damaged:
        return None
    first = scores.damage[0]
    more = len(scores.damage) - 1
    return BadInput(f"damaged metric source {first.message}"
                    + (f" (and {more} more damaged source{'s' if more != 1 else ''})" if more else "")
                    + f"; {refusing}", hint=DAMAGE_HINT)


@dataclass(frozen=True)
class BestResult:
    directory: str  # as given
    best: str | None  # DIR/<name>, as `latest` prints a checkpoint
    prefix: str | None  # absolute
    step: int | None
    score: float | None
    scores: Scores
    cut: tuple[str, ...] = ()  # why better-scored checkpoints were passed over: their data is cut short


def find_best(directory: str, options: MetricOptions) -> BestResult:
    """The complete checkpoint of `directory` with the best score (None when none is scored) whose
    data is whole: a better-scored one whose data shards are shorter than its index says (a full
    disk, a copy cut short: TensorFlow cannot restore it) is passed over, and said so in `cut`."""
    scan = scan_directory(directory)
    complete = [c for c in scan.checkpoints if c.complete]
    scores = score_checkpoints(scan.directory, complete, options)
    refusal = damage_refusal(scores, options, "not choosing the best by these scores")
    if refusal is not None:
        raise refusal
    chosen, cut = first_whole(scan.by_name(name) for name in scores.ranked(c.name for c in complete))
    if chosen is None:
        return BestResult(directory, None, None, None, None, scores, tuple(cut))
    return BestResult(directory, fs.join(directory, chosen.name), chosen.prefix, chosen.step,
                      scores.score(chosen.name), scores, tuple(cut))
