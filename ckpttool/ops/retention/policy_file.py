"""Retention policy files: a TOML file of `[[rule]]` tables, each naming run directories by path
globs (`paths`) and the retention rules `prune` takes on its command line, read into a `Policy`.

Every mistake is a UsageProblem naming the file, the line and the key (`retention.toml:7: rule 2:
keep_last: ...`). tomllib gives no positions for keys, so `_KeyLines` finds them by a small scan of
the text (table headers and `key =` lines, outside multi-line strings); a key it cannot place is
given the line of its rule's header.

Relative local globs are taken from the policy file's directory (cron runs in $HOME), `~` is
expanded; a bucket URL is never normalised. A rule's `metrics` and `events` paths, when relative,
are each run directory's own files (one rule governs many runs).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from ckpttool.errors import UsageProblem
from ckpttool.ops.retention.rules import RetentionRules, parse_duration
from ckpttool.ops.retention.scoring import MODES, MetricOptions
from ckpttool.storage import fs

POLICY_MAX_BYTES = 1 << 20  # rules for thousands of globs fit in far less

_RULE_KEYS = ("paths", "keep_last", "keep_every_hours", "keep_every_steps", "keep_step", "min_age", "keep_best",
              "clean", "ignore_bad_state", "allow_damaged_metrics")
_KEEP_BEST_KEYS = ("n", "metric", "mode", "drop_unscored", "metrics", "events", "name_pattern")


@dataclass(frozen=True)
class Rule:
    """One `[[rule]]` table: which run directories (`patterns`, resolved from `paths`) and how."""
    index: int  # 1-based, in file order: the first rule whose glob matches governs
    line: int  # of its `[[rule]]` header
    paths: tuple[str, ...]  # as written
    patterns: tuple[str, ...]  # the globs resolved: absolute local paths, URLs as written
    paths_line: int
    retention: RetentionRules
    clean: bool = False
    ignore_bad_state: bool = False
    allow_damaged_metrics: bool = False
    metric: MetricOptions | None = None  # with relative metrics/events paths as written

    def metric_for(self, directory: str) -> MetricOptions | None:
        """The metric options for one run directory: relative `metrics`/`events` paths are its own."""
        if self.metric is None:
            return None
        own = {name: fs.join(directory, value) if value is not None and not _is_absolute(value) else value
               for name, value in (("metrics_file", self.metric.metrics_file), ("events_dir", self.metric.events_dir))}
        return MetricOptions(self.metric.tag, self.metric.mode, own["metrics_file"], own["events_dir"],
                             self.metric.name_pattern, self.metric.allow_damaged)

    def document(self) -> dict:
        return {"index": self.index, "line": self.line, "paths": list(self.paths)}


@dataclass(frozen=True)
class Policy:
    file: str  # as given
    rules: tuple[Rule, ...]

    def problem(self, line: int, what: str) -> UsageProblem:
        return UsageProblem(f"{self.file}:{line}: {what}", hint="see docs/guides/policies.md for the file format")


def _is_absolute(path: str) -> bool:
    return fs.is_url(path) or os.path.isabs(os.path.expanduser(path))


def resolve_pattern(pattern: str, base: str) -> str:
    """A glob of `paths` as the walk takes it: a URL as written (no trailing slash), a local path
    absolute, relative ones from `base` (the policy file's directory)."""
    if fs.is_url(pattern):
        return pattern.rstrip("/")
    return os.path.abspath(os.path.join(base, os.path.expanduser(pattern)))


# -- where keys are ---------------------------------------------------------------------------

_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]\s*(?:#.*)?$")
_SUB_HEADER = re.compile(r"^\s*\[\s*rule\s*\.\s*(\"?)([A-Za-z0-9_-]+)\1\s*\]\s*(?:#.*)?$")
_OTHER_HEADER = re.compile(r"^\s*\[")
_KEY = re.compile(r"^\s*((?:(?:\"[^\"\n]*\"|'[^'\n]*'|[A-Za-z0-9_-]+)\s*\.\s*)*(?:\"[^\"\n]*\"|'[^'\n]*'|[A-Za-z0-9_-]+))"
                  r"\s*=")
_KEY_PART = re.compile(r"\"([^\"\n]*)\"|'([^'\n]*)'|([A-Za-z0-9_-]+)")


class _KeyLines:
    """Line numbers of keys, by (rule number or 0 for the top level, dotted key path)."""

    def __init__(self, text: str):
        self.rule_lines: list[int] = []
        self.lines: dict[tuple[int, str], int] = {}
        rule, table, in_string = 0, "", None
        for number, line in enumerate(text.splitlines(), 1):
            if in_string is not None:  # inside a multi-line string: only its end matters
                if line.count(in_string) % 2:
                    in_string = None
                continue
            if _RULE_HEADER.match(line):
                self.rule_lines.append(number)
                rule, table = len(self.rule_lines), ""
            elif found := _SUB_HEADER.match(line):
                table = found[2]
                self.lines.setdefault((rule, table), number)
            elif _OTHER_HEADER.match(line):
                rule, table = 0, line.strip().strip("[]").strip()
                self.lines.setdefault((0, table), number)
            elif found := _KEY.match(line):
                parts = [next(p for p in m.groups() if p is not None) for m in _KEY_PART.finditer(found[1])]
                self.lines.setdefault((rule, ".".join(([table] if table else []) + parts)), number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2:
                    in_string = quote
                    break

    def line(self, rule: int, key: str = "") -> int:
        """The line of `key` in rule `rule` (a dotted path: its longest part found), else of the rule."""
        parts = key.split(".") if key else []
        while parts:
            if (rule, ".".join(parts)) in self.lines:
                return self.lines[(rule, ".".join(parts))]
            parts.pop()
        if 0 < rule <= len(self.rule_lines):
            return self.rule_lines[rule - 1]
        return 1


# -- reading ------------------------------------------------------------------------------------

def read_policy(path: str) -> Policy:
    """The policy in the TOML file `path` (local), every value checked; UsageProblem (exit 2) naming
    the file, line and key of the first mistake."""
    import tomllib

    data = fs.read_capped(path, POLICY_MAX_BYTES, "policy file")
    try:
        text = data.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise UsageProblem(f"{path}: not UTF-8 text (byte {exc.start}): a policy file is TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageProblem(f"{path}: not valid TOML: {exc}") from None
    lines = _KeyLines(text)
    checker = Policy(path, ())
    for key in document:
        if key != "rule":
            raise checker.problem(lines.line(0, key), f"unknown key {key!r}: a policy holds only [[rule]] tables")
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise checker.problem(lines.line(0, "rule"), "rule: write each rule as a [[rule]] table")
    if not tables:
        raise checker.problem(1, "no [[rule]] table: a policy needs at least one rule")
    base = os.path.dirname(os.path.abspath(path))
    return Policy(path, tuple(_rule(checker, lines, index, table, base) for index, table in enumerate(tables, 1)))


def _rule(policy: Policy, lines: _KeyLines, index: int, table: dict, base: str) -> Rule:
    def bad(key: str, what: str) -> UsageProblem:
        return policy.problem(lines.line(index, key), f"rule {index}: {key}: {what}")

    for key in table:
        if key not in _RULE_KEYS:
            close = [k for k in _RULE_KEYS if k.replace("_", "") == key.replace("_", "").replace("-", "")]
            raise bad(key, f"unknown key{f' (did you mean {close[0]}?)' if close else ''}; known: "
                           + ", ".join(_RULE_KEYS))
    if "paths" not in table:
        raise policy.problem(lines.line(index), f"rule {index}: no paths: say which run directories it governs")
    paths = table["paths"]
    paths = [paths] if isinstance(paths, str) else paths
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        raise bad("paths", "must be a glob or a list of globs (local directories or bucket URLs)")
    for pattern in paths:
        if fs.is_url(pattern) and ("//" in pattern.partition("://")[2].rstrip("/") or
                                   any(part in (".", "..") for part in pattern.partition("://")[2].split("/"))):
            raise bad("paths", f"{pattern!r}: an object key with an empty, `.` or `..` segment is never followed")
    keep_last = _integer(table, "keep_last", 0, bad)
    keep_every_steps = _integer(table, "keep_every_steps", 1, bad)
    hours = table.get("keep_every_hours")
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, (int, float))
                              or not 0 < hours < math.inf):
        raise bad("keep_every_hours", f"must be a number of hours > 0, not {hours!r}")
    steps = table.get("keep_step", [])
    steps = [steps] if isinstance(steps, int) and not isinstance(steps, bool) else steps
    if not isinstance(steps, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in steps):
        raise bad("keep_step", "must be a step or a list of steps (integers >= 0)")
    min_age = _min_age(table.get("min_age"), bad)
    flags = {}
    for key in ("clean", "ignore_bad_state", "allow_damaged_metrics"):
        if not isinstance(table.get(key, False), bool):
            raise bad(key, f"must be true or false, not {table[key]!r}")
        flags[key] = table.get(key, False)
    keep_best, drop_unscored, metric = _keep_best(table.get("keep_best"), flags["allow_damaged_metrics"], bad)
    retention = RetentionRules(keep_last, float(hours) if hours is not None else None, keep_every_steps,
                               tuple(steps), min_age, keep_best, drop_unscored)
    try:
        retention.validate()  # e.g. keep_step = [] alone
    except UsageProblem:
        raise policy.problem(lines.line(index), f"rule {index}: no retention rule: give keep_last, "
                                                "keep_every_hours, keep_every_steps, keep_step, min_age or keep_best")
    return Rule(index, lines.line(index), tuple(paths), tuple(resolve_pattern(p, base) for p in paths),
                lines.line(index, "paths"), retention, metric=metric, **flags)


def _integer(table: dict, key: str, least: int, bad) -> int | None:
    value = table.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
        raise bad(key, f"must be an integer >= {least}, not {value!r}")
    return value


def _min_age(value, bad) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except UsageProblem as exc:
            raise bad("min_age", exc.message) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise bad("min_age", f"must be a duration (\"30m\", \"7d\") or seconds >= 0, not {value!r}")
    return float(value)


def _keep_best(value, allow_damaged: bool, bad) -> tuple[int | None, bool, MetricOptions | None]:
    """(keep_best, drop_unscored, metric options) of a `keep_best` table."""
    if value is None:
        return None, False, None
    if not isinstance(value, dict):
        raise bad("keep_best", "must be a table: keep_best = { n = 3, metric = \"val_loss\" }")
    for key in value:
        if key not in _KEEP_BEST_KEYS:
            raise bad(f"keep_best.{key}", "unknown key; known: " + ", ".join(_KEEP_BEST_KEYS))
    n = _integer(value, "n", 1, lambda key, what: bad(f"keep_best.{key}", what))
    for key in ("metric", "mode", "metrics", "events", "name_pattern"):
        if key in value and not (isinstance(value[key], str) and value[key]):
            raise bad(f"keep_best.{key}", f"must be a non-empty string, not {value[key]!r}")
    if "metric" not in value:
        raise bad("keep_best", "no metric: say which one ranks the checkpoints (metric = \"val_loss\")")
    if value.get("mode", "auto") not in MODES:
        raise bad("keep_best.mode", f"must be min, max or auto, not {value['mode']!r}")
    if not isinstance(value.get("drop_unscored", False), bool):
        raise bad("keep_best.drop_unscored", f"must be true or false, not {value['drop_unscored']!r}")
    metric = MetricOptions(value["metric"], value.get("mode", "auto"), value.get("metrics"), value.get("events"),
                           value.get("name_pattern"), allow_damaged)
    try:
        metric.validate()
    except UsageProblem as exc:
        raise bad("keep_best", exc.message.replace("--name-pattern", "name_pattern").replace("--metrics", "metrics")
                  .replace("--events", "events").replace("--metric", "metric")) from None
    return n or 1, value.get("drop_unscored", False), metric  # the best is kept by any metric rule
