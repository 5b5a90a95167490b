"""`ckpttool ls DIR`: every checkpoint in a directory, with its problems (its options and help:
cli/commands/ls.py; cli/quick.py runs its common forms without Typer)."""
from __future__ import annotations

import math
import time

from ckpttool.cli import render
from ckpttool.cli.metric_options import metric_options, retention_rules
from ckpttool.errors import BadInput
from ckpttool.storage import fs
from ckpttool.ops.runs.directories import require_directory
from ckpttool.ops.runs.scan import (TF_FORMATS, DirectoryScan, Problem, find_checkpoint_dirs, for_each_directory, gc_paused,
                               scan_directory, state_file_problems)


def _problems(scan: DirectoryScan):
    return scan.problems + state_file_problems(scan)


def checkpoints_bytes(scan: DirectoryScan) -> int:
    return sum(c.size_bytes for c in scan.checkpoints)


def _series_fields(c) -> dict:
    """What a series member's entry adds (a TF prefix's keeps its documented shape)."""
    return {"family": c.family, "keras_epochs": c.keras_epochs, "deletable": c.deletable,
            "unexpected": list(c.unexpected)}


def scan_document(scan: DirectoryScan, directory: str, checkpoints=None, scores=None) -> dict:
    """`directory`: as the user gave it (or as found under the root they gave). `checkpoints`: those
    to list (filtered, sorted), all by default; with `scores`, each carries its `score` (null: none)."""
    latest = scan.latest
    return {
        "directory": directory,
        **({"metric": scores.document()} if scores is not None else {}),
        "latest": latest.name if latest else None,
        "size_bytes": checkpoints_bytes(scan),
        "leftover_bytes": sum(leftover.size_bytes for leftover in scan.leftovers),
        "checkpoints": _checkpoint_rows_json(scan.checkpoints if checkpoints is None else checkpoints, scores),
        "problems": [{"kind": p.kind, "path": p.path, "message": p.message}
                     for p in _problems(scan) + _damage_problems(scores)],
    }


def _checkpoint_rows(checkpoints, scores) -> list[dict]:
    """Each checkpoint's JSON object. Its times as render.time_fields gives them, unrolled (a dict
    built and merged per time costs `ls --json` of 100,000 checkpoints a quarter of its rows)."""
    iso, finite = render.iso_utc, math.isfinite
    rows = []
    append = rows.append
    for c in checkpoints:
        mtime = c.mtime if c.mtime is None or finite(c.mtime) else None
        stamp = c.timestamp if c.timestamp is None or finite(c.timestamp) else None
        row = {"name": c.name, "prefix": c.prefix, "step": c.step, "format": c.format,
               "size_bytes": c.size_bytes, "num_shards": c.num_shards, "complete": c.complete,
               "has_meta": c.has_meta, "in_state": c.in_state, "is_latest": c.is_latest,
               "mtime": iso(mtime), "mtime_epoch": mtime,
               "timestamp": None if stamp is None else iso(stamp), "timestamp_epoch": stamp}
        if scores is not None:
            row["score"] = scores.score(c.name)
        if c.format not in TF_FORMATS:
            row.update(_series_fields(c))
        append(row)
    return rows


def _checkpoint_rows_json(checkpoints, scores) -> render.RawJSON:
    """_checkpoint_rows as the JSON text json.dumps makes of them: a TF prefix's row (without a
    score) written from a template, any other row by json.dumps itself."""
    import json
    from json.encoder import encode_basestring as text  # json's own, for ensure_ascii=False

    iso, finite, dumps = render.iso_utc, math.isfinite, json.dumps
    parts = []
    append = parts.append
    for c in checkpoints:
        if scores is not None or c.format not in TF_FORMATS:
            append(dumps(_checkpoint_rows([c], scores)[0], ensure_ascii=False, allow_nan=False))
            continue
        mtime = c.mtime if c.mtime is None or finite(c.mtime) else None
        stamp = c.timestamp if c.timestamp is None or finite(c.timestamp) else None
        step, shards = c.step, c.num_shards
        mtime_text, stamp_text = iso(mtime), iso(stamp)
        complete, has_meta, in_state, is_latest = c.complete, c.has_meta, c.in_state, c.is_latest
        append(_ROW % (
            text(c.name), text(c.prefix), "null" if step is None else repr(step), text(c.format), repr(c.size_bytes),
            "null" if shards is None else repr(shards),
            # _literal's, without a call per flag (four per row)
            "true" if complete is True else "false" if complete is False else _literal(complete),
            "true" if has_meta is True else "false" if has_meta is False else _literal(has_meta),
            "true" if in_state is True else "false" if in_state is False else _literal(in_state),
            "true" if is_latest is True else "false" if is_latest is False else _literal(is_latest),
            "null" if mtime_text is None else text(mtime_text), "null" if mtime is None else repr(mtime),
            "null" if stamp_text is None else text(stamp_text), "null" if stamp is None else repr(stamp)))
    return render.RawJSON("[" + ", ".join(parts) + "]", lambda: _checkpoint_rows(checkpoints, scores))


# A TF prefix's row as json.dumps writes it (its keys in _checkpoint_rows' order).
_ROW = ('{"name": %s, "prefix": %s, "step": %s, "format": %s, "size_bytes": %s, "num_shards": %s, "complete": %s, '
        '"has_meta": %s, "in_state": %s, "is_latest": %s, "mtime": %s, "mtime_epoch": %s, "timestamp": %s, '
        '"timestamp_epoch": %s}')


def _literal(flag: bool) -> str:
    return "true" if flag is True else "false" if flag is False else json_value(flag)


def json_value(value) -> str:
    import json

    return json.dumps(render.jsonable(value), ensure_ascii=False, allow_nan=False)


def _damage_problems(scores) -> tuple[Problem, ...]:
    """The damage met reading the scores, as problems (ls decides nothing by them: it only says so)."""
    return tuple(Problem("metric_damaged", d.path, f"damaged metric source {d.message}")
                 for d in (scores.damage if scores is not None else ()))


# At 80 columns and less the time takes its short form, then the lesser columns go.
_COLUMNS = [
    render.Column("name", kind=render.NAME), render.Column("step", right=True, drop=4),
    render.Column("time", shorten=render.short_time), render.Column("size", right=True),
    render.Column("shards", right=True, drop=2), render.Column("complete"), render.Column("in state", drop=3),
    render.Column("latest"), render.Column("meta", drop=1),
]


def _shown_name(c) -> str:
    """A directory member (SavedModel version, Orbax or HF step) with a slash: `3/`, `checkpoint-500/`."""
    return c.name + "/" if c.is_directory else c.name


_SCORED_COLUMNS = _COLUMNS[:4] + [render.Column("score", right=True)] + _COLUMNS[4:]


def _print_scan(scan: DirectoryScan, directory: str, show_directory: bool, checkpoints=None, scores=None) -> None:
    shown = scan.checkpoints if checkpoints is None else checkpoints
    rows = [
        (_shown_name(c), "-" if c.step is None else c.step, render.local_time(c.time),
         render.human_bytes(c.size_bytes),
         *([render.score_text(scores.score(c.name))] if scores is not None else []),
         c.num_shards or "-", render.yes_no(c.complete),
         render.yes_no(c.in_state) if c.format in TF_FORMATS else "-",
         "*" if c.is_latest else "", render.yes_no(c.has_meta) if c.format in TF_FORMATS else "-")
        for c in shown
    ]
    if scores is not None:
        render.print_wrapped([(f"{directory}: " if show_directory else "") + scores.describe()])
    if rows:
        render.print_table(_SCORED_COLUMNS if scores is not None else _COLUMNS, rows,
                           title=directory if show_directory else None)
    elif scan.checkpoints:
        render.print_lines([f"{directory}: no checkpoint passes the filters"])
    else:
        render.print_lines([f"{directory}: no checkpoints"])
    problems = _problems(scan)
    if problems:
        render.print_wrapped(["problems:"] + [f"  {p.kind}: {p.message}" for p in problems] + [""] * show_directory,
                             indent="  ")


_SUMMARY_COLUMNS = [render.Column("directory", kind=render.NAME), render.Column("checkpoints", right=True),
                    render.Column("size", right=True), render.Column("latest", kind=render.NAME)]


def _print_summary(scans: list[DirectoryScan], dirs: list[str]) -> None:
    """Per run directory and in total, as `huggingface-cli scan-cache` sums up a cache."""
    render.print_table(_SUMMARY_COLUMNS, [
        (d, len(s.checkpoints), render.human_bytes(checkpoints_bytes(s)), s.latest.name if s.latest else "-")
        for s, d in zip(scans, dirs)])
    total = sum(checkpoints_bytes(s) for s in scans)
    render.print_wrapped([f"{render.plural(len(dirs), 'run directory', 'run directories')}, "
                        f"{render.plural(sum(len(s.checkpoints) for s in scans), 'checkpoint')}, "
                        f"{render.human_bytes(total)} in total"])


@gc_paused()  # the rows of 100,000 checkpoints are as many objects again
def run(directory: str, *, recursive: bool = False, metric: str | None = None, mode: str = "auto",
        metrics_file: str | None = None, events: str | None = None, name_pattern: str | None = None,
        sort: str | None = None, filters: list[str] | None = None, summary: bool = False,
        keep_last: int | None = None, keep_every_hours: float | None = None, keep_every_steps: int | None = None,
        keep_step: list[int] | None = None, min_age: str | None = None, keep_best: int | None = None,
        drop_unscored: bool = False, json_out: bool = False, quiet: bool = False) -> int:
    scoring = metric_options(metric, mode, metrics_file, events, name_pattern)
    parsed, order = [], None
    if filters or sort is not None:  # (the selection module, and the scoring it needs, load only then)
        from ckpttool.ops.retention.selection import Filter, Sort, require_metric

        parsed = [Filter.parse(text) for text in filters or ()]
        order = Sort.parse(sort) if sort is not None else None
        if scoring is None:
            require_metric(parsed, order)
    # The rules (and the retention modules) only for --summary or a rule option, which needs it.
    rule_options = (keep_last, keep_every_hours, keep_every_steps, keep_step, min_age, keep_best, drop_unscored)
    rules = retention_rules(*rule_options) if summary or any(o is not None and o is not False for o in rule_options) \
        else None
    _require_summary(rules, summary, parsed, order, scoring)
    require_directory(directory, "ls")
    skipped = []  # keys of the tree never followed (`root/../other`): reported, not read
    dirs = find_checkpoint_dirs(directory, skipped) if recursive else [directory]
    render.warn_all(p.message for p in skipped)
    # One directory written to a pipe or file: looked at by two processes if it is big (the answer
    # is the same; a terminal's reader is in no such hurry).
    scans = ([scan_directory(directory, helper=not render.to_terminal())] if not recursive
             else for_each_directory(scan_directory, dirs))
    if summary:
        return _summary(directory, dirs, scans, scoring, rules, json_out, quiet)
    scores = [None] * len(scans)
    if scoring is not None:
        from ckpttool.ops.retention.scoring import score_checkpoints

        for i, (scan, d) in enumerate(zip(scans, dirs)):
            try:
                scores[i] = score_checkpoints(scan.directory, scan.checkpoints, scoring)
            except BadInput as exc:
                if not recursive:
                    raise
                render.warn(f"{d}: no scores: {exc.message}")  # one run's missing logs hide no other run
            render.warn_all(f"{d}: {w}" for w in (scores[i].warnings if scores[i] else ()))
            render.warn_all(f"{d}: {p.message}" for p in _damage_problems(scores[i]))
    if parsed or order is not None:
        from ckpttool.ops.retention.selection import select

        now = time.time()
        shown = [select(list(s.checkpoints), parsed, order, now, sc) for s, sc in zip(scans, scores)]
    else:
        shown = [s.checkpoints for s in scans]  # all, in the scan's order: what select gives without a filter
    if json_out:
        docs = [scan_document(s, d, c, sc) for s, d, c, sc in zip(scans, dirs, shown, scores)]
        if recursive:
            render.emit_json("ls", {
                "root": directory, "num_checkpoints": sum(len(s.checkpoints) for s in scans),
                "total_bytes": sum(checkpoints_bytes(s) for s in scans), "directories": docs})
        else:
            render.emit_json("ls", docs[0])
    elif quiet:
        render.print_lines(fs.join(d, c.name) if recursive else c.name for c_list, d in zip(shown, dirs)
                           for c in c_list)
    elif recursive and not dirs:
        render.print_lines([f"{directory}: no checkpoint directories"])
    else:
        for scan, d, c_list, sc in zip(scans, dirs, shown, scores):
            _print_scan(scan, d, recursive, c_list, sc)
        if recursive:
            _print_summary(scans, dirs)
        elif not scans[0].checkpoints:
            from ckpttool.ops.runs.hints import run_directories_below

            hint = run_directories_below(directory)
            if hint:
                render.hint(hint)
    return 0


def _require_summary(rules, summary: bool, filters, order, scoring) -> None:
    """The rule options only with --summary (they say what prune would free), which lists no checkpoint
    (so --filter and --sort have nothing to act on)."""
    from ckpttool.errors import UsageProblem

    if rules is not None and (rules.given or rules.drop_unscored):
        if not summary:
            raise UsageProblem("--keep-last, --keep-every-hours, --keep-every-steps, --keep-step, --min-age, "
                               "--keep-best and --drop-unscored need --summary (they say what prune would free)")
        if scoring is None and (rules.keep_best is not None or rules.drop_unscored):
            raise UsageProblem("--keep-best and --drop-unscored need --metric TAG")
        rules.validate()
    if summary and (filters or order):
        raise UsageProblem("--filter and --sort act on checkpoints; --summary lists run directories")


def _summary(directory: str, dirs: list[str], scans, scoring, rules, json_out: bool, quiet: bool) -> int:
    from ckpttool.cli import fleet
    from ckpttool.ops.retention.scoring import score_checkpoints
    from ckpttool.ops.retention.summary import summarize_run

    with_rules = rules.given

    def row(scan, d):
        scores = None
        if scoring is not None:
            try:
                scores = score_checkpoints(scan.directory, scan.checkpoints, scoring)
            except BadInput as exc:
                render.warn(f"{d}: no scores: {exc.message}")  # one run's missing logs hide no other run
        return summarize_run(d, scan, scores, rules if with_rules else None, scoring)

    by_directory = dict(zip(dirs, scans))
    rows = fleet.largest_first(for_each_directory(lambda d: row(by_directory[d], d), dirs))
    if json_out:
        render.emit_json("ls", {"root": directory,
                                "runs": [fleet.summary_row_document(r, scoring is not None, with_rules) for r in rows],
                                "totals": fleet.summary_totals(rows, with_rules)})
    elif quiet:
        render.print_lines(r.directory for r in rows)
    else:
        fleet.print_summary_table(rows, scoring is not None, with_rules)
    return 0
