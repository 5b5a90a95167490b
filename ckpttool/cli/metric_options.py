"""The metric options prune, ls and latest share (--metric, --mode, --metrics, --events, --name-pattern,
--allow-damaged-metrics) made into the scoring they ask for, and the retention rule options into
RetentionRules; apart from cli/options.py's Typer declarations so that `latest`'s and `ls`'s bodies
load without Typer (cli/quick.py)."""
from __future__ import annotations


def metric_options(metric: str | None, mode: str, metrics_file: str | None, events: str | None,
                   name_pattern: str | None, allow_damaged: bool = False):
    """The MetricOptions of the shared options, or None without --metric (then the others are a usage error)."""
    from ckpttool.errors import UsageProblem

    if metric is None:
        given = [name for name, value in (("--mode", mode != "auto"), ("--metrics", metrics_file),
                                          ("--events", events), ("--name-pattern", name_pattern),
                                          ("--allow-damaged-metrics", allow_damaged)) if value]
        if given:
            raise UsageProblem(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --metric TAG")
        return None
    from ckpttool.ops.retention.scoring import MetricOptions

    options = MetricOptions(metric, mode, metrics_file, events, name_pattern, allow_damaged)
    options.validate()
    return options


def retention_rules(keep_last: int | None, keep_every_hours: float | None, keep_every_steps: int | None,
                    keep_step: list[int] | None, min_age: str | None, keep_best: int | None, drop_unscored: bool):
    """The RetentionRules of the shared options (not validated: no rule at all is the caller's to judge)."""
    from ckpttool.ops.retention.rules import RetentionRules, parse_duration

    return RetentionRules(keep_last, keep_every_hours, keep_every_steps, tuple(keep_step or ()),
                          parse_duration(min_age) if min_age is not None else None, keep_best, drop_unscored)
