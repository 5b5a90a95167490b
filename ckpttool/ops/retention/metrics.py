"""Eval metrics for retention by quality: a tag's value at each step, from whatever the run left.

Sources, in the order they are tried (the first that has the tag answers):
1. `--metrics FILE`: JSON lines or CSV with a `step` or `epoch` column (Keras' CSVLogger writes
   `epoch,accuracy,loss,val_accuracy,val_loss`);
2. an HF Trainer's `trainer_state.json` (`log_history` entries with `step`), in DIR or in its newest
   `checkpoint-<step>/`, read in bounded memory (formats/trainer_state);
3. TensorBoard event files under DIR (or `--events DIR`), read without TensorFlow (formats/tfevents):
   TAG is `tag`, `run/tag` (`validation/epoch_loss`), or Keras' name (`val_loss` is `epoch_loss` of
   the `validation` run, `loss` that of `train`). A directory below that holds checkpoints of its own
   is another run: its event files are never read for this one.
A checkpoint's name can carry its own score too (`--name-pattern`, Keras ModelCheckpoint's template):
`name_pattern_scores` reads it.

Steps and epochs: Keras logs epochs from 0 (TensorBoard `epoch_*` steps, CSVLogger's `epoch`), while
ModelCheckpoint's `{epoch}` counts from 1: the file for `{epoch}=k` holds the weights after log epoch
k-1. A series read from epoch logs says so (`zero_based_epochs`), and `score_at` aligns it for
checkpoints numbered by Keras epochs. Steps are matched exactly; the last value written for a step
wins (a restarted run rewrites its steps). A NaN or infinite value is no score (warned about).

Damage: what a source could not read (an event record failing its CRC, a line or a trainer_state.json
that does not parse, a row without a number) is skipped, and reported with the series
(`MetricSeries.damage`: file and byte offset): the scores it held are missing, so commands that decide
by them refuse unless told otherwise (ops/scoring.damage_refusal). The live end of a log is not
damage: the last record of a run's newest event file, the last line of a metrics file without its
newline (writers still at work).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Callable

from ckpttool.errors import BadInput, UsageProblem
from ckpttool.formats.damage import Damage
from ckpttool.storage import fs

METRICS_FILE_CAP = 256 << 20
TRAINER_STATE = "trainer_state.json"
_MAX_TAG_NAMES = 200  # tags named in an error at most

# Keras 3 infers a direction from the metric object; without the model, from the name as Keras 2 did
# (max for accuracy-like names), widened to the metrics Keras 3 marks as "up". Whole words of the name
# only: "answer" holds "wer" and "cancer" "cer", neither of which makes val_answer_accuracy a loss.
_MAX_WORDS = frozenset((
    "acc", "accuracy", "auc", "auroc", "auprc", "precision", "recall", "f1", "fbeta", "fmeasure", "iou", "miou",
    "r2", "bleu", "rouge", "rouge1", "rouge2", "rougel", "rougelsum", "map", "ndcg", "mrr", "psnr", "ssim",
    "score", "dice", "similarity"))
_MIN_WORDS = frozenset((
    "loss", "error", "mse", "mae", "mape", "msle", "rmse", "perplexity", "ppl", "wer", "cer", "hinge",
    "crossentropy", "entropy", "divergence", "distance", "nll", "logcosh", "kld"))


@dataclass(frozen=True)
class MetricSeries:
    tag: str  # as asked for
    source: str  # what answered: "events logs/validation (epoch_loss)", "metrics log.csv (val_loss)" ...
    values: dict[int, float]  # step (or log epoch) -> value
    zero_based_epochs: bool = False  # Keras epoch logs: checkpoint epoch k reads log epoch k-1
    warnings: tuple[str, ...] = ()
    damage: tuple[Damage, ...] = ()  # what could not be read in the sources consulted (values may be missing)

    def score_at(self, step: int | None, keras_epoch: bool = False) -> float | None:
        if step is None:
            return None
        key = step - 1 if keras_epoch and self.zero_based_epochs else step
        return self.values.get(key)


# camelCase words; digits stay with the letters before them (`f1`, `rouge2`, `valLoss` -> val, loss)
_WORD_RE = re.compile(r"[A-Z]+[0-9]*(?![a-z])|[A-Z]?[a-z]+[0-9]*|[0-9]+")


def name_words(tag: str) -> set[str]:
    """The words of a metric's name, lower case: its parts between `/`, `_`, `-`, `.`, and their
    camelCase words (`mAP` and `IoU` are words as they stand; `valLoss` is val and loss)."""
    parts = [part for part in re.split(r"[/_\-.\s]+", tag) if part]
    return {part.lower() for part in parts} | {word.lower() for part in parts for word in _WORD_RE.findall(part)}


def infer_mode(tag: str, mode: str = "auto") -> str:
    """"min" or "max"; auto as Keras' ModelCheckpoint(mode="auto") does without a model, by whole words
    of the name. A name whose words say neither, or both, is refused (UsageProblem)."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise UsageProblem(f"--mode takes min, max or auto, not {mode!r}")
    words = name_words(tag)
    lower, higher = sorted(words & _MIN_WORDS), sorted(words & _MAX_WORDS)
    if lower and not higher:
        return "min"
    if higher and not lower:
        return "max"
    why = (f"its words say both ({', '.join(lower)}: low; {', '.join(higher)}: high)" if lower
           else "no word of its name is a loss or an accuracy-like metric")
    raise UsageProblem(f"cannot tell whether {tag!r} should be low or high ({why}): "
                       "give --mode min or --mode max")


def _finite(values: dict[int, float], what: str) -> tuple[dict[int, float], list[str]]:
    bad = sorted(step for step, value in values.items() if not math.isfinite(value))
    if not bad:
        return values, []
    shown = ", ".join(str(s) for s in bad[:5]) + (" ..." if len(bad) > 5 else "")
    return ({s: v for s, v in values.items() if math.isfinite(v)},
            [f"{what}: {len(bad)} value{'s' if len(bad) != 1 else ''} not finite (step {shown}): no score there"])


# -- metrics files --------------------------------------------------------------------------------

class _RowProblem(Exception):
    """A row (a line of a metrics file, an entry of log_history) that does not give a step and a value."""


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _RowProblem(f"{what} is not a number")
    try:
        return float(value)
    except (ValueError, OverflowError):  # OverflowError: a JSON integer beyond any float
        raise _RowProblem(f"{what} is not a number") from None


def _step_of(row: dict) -> tuple[int, bool]:
    """(step, zero_based_epochs) of one row: its `step`, else its (Keras, 0-based) `epoch`."""
    for key, epochs in (("step", False), ("global_step", False), ("epoch", True)):
        if key in row and row[key] not in (None, ""):
            value = _number(row[key], key)
            if not value.is_integer() or value < 0:
                raise _RowProblem(f"{key} is not a whole number")
            return int(value), epochs
    raise _RowProblem("no step or epoch column")


class _DamagedRows:
    """The rows of one log that could not be read: the first (its byte offset) and how many."""

    def __init__(self, path: str):
        self.path, self.count, self.first = path, 0, None

    def add(self, offset: int | Callable[[], int], what: str) -> None:
        """`offset`, or how to find it (asked for the first damaged row only)."""
        self.count += 1
        if self.first is None:
            self.first = (offset if isinstance(offset, int) else offset(), what)

    def damage(self, rows: str = "lines") -> tuple[Damage, ...]:
        if self.first is None:
            return ()
        offset, what = self.first
        more = f" ({self.count} damaged {rows} skipped, the first here)" if self.count > 1 else " (skipped)"
        return (Damage(self.path, offset, what + more),)


def _utf8(raw: bytes, damaged: _DamagedRows) -> str:
    """The text of a log, undecodable bytes replaced (and the first of them noted as damage)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        damaged.add(exc.start, "not UTF-8 text")
        return raw.decode("utf-8", "replace")


def _line_offset(raw: bytes, number: int) -> int:
    """Byte offset of line `number` (from 1)."""
    offset = 0
    for _ in range(number - 1):
        offset = raw.index(b"\n", offset) + 1
    return offset


def _json_rows(raw: bytes, damaged: _DamagedRows) -> list[tuple[int, int, dict]]:
    """(line number, byte offset, object) of each JSON line; the last line may be unfinished (a file
    still being written: not read, no damage)."""
    rows, offset = [], 0
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            if number < len(lines):  # the last line has no newline: still being written
                damaged.add(start, f"line {number}: not a JSON object")
            continue
        if not isinstance(row, dict):
            damaged.add(start, f"line {number}: not a JSON object")
            continue
        rows.append((number, start, row))
    return rows


def _csv_rows(raw: bytes, path: str, damaged: _DamagedRows) -> tuple[list[tuple[int, None, dict]], list[str]]:
    """(line number, None, row) of each CSV row (the byte offset is found when a row is damaged), and
    warnings; a last line without its newline is still being written (its last field may be cut):
    not read."""
    import csv  # here: prune and ls import this module whether or not a metric is asked for
    import io

    reader = csv.DictReader(io.StringIO(_utf8(raw, damaged)))
    try:
        fields = reader.fieldnames
    except csv.Error:
        fields = None
    if not fields or not ({"step", "epoch", "global_step"} & set(fields)):
        raise BadInput(f"metrics file {path}: neither JSON lines nor CSV with a step or epoch column"
                       + "".join(f" ({d.message})" for d in damaged.damage()))
    parsed, warnings, line = [], [], reader.line_num
    while True:
        first_line = line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            parsed.append((first_line, None))
        else:
            parsed.append((first_line, row))
        line = reader.line_num
    rows = []
    for index, (number, row) in enumerate(parsed):
        if index == len(parsed) - 1 and not raw.endswith(b"\n"):
            warnings.append(f"metrics file {path}, line {number}: no newline yet (still being written?): not read")
            continue
        if row is None or None in row or any(v is None for v in row.values()):
            damaged.add(lambda: _line_offset(raw, number), f"line {number}: wrong number of columns")
            continue
        rows.append((number, None, row))
    return rows, warnings


def read_metrics_file(path: str, tag: str) -> MetricSeries:
    """TAG's values from a JSON-lines or CSV file with a step or epoch column. A line that cannot be
    read is skipped and reported as damage (MetricSeries.damage, with its byte offset); a file with
    no readable value of TAG at all is BadInput."""
    raw = fs.read_capped(path, METRICS_FILE_CAP, "metrics file")
    damaged = _DamagedRows(path)
    warnings: list[str] = []
    if raw.lstrip().startswith(b"{"):
        rows = _json_rows(raw, damaged)
    else:
        rows, warnings = _csv_rows(raw, path, damaged)
    columns: set[str] = set()
    values: dict[int, float] = {}
    epochs_seen = steps_seen = False
    for number, offset, row in rows:
        columns.update(k for k in row if isinstance(k, str))
        if tag not in row or row[tag] in (None, ""):
            continue
        try:
            step, epochs = _step_of(row)
            value = _number(row[tag], tag)
        except _RowProblem as exc:
            damaged.add((lambda: _line_offset(raw, number)) if offset is None else offset, f"line {number}: {exc}")
            continue
        epochs_seen |= epochs
        steps_seen |= not epochs
        values[step] = value
    damage = damaged.damage()
    if not values:
        shown = ", ".join(sorted(c for c in columns if c not in ("step", "epoch", "global_step")))
        raise BadInput(f"metrics file {path} has no {'readable ' if damage else ''}{tag!r}"
                       + (f" (it has {shown})" if shown and not damage else "")
                       + "".join(f": {d.message}" for d in damage))
    if epochs_seen and steps_seen:
        raise BadInput(f"metrics file {path}: rows give steps and epochs mixed")
    values, not_finite = _finite(values, f"metrics file {fs.basename(path)}")
    return MetricSeries(tag, f"metrics file {path} ({tag})", values, epochs_seen, tuple(warnings + not_finite),
                        damage)


# -- HF trainer_state.json ------------------------------------------------------------------------

def find_trainer_state(directory: str) -> str | None:
    """DIR/trainer_state.json, else that of the newest `checkpoint-<step>/` (it holds the whole log)."""
    own = fs.join(directory, TRAINER_STATE)
    if fs.is_regular_file(own):
        return own
    best = None
    try:
        entries = fs.list_dir(directory)
    except (BadInput, OSError):
        return None
    for entry in entries:
        head, _, step = entry.name.partition("-")
        if entry.kind == "dir" and head == "checkpoint" and step.isdecimal():
            candidate = fs.join(directory, entry.name, TRAINER_STATE)
            if (best is None or int(step) > best[0]) and fs.is_regular_file(candidate):
                best = (int(step), candidate)
    return best[1] if best else None


def read_trainer_state(path: str, tag: str, logged: set[str] | None = None) -> MetricSeries | None:
    """TAG's values from `log_history`, read entry by entry (formats/trainer_state: memory bounded
    whatever the file's size); None when the file does not log TAG and is undamaged (the keys its
    entries log go to `logged`). Damage (a file cut short while the Trainer wrote it, which it does
    in place; a byte that does not parse; an entry whose step or value is no number) is reported in
    the series, with the values read around it."""
    from ckpttool.formats import trainer_state

    values: dict[int, float] = {}
    damaged = _DamagedRows(path)

    def entry(row, where: Callable[[], int]) -> None:
        if not isinstance(row, dict):
            damaged.add(where, "a log_history entry that is not an object")
            return
        if logged is not None and len(logged) < _MAX_TAG_NAMES:
            logged.update(k for k in row if isinstance(k, str) and k not in ("step", "epoch"))
        if tag in row and "step" in row:
            try:
                step, _ = _step_of({"step": row["step"]})
                values[step] = _number(row[tag], tag)
            except _RowProblem as exc:
                damaged.add(where, f"log_history entry: {exc}")

    state = trainer_state.read(path, on_entry=entry)
    damage = ((state.damage,) if state.damage else ()) + damaged.damage("log_history entries")
    if not values and not damage:
        return None
    values, warnings = _finite(values, fs.basename(path))
    return MetricSeries(tag, f"trainer state {path} ({tag})", values, False, tuple(warnings), damage)


# -- TensorBoard event files ----------------------------------------------------------------------

def _match_rank(run: str, tag: str, wanted: str) -> int | None:
    full = f"{run}/{tag}" if run else tag
    if full == wanted:
        return 0
    if full.endswith("/" + wanted):
        return 1
    if tag == wanted:
        return 2
    last_run = run.rsplit("/", 1)[-1]
    if tag.startswith("epoch_"):
        if wanted.startswith("val_") and last_run == "validation" and tag == "epoch_" + wanted[4:]:
            return 3
        if not wanted.startswith("val_") and last_run == "train" and tag == "epoch_" + wanted:
            return 3
    return None


@dataclass
class EventScan:
    """Every run's scalars for the tags that could be TAG, and what else was there."""
    values: dict[tuple[str, str], dict[int, float]] = field(default_factory=dict)
    ranks: dict[tuple[str, str], int] = field(default_factory=dict)
    other_tags: set[str] = field(default_factory=set)
    damage: list[Damage] = field(default_factory=list)
    files: int = 0


def _another_run(path: str, entries: list[fs.Entry]) -> bool:
    """Whether a directory below the one scored is a run of its own, by names: it holds checkpoints
    (a state file, a TF prefix, a series' members, SavedModel versions or Orbax steps) or is one (a
    step directory). Its event files are that run's logs, never the scores of the directory above."""
    from ckpttool.ops.runs import series
    from ckpttool.ops.runs.scan import holds_checkpoints

    dirs = [e.name for e in entries if e.kind == "dir"]
    files = [e.name for e in entries if e.kind == "file"]
    name = fs.basename(path)
    if holds_checkpoints(dirs, files) or series.HF_STEP_RE.match(name) or series.is_step_directory(name, files):
        return True
    for child in (e for e in entries if e.kind == "dir" and e.name.isdecimal()):
        try:
            inner = [e.name for e in fs.list_dir(child.path) if e.kind == "file"]
        except (BadInput, OSError):
            continue
        if series.is_step_directory(child.name, inner):
            return True
    return False


def scan_events(root: str, wanted: str, other_runs: list[str] | None = None) -> EventScan:
    """The scalars that could be `wanted` in the event files under root; the directories below it
    that are runs of their own (never read) go to `other_runs`."""
    from ckpttool.formats import tfevents

    found = EventScan()
    for run, paths in tfevents.find_event_files(root, another_run=_another_run, skipped=other_runs).items():
        rank_of: dict[str, int | None] = {}

        def matches(tag: str) -> bool:
            if tag not in rank_of:
                rank_of[tag] = _match_rank(run, tag, wanted)
                if rank_of[tag] is None and len(found.other_tags) < _MAX_TAG_NAMES:
                    found.other_tags.add(f"{run}/{tag}" if run else tag)
            return rank_of[tag] is not None

        for path in paths:
            found.files += 1
            report = tfevents.EventFileReport(path)
            for scalar in tfevents.iter_scalars(path, report, matches):
                key = (run, scalar.tag)
                series = found.values.get(key)
                if series is None:
                    series = found.values[key] = {}
                    found.ranks[key] = rank_of[scalar.tag]
                series[scalar.step] = scalar.value
            # A damaged record may have held any tag: damage anywhere is damage to the score's source.
            found.damage.extend(report.damage)
            if report.cut_at is not None and path != paths[-1]:
                found.damage.append(Damage(path, report.cut_at, _LOST_TAIL))
    return found


# Only the newest event file of a run (the order of their names, which start with their creation
# time) may have a writer appending to it: a record cut short at its end is one being written. An
# older file's writer has finished (TensorFlow opens a new file for every writer), so its cut record
# is lost for good.
_LOST_TAIL = ("the file ends inside a record, and it is not its run's newest event file (no writer appends "
              "to it any more): that record is lost")


def read_events(root: str, tag: str, other_runs: list[str] | None = None) -> MetricSeries | None:
    """TAG's values from the event files under root (a directory below it that holds checkpoints of
    its own is another run: not read, listed in `other_runs`); None when there are no event files."""
    scan = scan_events(root, tag, other_runs)
    if not scan.files:
        return None
    if not scan.values:
        shown = ", ".join(sorted(scan.other_tags)) or "no scalars"
        raise BadInput(f"no scalar {tag!r} in the {scan.files} event file{'s' if scan.files != 1 else ''} "
                       f"under {root} (there: {shown})"
                       + "".join(f"; damaged: {d.message}" for d in scan.damage[:1]))
    best = min(scan.ranks.values())
    chosen = [key for key, rank in scan.ranks.items() if rank == best]
    if len(chosen) > 1:
        names = ", ".join(sorted(f"{run}/{t}" if run else t for run, t in chosen))
        raise UsageProblem(f"--metric {tag!r} names several scalars: {names}; give one as RUN/TAG")
    run, found_tag = chosen[0]
    values, warnings = _finite(scan.values[(run, found_tag)], f"events {run or '.'}")
    epochs = found_tag.startswith("epoch_")
    where = fs.join(root, run) if run else root
    return MetricSeries(tag, f"events {where} ({found_tag})", values, epochs, tuple(warnings), tuple(scan.damage))


def read_metric(directory: str, tag: str, metrics_file: str | None = None,
                events_dir: str | None = None) -> MetricSeries:
    """TAG's values for the checkpoints of `directory`, from the first source that has them."""
    if metrics_file:
        return read_metrics_file(metrics_file, tag)
    state, damage, logged = None, (), set()
    if events_dir is None:
        state = find_trainer_state(directory)
        if state is not None:
            series = read_trainer_state(state, tag, logged)
            if series is not None and series.values:
                return series
            damage = series.damage if series is not None else ()  # it may have lost TAG's values
    other_runs: list[str] = []
    series = read_events(events_dir or directory, tag, other_runs)
    if series is None:
        nested = (f" (not counting {', '.join(fs.basename(r) for r in other_runs[:3])}"
                  f"{' ...' if len(other_runs) > 3 else ''}: {'runs' if len(other_runs) > 1 else 'a run'} "
                  "of its own, with checkpoints)") if other_runs else ""
        shown = ", ".join(sorted(logged))
        trainer = "" if events_dir else (
            ", no trainer_state.json logging it" if state is None else
            f", and {state} does not log it" + (f" (it logs {shown})" if shown else "")
            + "".join(f" (damaged: {d.message})" for d in damage))
        raise BadInput(f"no metrics for {tag!r}: no event files under {events_dir or directory}{nested}{trainer}",
                       hint="point to them with --events DIR or --metrics FILE, or use --name-pattern")
    return replace(series, damage=damage + series.damage) if damage else series


# -- scores in checkpoint names -------------------------------------------------------------------

_FIELD_RE = re.compile(r"\{([^{}:!]*)(?:![rsa])?(?::([^{}]*))?\}")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"


@dataclass(frozen=True)
class NamePattern:
    """A Keras ModelCheckpoint template (`w.{epoch:02d}-{val_loss:.2f}.weights.h5`) as a matcher."""
    template: str
    regex: re.Pattern
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, template: str) -> "NamePattern":
        parts, names, pos = [], [], 0
        for number, match in enumerate(_FIELD_RE.finditer(template)):
            literal = template[pos:match.start()].replace("{{", "{").replace("}}", "}")
            parts.append(re.escape(literal))
            name, spec = match[1], match[2] or ""
            if not name:
                raise UsageProblem(f"--name-pattern {template!r}: every field needs a name ({{epoch}}, {{val_loss}})")
            names.append(name)
            integer = spec.endswith("d") or (name in ("epoch", "step", "batch") and not spec)
            parts.append(f"(?P<f{number}>\\d+)" if integer else f"(?P<f{number}>{_NUMBER})")
            pos = match.end()
        parts.append(re.escape(template[pos:].replace("{{", "{").replace("}}", "}")))
        if not names:
            raise UsageProblem(f"--name-pattern {template!r} has no {{field}}")
        return cls(template, re.compile("".join(parts) + r"\Z"), tuple(names))

    def match(self, name: str) -> dict[str, float] | None:
        found = self.regex.match(name)
        if not found:
            return None
        return {field: float(found[f"f{i}"]) for i, field in enumerate(self.fields)}

    def score(self, name: str, tag: str) -> float | None:
        if tag not in self.fields:
            raise UsageProblem(f"--name-pattern {self.template!r} has no field {{{tag}}} for --metric {tag!r}")
        fields = self.match(name)
        if fields is None:
            return None
        value = fields[tag]
        return value if math.isfinite(value) else None
