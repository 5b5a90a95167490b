"""Retention rules: which checkpoints `prune` keeps, and why. Pure logic over
the checkpoints a scan found (and their scores, for the metric rules); no file is touched here."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import groupby

from ckpttool.errors import UsageProblem
from ckpttool.ops.runs.scan import CheckpointInfo
from ckpttool.ops.retention.scoring import Scores

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in `90`, `30s`, `15m`, `2h`, `7d`, `1w`."""
    match = _DURATION_RE.match(text.lower())
    if not match:
        raise UsageProblem(f"bad duration {text!r}: use a number with s, m, h, d or w (e.g. 30m, 7d)")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


@dataclass(frozen=True)
class RetentionRules:
    keep_last: int | None = None
    keep_every_hours: float | None = None
    keep_every_steps: int | None = None
    keep_steps: tuple[int, ...] = ()
    min_age_seconds: float | None = None
    keep_best: int | None = None  # by the scores given to keep_reasons
    drop_unscored: bool = False  # with scores: a checkpoint without one is not kept for that alone
    keep_all: bool = False  # no rule given, only a storage budget (`prune --budget`): each kept until it needs room

    @property
    def given(self) -> bool:
        """Whether any rule is given (keep_all is none)."""
        return (self.keep_last is not None or self.keep_every_hours is not None
                or self.keep_every_steps is not None or bool(self.keep_steps) or self.min_age_seconds is not None
                or self.keep_best is not None)

    def validate(self) -> None:
        if not (self.keep_all or self.given):
            raise UsageProblem("no retention rule given: use --keep-last, --keep-every-hours, "
                               "--keep-every-steps, --keep-step, --min-age or --keep-best")
        if self.keep_best is not None and self.keep_best < 1:
            raise UsageProblem("--keep-best must be >= 1")
        for value, option in ((self.keep_last, "--keep-last"), (self.keep_every_steps, "--keep-every-steps")):
            if value is not None and value < (0 if option == "--keep-last" else 1):
                raise UsageProblem(f"{option} must be {'>= 0' if option == '--keep-last' else '>= 1'}")
        if self.keep_every_hours is not None and not (0 < self.keep_every_hours < math.inf):
            raise UsageProblem(f"--keep-every-hours must be a number of hours > 0, not {self.keep_every_hours}")


NO_RULE = "no rule given"
# The reasons a storage budget may override (`prune --budget`): the count and spacing rules and the
# ranks below the best. Never overridden: the latest of each family and series (and what else
# protected_checkpoints keeps), the best by the metric, --keep-step, --min-age.
_YIELDING_RULES = ("keep-last ", "keep-every-hours ", "keep-every-steps ", "keep-best ")
_UNSCORED = " score (kept unless --drop-unscored)"


def yields_to_budget(reasons: tuple[str, ...] | list[str]) -> bool:
    """Whether a checkpoint kept for `reasons` (keep_reasons') may still go to fit a storage budget."""
    return all(reason.startswith(_YIELDING_RULES) or reason == NO_RULE
               or reason.startswith("no ") and reason.endswith(_UNSCORED) for reason in reasons)


def keep_reasons(checkpoints: list[CheckpointInfo], rules: RetentionRules, now: float,
                 protected: dict[str, str], scores: Scores | None = None) -> dict[str, list[str]]:
    """Name -> reasons it is kept (empty list: delete). Each family is judged on its own.

    `protected` names are always kept, with the given reason (the latest
    checkpoint, saves newer than it). With `scores`, each family's best is
    always kept, and so are its `keep_best` best and (unless `drop_unscored`)
    every checkpoint without a score.
    """
    reasons: dict[str, list[str]] = {c.name: [] for c in checkpoints}
    for name, why in protected.items():
        if name in reasons:
            reasons[name].append(why)
    # By family, then step, time (c.time, without its property call per checkpoint) and name.
    ordered = sorted(checkpoints, key=lambda c: (c.family, c.step if c.step is not None else -1,
                                                 c.mtime if c.timestamp is None else c.timestamp, c.name))
    for _family, members in groupby(ordered, key=lambda c: c.family):
        members = list(members)
        if rules.keep_all:
            for c in members:
                reasons[c.name].append(NO_RULE)
        if rules.keep_last:
            for c in members[-rules.keep_last:]:
                reasons[c.name].append(f"keep-last {rules.keep_last}")
        if rules.keep_every_hours is not None:
            last_kept = None
            for c in members:
                if last_kept is None or c.time - last_kept >= rules.keep_every_hours * 3600:
                    reasons[c.name].append(f"keep-every-hours {rules.keep_every_hours:g}")
                    last_kept = c.time
        # (only when one of these rules is given: a pass over 100,000 members asks nothing otherwise)
        for c in members if rules.keep_every_steps or rules.keep_steps or rules.min_age_seconds is not None else ():
            if rules.keep_every_steps and c.step is not None and c.step % rules.keep_every_steps == 0:
                reasons[c.name].append(f"keep-every-steps {rules.keep_every_steps}")
            if c.step is not None and c.step in rules.keep_steps:
                reasons[c.name].append(f"keep-step {c.step}")
            if rules.min_age_seconds is not None and now - c.time < rules.min_age_seconds:
                reasons[c.name].append("younger than min-age")
        if scores is not None:
            _keep_by_score(members, rules, scores, reasons)
    return reasons


def _keep_by_score(members: list[CheckpointInfo], rules: RetentionRules, scores: Scores,
                   reasons: dict[str, list[str]]) -> None:
    for rank, name in enumerate(scores.best((c.name for c in members), rules.keep_best or 1), 1):
        shown = f"{scores.tag} {scores.score(name):.6g}"
        reasons[name].append(f"best ({shown})" if rank == 1 else f"keep-best {rules.keep_best} (#{rank}, {shown})")
    if not rules.drop_unscored:
        for c in members:
            if scores.score(c.name) is None:
                reasons[c.name].append(f"no {scores.tag}{_UNSCORED}")
