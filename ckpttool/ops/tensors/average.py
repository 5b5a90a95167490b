"""`average`: the element-wise mean of several checkpoints' weights, written as `convert` writes.

Every floating variable (float16, bfloat16, float32, float64) is averaged and written in its own
dtype (rounded to nearest even): float64 sources as numpy's float64 mean, bit for bit (overflow-free:
see _mean); float32, float16 and bfloat16 sources summed in float32, within the bound _mean32 states
(a third of float64's CPU, and what keeps `average` near the cost of reading its inputs); every other variable (integers such as
step counters, strings, booleans, the exotic floats) is taken from the newest checkpoint: the one
with the highest step when every source has one in its name, else the last given. The optimizer's
state is left out unless asked for. The sources must hold the same variables (those the rules keep)
with the same dtypes and shapes; the first that differs is named (BadInput, exit 3).

The sources are checkpoints (two arguments reaching one checkpoint, by whatever path or alias, are
refused: it would count twice), or one run directory with a selection: its last N checkpoints, the
given steps, or the best N by an eval metric, scored and ranked as prune --keep-best and latest
--best do (ops/scoring: event files, a metrics file, trainer_state.json; Keras `{epoch}` files by
the log epoch before; ties to the older; a damaged log refused unless allowed). Memory stays
bounded: one chunk of each source at a time, in lockstep.

The newest checkpoint is the base of the convert plan (names, rename rules, layout, dtype, object
graph come from it); apply_average hands convert's writers the mean instead of its bytes. With
`--names model` the sources are paired by their variables' paths through the model, not their keys
(the keys of one variable may differ between checkpoints written by different programs).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

from ckpttool.errors import BadInput, UsageProblem
from ckpttool.storage import fs

AVERAGED = ("bfloat16", "float16", "float32", "float64")
# per source, in lockstep (float32's; narrower dtypes as many elements): the chunks and their sum stay in
# the CPU's last-level cache (5 x 1 GiB float32: 512 KiB took 0.87x the user time of 256 KiB, fewer calls
# per byte, for 1.4 MB more)
CHUNK_BYTES = 512 << 10


@dataclass(frozen=True)
class Selected:
    prefix: str
    format: str
    step: int | None
    score: float | None = None


@dataclass(frozen=True)
class AveragePlan:
    convert: "ConvertPlan"  # noqa: F821  (ops.convert, imported lazily)
    sources: tuple[Selected, ...]  # oldest first; the last is the newest (the base)
    averaged: tuple[str, ...]  # source names whose mean is written
    taken: tuple[str, ...]  # source names written from the newest as they are
    selection: str  # how the sources were chosen: "given", "last 3", "steps 10,20", "best 3 by val_loss (min)"
    metric_source: str | None = None
    warnings: tuple[str, ...] = ()
    scores: "Scores | None" = None  # noqa: F821  (ops.scoring) with --best: what ranked the sources
    # --names model: per source (as `sources`), the newest's stored name -> this source's, where they
    # differ (the same model variable may be stored under another key in another checkpoint)
    keys: tuple[dict[str, str], ...] = ()


def _step(prefix: str) -> int | None:
    from ckpttool.ops.runs.scan import split_step

    return split_step(fs.basename(prefix))[1]


def _parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        steps = []
    if not steps:
        raise UsageProblem(f"--steps takes a comma-separated list of steps such as 1000,2000, got {text!r}")
    return steps


def select_sources(sources: list[str], *, last: int | None = None, steps: str | None = None,
                   best: int | None = None, metric: str | None = None, metrics_file: str | None = None,
                   mode: str = "auto", allow_damaged_metrics: bool = False
                   ) -> tuple[list[Selected], str, "Scores | None", tuple[str, ...]]:  # noqa: F821
    """(the checkpoints to average, oldest first; how they were chosen; the scores that ranked them,
    with --best; warnings)."""
    from ckpttool.ops.targets import resolve_target

    chosen = [o for o, v in (("--last", last), ("--steps", steps), ("--best", best)) if v is not None]
    if len(chosen) > 1:
        raise UsageProblem(f"{' and '.join(chosen)} cannot be combined: choose the checkpoints one way")
    if (metric is not None or metrics_file is not None or allow_damaged_metrics) and best is None:
        raise UsageProblem("--metric, --metrics and --allow-damaged-metrics apply with --best only")
    if not sources:
        raise UsageProblem("give the checkpoints to average, or a run directory with --last, --steps or --best")
    if not chosen:
        picked = []
        for source in sources:
            target = resolve_target(source)
            picked.append(Selected(target.prefix, target.format, _step(target.prefix)))
        refuse_duplicate_sources(sources, picked)
        if all(p.step is not None for p in picked):
            picked.sort(key=lambda p: p.step)  # the newest (highest step) last
        return picked, "given", None, ()
    if len(sources) != 1 or not fs.is_dir(sources[0]):
        raise UsageProblem(f"{chosen[0]} takes one run directory as SRC")
    from ckpttool.ops.runs.scan import scan_directory

    directory = sources[0]
    complete = [c for c in scan_directory(directory).checkpoints if c.complete and c.step is not None]
    if not complete:
        raise BadInput(f"no complete checkpoint with a step in {directory}")
    count = last if last is not None else best
    if count is not None and count < 1:
        raise UsageProblem(f"{chosen[0]} must be at least 1")
    ranking, warnings = None, ()
    if last is not None:
        picked_infos = complete[-last:]
        how = f"last {len(picked_infos)}"
        if len(picked_infos) < last:
            warnings = (f"--last {last}: {directory} holds {len(picked_infos)} complete checkpoints",)
        scores = {}
    elif steps is not None:
        wanted = _parse_steps(steps)
        by_step = {c.step: c for c in complete}
        missing = [s for s in wanted if s not in by_step]
        if missing:
            raise BadInput(f"no complete checkpoint at step {missing[0]} in {directory}",
                           hint=f"steps there: {', '.join(str(s) for s in sorted(by_step))}")
        picked_infos = sorted({by_step[s].step: by_step[s] for s in wanted}.values(), key=lambda c: c.step)
        how, scores = "steps " + ",".join(str(c.step) for c in picked_infos), {}
    else:
        picked_infos, ranking = _best_sources(directory, complete, best, metric, metrics_file, mode,
                                              allow_damaged_metrics)
        how = f"best {best} by {metric} ({ranking.mode})"
        warnings = ranking.warnings + tuple(f"damaged metric source {d.message}" for d in ranking.damage)
    scores = ranking.by_name if ranking is not None else {}
    picked = [Selected(c.prefix, c.format, c.step, scores.get(c.name)) for c in picked_infos]
    return picked, how, ranking, tuple(warnings)


def _best_sources(directory: str, complete: list, best: int, metric: str | None, metrics_file: str | None,
                  mode: str, allow_damaged: bool):
    """The `best` best of the complete checkpoints (oldest first) and the Scores that ranked them: the
    scores and ranking of prune --keep-best and latest --best (ops/scoring), never one of its own."""
    from ckpttool.ops.retention.scoring import MetricOptions, damage_refusal, score_checkpoints

    if metric is None:
        raise UsageProblem("--best takes --metric TAG (the eval metric that ranks the checkpoints)")
    options = MetricOptions(metric, mode, metrics_file, allow_damaged=allow_damaged)
    scores = score_checkpoints(directory, complete, options)
    refusal = damage_refusal(scores, options, "not choosing the checkpoints to average by these scores")
    if refusal is not None:
        raise refusal
    chosen = set(scores.best((c.name for c in complete), best))
    if len(chosen) < best:
        raise BadInput(f"--best {best}: only {len(chosen)} checkpoint(s) of {directory} have a {metric!r} "
                       f"score in {scores.source}")
    return [c for c in complete if c.name in chosen], scores


def _file_keys(selected: Selected) -> frozenset[tuple]:
    """Canonical names of the file that holds a checkpoint's entries (a bundle's index, else the file
    itself): storage's identity (symlinks resolved, file:// URLs, protocol aliases) and, locally, its
    inode even when it has several links (a hard-linked copy holds the same bytes: it counts as one)."""
    import os

    main = selected.prefix + ".index" if selected.format == "v2" else selected.prefix
    keys = set(fs.identity(main))
    if not fs.is_url(main):
        try:
            found = os.stat(main)
            keys.add(("inode", found.st_dev, found.st_ino))
        except OSError:
            pass  # a V1 shard pattern names no one file: its real path is compared
    return frozenset(keys)


def refuse_duplicate_sources(arguments: list[str], picked: list[Selected]) -> None:
    """UsageProblem naming both arguments when two of them reach one checkpoint, however (the same
    prefix, one of its files, its run directory, a symlink, a hard link, a file:// URL, a protocol
    alias): it would count twice in the mean."""
    seen: dict[tuple, int] = {}
    for index, selected in enumerate(picked):
        keys = _file_keys(selected)
        earlier = next((seen[key] for key in keys if key in seen), None)
        if earlier is not None:
            raise UsageProblem(f"{arguments[earlier]!r} and {arguments[index]!r} are the same checkpoint "
                               f"({picked[earlier].prefix}): each source counts once in the mean")
        seen.update(dict.fromkeys(keys, index))


def _averaged_variables(reader, naming: str, rules) -> dict:
    """Shown name -> Variable of what the rules' --drop, --keep and --drop-optimizer keep of a
    source: what the mean is taken of (`naming` "model": shown by their path through the model)."""
    from ckpttool.formats.variables import OBJECT_GRAPH_KEY
    from ckpttool.ops.tensors.model_names import reader_names
    from ckpttool.ops.tensors.rename_rules import RenameRules, compute_mapping

    shown = reader_names(reader, naming)
    variables = [v for v in reader.variables if not v.internal]
    graph = reader.object_graph_bytes() if reader.variable(OBJECT_GRAPH_KEY) is not None else None
    choosing = RenameRules(drop=rules.drop, keep=rules.keep, drop_optimizer=rules.drop_optimizer)
    kept = compute_mapping([v.name for v in variables], choosing, graph, shown).mapping
    return {shown[v.name]: v for v in variables if v.name in kept}


def _check_same(base_reader, base: Selected, reader, other: Selected, naming: str = "key",
                rules=None) -> dict[str, str]:
    """The first variable whose name, dtype or shape differs between the two sources: BadInput.
    Compared: what `rules` keep (the optimizer's state left out is not), by the names `naming`
    gives ("model": their path through the model); returns the base's stored name -> the other's,
    where they differ."""
    from ckpttool.ops.tensors.rename_rules import RenameRules

    def by_name(source) -> dict:
        return _averaged_variables(source, naming, rules or RenameRules())

    ours, theirs = by_name(base_reader), by_name(reader)
    for name in sorted(set(ours) | set(theirs)):
        if name not in theirs or name not in ours:
            having, lacking = (base, other) if name not in theirs else (other, base)
            raise BadInput(f"{name!r} is in {having.prefix} but not in {lacking.prefix}",
                           hint="average checkpoints of the same model"
                                + ("" if naming == "model" else "; --names model pairs TF2 variables by their "
                                                               "path through the model, not their keys"))
        a, b = ours[name], theirs[name]
        if a.dtype.name != b.dtype.name:
            raise BadInput(f"{name!r} is {a.dtype.name} in {base.prefix} but {b.dtype.name} in {other.prefix}")
        if a.shape != b.shape:
            raise BadInput(f"{name!r} has shape {list(a.shape)} in {base.prefix} but {list(b.shape)} in "
                           f"{other.prefix}")
    return {ours[name].name: theirs[name].name for name in ours if ours[name].name != theirs[name].name}


def plan_average(sources: list[str], destination: str, *, last: int | None = None, steps: str | None = None,
                 best: int | None = None, metric: str | None = None, metrics_file: str | None = None,
                 mode: str = "auto", allow_damaged_metrics: bool = False, keep_optimizer: bool = False,
                 **convert_options) -> AveragePlan:
    """What `average` would write; convert_options are plan_convert's (to, rules, layout, cast ...)."""
    import dataclasses

    from ckpttool.formats.reader import open_checkpoint
    from ckpttool.ops.tensors.convert import plan_convert
    from ckpttool.ops.tensors.rename_rules import RenameRules

    picked, how, ranking, warnings = select_sources(sources, last=last, steps=steps, best=best, metric=metric,
                                                    metrics_file=metrics_file, mode=mode,
                                                    allow_damaged_metrics=allow_damaged_metrics)
    base = picked[-1]
    rules = convert_options.pop("rules", None) or RenameRules()
    if not keep_optimizer:
        rules = dataclasses.replace(rules, drop_optimizer=True)
    plan = plan_convert(base.prefix, destination, rules=rules, **convert_options)
    keys = []
    with open_checkpoint(base.prefix, base.format) as base_reader:
        for other in picked[:-1]:
            with open_checkpoint(other.prefix, other.format) as reader:
                keys.append(_check_same(base_reader, base, reader, other, convert_options.get("naming", "key"),
                                        rules))
        dtypes = {v.name: v.dtype.name for v in base_reader.variables}
    from ckpttool.ops.destination import files_read, refuse_writing_over_source
    from ckpttool.ops.targets import resolve_target

    written = [plan.destination, *plan.files]
    if plan.to == "tf":
        written += [plan.destination + ".index", plan.destination + ".data-00000-of-00001"]
    for other in picked[:-1]:  # plan_convert protected the newest's files; the others' too
        with open_checkpoint(other.prefix, other.format) as reader:
            refuse_writing_over_source([*files_read(resolve_target(other.prefix)), *reader.data_files()], written,
                                       "average")
    # and a run directory's state file, which chose them (--last, --steps, --best): plan_convert was
    # given a prefix, not the directory
    from ckpttool.formats.tf.state import STATE_FILENAME

    refuse_writing_over_source([fs.join(s, STATE_FILENAME) for s in sources if fs.is_dir(s)],
                               written, "average")
    if len(picked) == 1:
        warnings += (f"only one checkpoint ({base.prefix}): the result is a copy of it"
                     + ("" if how != "given" else "; give a run directory with --last, --steps or --best to "
                                                  "average several"),)
    averaged = tuple(i.source for i in plan.items if dtypes[i.source] in AVERAGED)
    taken = tuple(i.source for i in plan.items if dtypes[i.source] not in AVERAGED)
    return AveragePlan(plan, tuple(picked), averaged, taken, how, ranking.source if ranking else None, warnings,
                       ranking, tuple(keys) + ({},))


def _pieces(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """`chunks` re-cut into pieces of exactly `size` bytes (the last may be shorter): sources read by
    different readers hand out different chunk sizes, and the mean needs the same elements of each."""
    pending = bytearray()
    for chunk in chunks:
        if not pending and len(chunk) == size:  # what a bundle hands out: no copy
            yield chunk
            continue
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


def _mean(np, values: list, out: "np.ndarray | None" = None) -> "np.ndarray":
    """The element-wise mean of equally long float arrays, in float64: their sum (each addition
    rounded, in the order given) divided by their count, as numpy's mean of the stacked values.

    Where that sum overflows (float64 sources near 1.8e308: two of 1.7e308 make inf) it is taken
    again over the values scaled by 2**-k, 2**k >= 2n: scaling by a power of two is exact, so the
    result is the very sum and quotient float64 would give with an unbounded exponent (barring
    values below 2**-1022 * 2**k, which shift under the scaling by less than 2**-1074 each). The
    error is that of the plain mean everywhere: at most (n-1) * 2**-53 * sum|x| / n for the sum plus
    half a unit in the last place for the division; for two sources the correctly rounded mean. A
    mean lies between its values: the result never overflows. `out`: a float64 array as long as the
    values to hold the mean (a reused buffer: no fresh memory per chunk)."""
    if out is None:
        total = values[0].astype(np.float64)
    else:
        total = out
        total[...] = values[0]
    with np.errstate(over="ignore", invalid="ignore"):  # inf and nan inputs give inf and nan, as numpy's mean
        for more in values[1:]:
            np.add(total, more, out=total)
        overflowed = np.flatnonzero(~np.isfinite(total)) if values[0].dtype == np.float64 else ()
        total /= len(values)
        if len(overflowed):
            scale = 2.0 ** -(len(values).bit_length() + 1)
            scaled = values[0][overflowed] * scale
            for more in values[1:]:
                scaled += more[overflowed] * scale
            total[overflowed] = scaled / len(values) / scale
    return total


def _mean32(np, values: list, out: "np.ndarray") -> "np.ndarray":
    """The element-wise mean of n >= 2 equally long float16, bfloat16 (decoded) or float32 arrays,
    in float32 (`out`, a reused float32 buffer as long as the values): their sum in the order given,
    each of the n-1 additions rounded to float32, divided by n and rounded once more.

    Error bound (u = 2**-24, float32's unit roundoff): the sum is within (n-1)u * sum|x_i| of the
    exact sum (an addition whose result is subnormal is exact), the division adds u of the quotient
    and, where the quotient is below float32's normal range (2**-126), up to 2**-150 (half the
    smallest subnormal: a correctly rounded float32 mean is off as much), so the result is within
    gamma_n * sum|x_i| / n + 2**-150 of the exact mean, gamma_n = n*u / (1 - n*u): n units of
    float32's roundoff of the mean of the magnitudes (the rounding to float16 or bfloat16 afterwards
    adds half a unit in the last place of that dtype). For two sources the result is the correctly
    rounded mean, as float64's (a sum of two floats rounded once, then halved: exactly, or, below
    2**-126, from an exact sum).
    Where a sum is not finite (float32 or bfloat16 values whose sum exceeds 3.4e38, or an inf or
    NaN among the values) those elements are taken again by _mean in float64: the mean then never
    overflows, and an inf or NaN comes out as numpy's mean gives it."""
    with np.errstate(over="ignore", invalid="ignore"):
        np.add(values[0], values[1], out=out, dtype=np.float32)  # dtype: float16 adds in float32 too
        for more in values[2:]:
            np.add(out, more, out=out, dtype=np.float32)
        out /= np.float32(len(values))
        # one reduction tells whether every mean is finite (an inf or NaN among them makes it not);
        # a reduction of finite means can still overflow: then they are looked at one by one
        if not np.isfinite(np.add.reduce(out)):
            bad = np.flatnonzero(~np.isfinite(out))
            if len(bad):
                out[bad] = _mean(np, [v[bad] for v in values])
    return out


def _mean_stream(readers: list, name: str, dtype: str, keys: tuple[dict[str, str], ...] = ()) -> Iterator[bytes]:
    """The mean of the variable the newest source stores as `name` (`keys`: each source's own name
    for it, where it differs), in chunks. The sum, the division and the cast back are done in place
    in buffers reused for every chunk, sized to stay in the CPU's cache: float64 sources by _mean,
    the others by _mean32 (a float32 mean is handed on as a view of its own buffer)."""
    import numpy as np

    from ckpttool.formats.raw import iter_stored_views
    from ckpttool.ops.tensors.casting import decode_floats, float32_to_bfloat16_finite, narrowed_finite, to_bfloat16

    itemsize = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}[dtype]
    elements = CHUNK_BYTES // max(itemsize, 4)  # narrower dtypes are summed (and decoded) 4 bytes wide
    size = elements * itemsize
    own = [k.get(name, name) for k in keys] if keys else [name] * len(readers)
    # each source's pieces are views of its own reused read buffer, used before the next is read
    streams = [_pieces(iter_stored_views(r, r.variable(key), size), size) for r, key in zip(readers, own)]
    wide = dtype == "float64"
    total = np.empty(elements, np.float64 if wide else np.float32)
    written = np.empty(elements, {"float16": "<f2", "bfloat16": "<u2"}[dtype]) if itemsize == 2 else None
    # bfloat16: each source decoded into a buffer of its own, the mean rounded in the last; float16:
    # the mean rounded on its bits in two
    works = [np.empty(elements, "<u4") for _ in range(len(readers) + 1)] if dtype == "bfloat16" else None
    halves = (np.empty(2 * elements, "<u4"), np.empty(elements, bool)) if dtype == "float16" else None
    for pieces in zip(*streams):
        count = len(pieces[0]) // itemsize
        values = [decode_floats(piece, dtype, works[i] if works else None) for i, piece in enumerate(pieces)]
        mean = _mean(np, values, total[:count]) if wide else _mean32(np, values, total[:count])
        if dtype == "bfloat16":  # rounded once from the float32 mean
            rounded = float32_to_bfloat16_finite(memoryview(mean).cast("B"), works[-1], written)
            yield rounded if rounded is not None else to_bfloat16(mean).tobytes()
            continue
        if written is not None:
            rounded = narrowed_finite(memoryview(mean).cast("B"), "float32", "float16", written, *halves)
            if rounded is not None:
                yield rounded
                continue
            np.copyto(written[:count], mean, casting="same_kind")  # to nearest even, as astype
            mean = written[:count]
        yield memoryview(mean).cast("B")  # a view: the writers are done with it before the next
    if any(next(s, None) is not None for s in streams):  # sizes were checked equal: a reader lied
        raise BadInput(f"the sources of {name!r} hold different amounts of data")


def apply_average(plan: AveragePlan, on_progress: Callable[[int], None] | None = None):
    """Write the mean as plan.convert says; returns convert's ConvertResult."""
    from ckpttool.formats.raw import iter_stored_bytes
    from ckpttool.formats.reader import open_checkpoint
    from ckpttool.ops.tensors.convert import apply_convert

    averaged = set(plan.averaged)
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(open_checkpoint(s.prefix, s.format)) for s in plan.sources]

        def stored(item) -> Iterator[bytes]:
            newest = readers[-1]
            var = newest.variable(item.source)
            if item.source in averaged and len(readers) > 1:
                return _mean_stream(readers, item.source, var.dtype.name, plan.keys)
            return iter_stored_bytes(newest, var)

        return apply_convert(plan.convert, on_progress, stored=stored)
