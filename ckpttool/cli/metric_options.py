"""The metric options prune, ls and latest share (--metric, --mode, --metrics, --events, --name-pattern,
--allow-damaged-metrics) made into the scoring they ask for; apart from cli/options.py's Typer
declarations so that `latest`'s body loads without Typer (cli/quick.py)."""
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
