"""`ls --filter` and `ls --sort`, as `hf cache ls` has them: `size>1GB`, `age>7d`, `metric<0.3`,
`step>=1000`; sort by step, time, size or metric, `KEY:asc` / `KEY:desc` to choose the direction.

Sizes take decimal (KB, MB, GB, TB: powers of 1000, as `hf` reads them) and binary units (KiB, MiB,
GiB, TiB); ages the durations of `--min-age` (30m, 12h, 7d). A checkpoint without a score never
passes a metric filter; without a step, never a step filter.
"""
from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from ckpttool.errors import UsageProblem
from ckpttool.ops.retention.rules import parse_duration
from ckpttool.ops.runs.scan import CheckpointInfo
from ckpttool.ops.retention.scoring import Scores

_FILTER_RE = re.compile(r"^\s*([a-z]+)\s*(<=|>=|!=|==|=|<|>)\s*(\S.*?)\s*$")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "=": operator.eq, "==": operator.eq, "!=": operator.ne}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*([kmgtp]?i?b?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15, "kib": 1 << 10, "mib": 1 << 20,
               "gib": 1 << 30, "tib": 1 << 40, "pib": 1 << 50}
FILTER_FIELDS = ("size", "age", "metric", "step")
SORT_KEYS = ("step", "time", "size", "metric")


def parse_size(text: str) -> float:
    match = _SIZE_RE.match(text.strip())
    unit = match[2].lower() if match else None
    if unit not in _SIZE_UNITS:
        raise UsageProblem(f"bad size {text!r}: use a number with B, KB, MB, GB, TB (or KiB, MiB, GiB, TiB)")
    return float(match[1]) * _SIZE_UNITS[unit]


@dataclass(frozen=True)
class Filter:
    text: str  # as given
    field: str  # "size" | "age" | "metric" | "step"
    op: str
    value: float  # bytes, seconds, a score, a step

    @classmethod
    def parse(cls, text: str) -> Filter:
        match = _FILTER_RE.match(text)
        if not match:
            raise UsageProblem(f"bad --filter {text!r}: use FIELD OP VALUE, e.g. size>1GB, age>7d, metric<0.3 "
                               f"(fields: {', '.join(FILTER_FIELDS)}; operators: < <= > >= = !=)")
        field, op, raw = match[1], match[2], match[3]
        if field in ("size", "age"):
            try:
                value = parse_size(raw) if field == "size" else parse_duration(raw)
            except UsageProblem as exc:
                raise UsageProblem(f"bad --filter {text!r}: {exc.message}") from None
        elif field in ("metric", "step"):
            try:
                value = float(raw)
            except ValueError:
                raise UsageProblem(f"bad --filter {text!r}: {raw!r} is not a number") from None
            if math.isnan(value):
                raise UsageProblem(f"bad --filter {text!r}: compare with a number, not NaN")
        else:
            raise UsageProblem(f"bad --filter {text!r}: no field {field!r} (fields: {', '.join(FILTER_FIELDS)})")
        return cls(text, field, op, value)

    def passes(self, checkpoint: CheckpointInfo, now: float, score: float | None) -> bool:
        actual = {"size": checkpoint.size_bytes, "age": now - checkpoint.time, "metric": score,
                  "step": checkpoint.step}[self.field]
        return actual is not None and _OPERATORS[self.op](actual, self.value)


@dataclass(frozen=True)
class Sort:
    key: str  # one of SORT_KEYS
    descending: bool

    @classmethod
    def parse(cls, text: str) -> Sort:
        key, _, direction = text.partition(":")
        if key not in SORT_KEYS or direction not in ("", "asc", "desc"):
            raise UsageProblem(f"bad --sort {text!r}: use one of {', '.join(SORT_KEYS)}, optionally with :asc "
                               "or :desc")
        # By default: step and time oldest first (as ls lists), size largest first (as hf), metric best first.
        return cls(key, direction == "desc" if direction else key == "size")


def require_metric(filters: list[Filter], sort: Sort | None) -> None:
    """A metric filter or sort without --metric is a usage error."""
    if any(f.field == "metric" for f in filters) or sort is not None and sort.key == "metric":
        raise UsageProblem("a metric filter or --sort metric needs --metric TAG")


def select(checkpoints: list[CheckpointInfo], filters: list[Filter], sort: Sort | None, now: float,
           scores: Scores | None = None) -> list[CheckpointInfo]:
    """The checkpoints passing every filter, in the order asked for (ls's own order without one).
    Without `scores` every checkpoint is unscored (no metric filter passes, the metric sort keeps
    the order)."""
    score = scores.score if scores is not None else (lambda _name: None)
    chosen = [c for c in checkpoints if all(f.passes(c, now, score(c.name)) for f in filters)]
    if sort is None:
        return chosen
    if sort.key == "metric":
        if scores is None:
            return chosen
        ranked = scores.ranked(c.name for c in chosen)
        order = ranked[::-1] if sort.descending else ranked  # :desc turns best-first into worst-first
        by_name = {c.name: c for c in chosen}
        return [by_name[n] for n in order] + [c for c in chosen if score(c.name) is None]  # unscored last
    key = {"step": lambda c: (c.step if c.step is not None else -1, c.time, c.name),
           "time": lambda c: (c.time, c.name), "size": lambda c: (c.size_bytes, c.name)}[sort.key]
    return sorted(chosen, key=key, reverse=sort.descending)
