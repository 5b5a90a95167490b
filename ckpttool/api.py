"""The Python API: ckpttool as a library for scripts and notebooks, without TensorFlow.

    import ckpttool

    with ckpttool.open("run/") as ckpt:              # latest checkpoint of a run directory
        for var in ckpt.variables:                    # name, dtype, shape: from the index only
            print(var.name, var.dtype, var.shape)
        kernel = ckpt["dense/kernel"]                 # one tensor, read when asked (numpy)
        rows = ckpt.read("emb", index=np.s_[0:10])    # a bundle reads only those rows' bytes
    weights = ckpttool.load("model.safetensors")      # every tensor: {name: numpy array}
    ckpttool.latest("run/")                           # "run/model.ckpt-500", like tf.train.latest_checkpoint
    ckpttool.best("run/", "val_loss")                 # the best-scored checkpoint, as `latest --best` says
    plan = ckpttool.plan_prune("run/", keep_last=3)   # what would go; then ckpttool.apply_prune(plan)
    fleet = ckpttool.plan_policy("retention.toml")    # every run a policy governs; ckpttool.apply_prunes(...)
    ckpttool.convert("run/", "model.safetensors", drop_optimizer=True, naming="model")
    ckpttool.verify("run/").ok                        # every CRC checked (VerifyReport)
    m = ckpttool.manifest("run/")                     # every file's and tensor's SHA-256, CRC-32C (Manifest)
    ckpttool.verify("copy.safetensors", manifest=m).ok  # the same tensors? (ManifestCheck)
    ckpttool.diff("a/", "b/", naming="model").identical
    ckpttool.scan("run/").checkpoints                 # what `ls` lists (DirectoryScan)

Every TARGET form of the command line works (prefix, one of its files, run
directory, SavedModel, .safetensors, .npz, Keras 3 files, PyTorch files). Failures raise the
ckpttool.errors.CkptError subclasses (BadInput for missing or corrupt input,
Refused for safety refusals, UsageProblem for bad arguments).

`naming="model"` (open, load, convert, diff) is the command line's `--names model`: TF2
variables named by their path through the model rather than their checkpoint key
(ckpttool/ops/tensors/model_names.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from ckpttool.errors import Refused, UnknownVariable, UsageProblem

if TYPE_CHECKING:  # only for type checkers: importing numpy is left to the first read
    import numpy as np

    from ckpttool.ops.tensors.average import AveragePlan
    from ckpttool.ops.tensors.convert import ConvertResult
    from ckpttool.ops.tensors.diff import DiffReport
    from ckpttool.ops.tensors.manifest import Manifest, ManifestCheck
    from ckpttool.ops.retention.budget import BudgetOutcome
    from ckpttool.ops.retention.failed_runs import FailedRunsPlan, FailedRunsResult
    from ckpttool.ops.retention.policy import PolicyPlan
    from ckpttool.ops.retention.prune import PrunePlan, PruneResult
    from ckpttool.ops.runs.scan import DirectoryScan
    from ckpttool.ops.tensors.verify import DirectoryVerifyReport, VerifyReport

PathLike = str | os.PathLike


@dataclass(frozen=True)
class VariableInfo:
    """A variable as listed by the index: no value is read."""

    name: str  # the checkpoint key, or with naming="model" the name through the model
    dtype: str  # TensorFlow's name: "float32", "bfloat16", "string" ...
    shape: tuple[int, ...]
    num_elements: int
    size_bytes: int
    partitioned: bool
    key: str | None = None  # the name as stored (the checkpoint key)


class Checkpoint:
    """An open checkpoint or weights file. Lists variables at once; reads values only when asked.

    A mapping-like object: `len(ckpt)`, `name in ckpt`, `for name in ckpt`,
    `ckpt[name]` (same as `ckpt.read(name)`). Close it (or use `with`).
    `naming="model"`: variables named by their path through the model (TF2 checkpoints).
    A graph (a GraphDef `.pb`, a `.meta` alone; any TARGET's graph with `graph=True`) opens as its
    Const nodes, those with fewer than `min_elements` elements (default 2) left out.
    """

    def __init__(self, target: PathLike, *, naming: str = "key", graph: bool = False,
                 min_elements: int | None = None):
        from ckpttool.formats.reader import open_checkpoint
        from ckpttool.ops.tensors.model_names import check_naming, reader_names
        from ckpttool.ops.targets import resolve_target

        check_naming(naming)
        resolved = resolve_target(os.fspath(target), graph=graph, min_elements=min_elements)
        self.path: str = resolved.prefix  #: the prefix or file actually read
        self.format: str = resolved.format  #: "v2", "v1", "safetensors", "npz", "keras", "pytorch" or "graphdef"
        self._reader = open_checkpoint(resolved.prefix, resolved.format, resolved.min_elements)
        self._closed = False
        try:
            shown = reader_names(self._reader, naming)
        except BaseException:
            self._reader.close()
            raise
        self._keys = {shown[v.name]: v.name for v in self._reader.variables if not v.internal}
        self.variables: tuple[VariableInfo, ...] = tuple(
            VariableInfo(shown[v.name], v.dtype.name, v.shape, v.num_elements, v.size_bytes, v.partitioned, v.name)
            for v in self._reader.variables if not v.internal)

    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    def _variable(self, name: str):
        if self._closed:
            raise UsageProblem(f"{self.path} is closed; open it again to read {name!r}")
        key = self._keys.get(name)
        var = self._reader.variable(key) if key is not None else None
        if var is None or var.internal:
            raise UnknownVariable(f"no variable named {name!r} in {self.path}")
        return var

    def read(self, name: str, *, raw: bool = False, index=None) -> "np.ndarray":
        """The variable's value as a numpy array (partitioned variables assembled).

        Types numpy lacks are decoded exactly to a wider type (bfloat16 and
        float8 to float32, int4 to int8), as `inspect` shows them; `raw=True`
        gives the stored elements instead (bfloat16 as its uint16 bits).
        Strings come back as an object array of bytes.

        `index` (e.g. `np.s_[0:10]`, `np.s_[3, :5]`) gives `value[index]`: in a V2
        checkpoint, when its first item is an integer or a slice, only the bytes of
        the selected rows of the first axis are read (one ranged read per run of
        adjacent rows; in a bucket, ranged GETs). Other index forms, partitioned
        variables, strings and other formats read the whole tensor and index it
        (ckpttool/formats/partial.py). A partial read does not check the tensor's
        CRC, which covers the whole tensor: `verify` does.
        """
        from ckpttool.ops.tensors.values import check_value_shape

        var = self._variable(name)
        check_value_shape(var)
        if index is not None:
            from ckpttool.formats.partial import read_index

            return read_index(self._reader, var, index, raw=raw)
        if raw and var.dtype.fixed_width:
            from ckpttool.formats.raw import read_stored

            return read_stored(self._reader, var)
        return self._reader.read(var)

    def __getitem__(self, name: str) -> "np.ndarray":
        return self.read(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.variables)

    def close(self) -> None:
        self._closed = True
        self._reader.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ckpttool.Checkpoint {self.path!r} ({self.format}, {len(self.variables)} variables)>"


def open(target: PathLike, *, naming: str = "key", graph: bool = False,  # noqa: A001 - as zipfile/tarfile.open
         min_elements: int | None = None) -> Checkpoint:
    """Open a checkpoint, weights file or graph (its constants) for listing and lazy reading."""
    return Checkpoint(target, naming=naming, graph=graph, min_elements=min_elements)


def load(target: PathLike, names: Iterable[str] | None = None, *, raw: bool = False,
         naming: str = "key") -> dict[str, "np.ndarray"]:
    """Every variable (or those in `names`) as {name: numpy array}; see Checkpoint.read for `raw`."""
    with Checkpoint(target, naming=naming) as ckpt:
        return {name: ckpt.read(name, raw=raw) for name in (ckpt.names() if names is None else names)}


def latest(directory: PathLike) -> str | None:
    """The newest checkpoint prefix of `directory` as tf.train.latest_checkpoint returns it, or None.

    Unlike TensorFlow it still answers when the directory was moved or its
    state file is missing or broken (see the `latest` command)."""
    from ckpttool.ops.runs.latest import find_latest

    return find_latest(os.fspath(directory)).latest


def plan_prune(directory: PathLike, *, keep_last: int | None = None, keep_every_hours: float | None = None,
               keep_every_steps: int | None = None, keep_steps: Iterable[int] = (),
               min_age: float | str | None = None, clean: bool = False, keep_best: int | None = None,
               metric: str | None = None, mode: str = "auto", metrics_file: PathLike | None = None,
               events_dir: PathLike | None = None, name_pattern: str | None = None,
               drop_unscored: bool = False, allow_damaged_metrics: bool = False) -> "PrunePlan":
    """What `prune` would delete (nothing is touched). `min_age`: seconds, or text such as "7d".
    At least one rule is required. Carry the plan out with `apply_prune`.

    With `metric` (a TensorBoard tag, or a column of `metrics_file`, or a field of `name_pattern`),
    each family's best and its `keep_best` best are kept too, and so are checkpoints without a score
    unless `drop_unscored`; `plan.scores` and each entry's `score` say what was read. A log read
    around damage is listed in `plan.problems`, and `plan.refusal` says why `apply_prune` refuses the
    plan (BadInput) unless `allow_damaged_metrics`; so is an HF trainer_state.json read around damage
    when the plan deletes HF Trainer steps (its best_model_checkpoint may be among them)."""
    from ckpttool.ops.retention.prune import plan_prune as plan
    from ckpttool.ops.retention.rules import RetentionRules, parse_duration

    age = parse_duration(min_age) if isinstance(min_age, str) else min_age
    rules = RetentionRules(keep_last, keep_every_hours, keep_every_steps, tuple(keep_steps), age, keep_best,
                           drop_unscored)
    scoring = None if metric is None else _metric_options(metric, mode, metrics_file, events_dir, name_pattern,
                                                          allow_damaged_metrics)
    return plan(os.fspath(directory), rules, clean=clean, metric=scoring, allow_damaged=allow_damaged_metrics)


def _metric_options(metric: str, mode: str, metrics_file: PathLike | None, events_dir: PathLike | None,
                    name_pattern: str | None, allow_damaged: bool):
    from ckpttool.ops.retention.scoring import MetricOptions

    return MetricOptions(metric, mode, os.fspath(metrics_file) if metrics_file is not None else None,
                         os.fspath(events_dir) if events_dir is not None else None, name_pattern, allow_damaged)


def best(directory: PathLike, metric: str, *, mode: str = "auto", metrics_file: PathLike | None = None,
         events_dir: PathLike | None = None, name_pattern: str | None = None,
         allow_damaged_metrics: bool = False) -> str | None:
    """The complete checkpoint of `directory` with the best `metric` score, as `latest --best` names
    it (`directory/<name>`), or None when none has a score: scored and ranked as `plan_prune`'s
    keep_best and `average`'s best (ties to the older); one whose data shards are shorter than
    its index says (TensorFlow cannot restore it) is passed over. A log read around damage raises
    BadInput unless `allow_damaged_metrics`."""
    from ckpttool.ops.retention.scoring import find_best

    return find_best(os.fspath(directory), _metric_options(metric, mode, metrics_file, events_dir, name_pattern,
                                                           allow_damaged_metrics)).best


def apply_prune(plan: "PrunePlan") -> "PruneResult":
    """Delete what `plan` says, safely (locked, state file first, the latest always kept)."""
    from ckpttool.ops.retention.prune import apply_prune as apply

    return apply(plan)


def plan_policy(policy: PathLike) -> "PolicyPlan":
    """What `prune --policy FILE` would do (nothing is touched): `.planned` pairs each run directory
    the policy governs (`governed.directory`, `governed.rule`) with its PrunePlan by that rule;
    `.failed` pairs one that could not be planned (damage, a metric that cannot be read, scores read
    around damage) with its error, the others planned all the same. A bad file raises UsageProblem
    naming its line and key. Carry the plans out with `apply_prunes`: a result's `plan` is the one
    applied."""
    from ckpttool.ops.retention.policy import plan_policy as plan
    from ckpttool.ops.retention.policy_file import read_policy

    return plan(read_policy(os.fspath(policy)))


def apply_prunes(plans: Iterable["PrunePlan"], *, lock_timeout: float = 600.0) -> list["PruneResult | Exception"]:
    """`apply_prune` for many plans as `prune -r` applies them: several run directories at a time, a
    bucket's deletions batched across them (indexes first). One entry per plan, in order: its
    PruneResult, or the error that stopped that run directory alone (a lock held `lock_timeout`
    seconds is Refused, nothing done there). A plan changed since it was made (a deletion added)
    is applied as `apply_prune` applies one: scanned again under its lock, the latest kept."""
    from ckpttool.ops.retention.batches import apply_prunes as apply

    return apply(list(plans), lock_timeout=lock_timeout)


def fit_budget(plans: Iterable["PrunePlan"], budget: int | str) -> tuple[list["PrunePlan"], "BudgetOutcome"]:
    """`prune -r --budget`: the plans with further deletions, oldest first across their run
    directories, until their checkpoints fit in `budget` (bytes, or text such as "20TB"); never a
    run's latest, a series' newest, the best by the metric, a keep_step, or one younger than min_age.
    The outcome says the bytes before and after, and `missed_by` what is still over the budget."""
    from ckpttool.ops.retention.budget import fit_budget as fit
    from ckpttool.ops.retention.selection import parse_size

    given = list(plans)
    fitted, outcome = fit([(p.directory, p) for p in given],
                          int(parse_size(budget)) if isinstance(budget, str) else int(budget))
    return [p for _d, p in fitted], outcome


def plan_failed_runs(root: PathLike, age: float | str) -> "FailedRunsPlan":
    """`prune -r --drop-failed-runs AGE --dry-run`: the run directories under `root` older than `age`
    (seconds >= 0, or text such as "7d") holding only what a framework writes at start-up (`.dropped`),
    and those that looked failed but are kept, and why (`.kept`). Carry it out with
    `apply_failed_runs`."""
    from ckpttool.ops.retention.failed_runs import plan_failed_runs as plan
    from ckpttool.ops.retention.rules import parse_duration
    from ckpttool.ops.runs.scan import find_checkpoint_dirs

    directory = os.fspath(root)
    return plan(directory, find_checkpoint_dirs(directory), parse_duration(age) if isinstance(age, str) else age)


def apply_failed_runs(plan: "FailedRunsPlan") -> "FailedRunsResult":
    """Remove the failed runs of `plan`, each judged again under its lock; one found changed is left
    (`.problems`)."""
    from ckpttool.ops.retention.failed_runs import apply_failed_runs as apply

    return apply(plan)


def convert(source: PathLike, destination: PathLike, *, to: str | None = None,
            map: Mapping[str, str] | None = None, regex: Iterable[tuple[str, str]] = (),  # noqa: A002
            add_prefix: str | None = None, strip_prefix: str | None = None, ema: bool = False,
            drop: Iterable[str] = (), keep: Iterable[str] = (), drop_optimizer: bool = False,
            sep: str | None = None, strict: bool = False, shard_size: int | str | None = None,
            metadata: Mapping[str, str] | None = None, overwrite: bool = False,
            dry_run: bool = False, naming: str = "key", like: PathLike | None = None,
            partial: bool = False, layout: str | None = None, transpose: Mapping[str, Iterable[int]] | None = None,
            dtype: str | None = None, keep_dtype: Iterable[str] = (), names: str | None = None) -> "ConvertResult":
    """Convert weights as the `convert` command does; the result lists the files written.

    `to`: "tf", "safetensors" or "npz" (default: from the destination's
    extension). The rename arguments are those of rename-vars (`map` exact
    names, `regex` (pattern, replacement) pairs, ...). `shard_size`: bytes or
    text such as "5GB". With `dry_run` nothing is written (files_written = ()).
    `names="model"` (or `naming="model"`; `--names model`): names through the model first (a TF2
    source), then `layout`, then the rename arguments apply to those names; `dtype` casts last.
    `like`: a Keras 3 `.keras` / `.weights.h5` of the target model; the destination (NAME.weights.h5
    or NAME.keras) is then a Keras 3 file laid out as it (`partial`: its unmatched weights kept).
    `layout` ("torch" or "tf"), `transpose` ({regex: permutation}, winning over the layout), `dtype`
    ("bfloat16", "float16", "float32", "float64") and `keep_dtype` (regexes exempted from it) are
    `--layout`, `--transpose`, `--dtype` and `--keep-dtype`.
    """
    from ckpttool.ops.tensors.convert import ConvertResult, apply_convert, parse_size, plan_convert
    from ckpttool.ops.tensors.rename_rules import RenameRules

    rules = RenameRules(tuple((map or {}).items()), tuple(regex), add_prefix, strip_prefix, ema, tuple(drop),
                        tuple(keep), drop_optimizer, sep)
    size = parse_size(shard_size) if isinstance(shard_size, str) else shard_size
    try:
        plan = plan_convert(os.fspath(source), os.fspath(destination), to=to, rules=rules, strict=strict,
                            shard_size=size, metadata=dict(metadata or {}), overwrite=overwrite,
                            naming=_naming(naming, names),
                            like=os.fspath(like) if like is not None else None, partial=partial,
                            **_transforms(layout, transpose, dtype, keep_dtype))
        return ConvertResult(plan, (), 0) if dry_run else apply_convert(plan)
    except Refused as exc:
        raise _in_api_words(exc) from None


def _naming(naming: str, names: str | None) -> str:
    """`names=` (the command line's spelling, `--names`) or `naming=`; both given must agree."""
    if names is None:
        return naming
    if naming != "key" and naming != names:
        raise UsageProblem(f"names={names!r} and naming={naming!r} disagree: give one of them")
    return names


def _in_api_words(exc: "Refused") -> "Refused":
    """A refusal worded for the CLI (`use --overwrite`) names the keyword when raised here."""
    message = exc.message.replace("use --overwrite", "pass overwrite=True")
    return type(exc)(message, exc.hint) if message != exc.message else exc


def verify(target: PathLike, *, all_checkpoints: bool = False, recursive: bool = False,
           manifest: "PathLike | Manifest | None" = None, tensors: bool = False,
           ignore_names: bool = False, quick: bool = False) -> "VerifyReport | DirectoryVerifyReport | ManifestCheck":
    """Read every tensor of `target` and check every CRC, shard and size, as `verify` does; the
    report lists all damage (`report.ok`, `report.errors`). With `all_checkpoints` (or
    `recursive`), every checkpoint of the directory (and of every run directory under it):
    a DirectoryVerifyReport (`report.checkpoints`). Damage is reported, not raised.

    With `manifest` (a manifest file, or what `manifest()` returned), `target` is compared with it
    as `verify --manifest` does: a ManifestCheck (`report.ok`, `report.files`, `report.tensors`:
    each difference's name, change and message). `tensors`: compare tensors even when the files
    could be; `ignore_names`: a tensor found under another name is no difference; `quick`: compare
    the CRC-32Cs of a version-2 manifest instead of its SHA-256s (verify's speed; accidental damage
    only)."""
    from ckpttool.ops.runs.directories import require_directory
    from ckpttool.ops.tensors.verify import verify_checkpoint, verify_directory

    path = os.fspath(target)
    if manifest is not None:
        from ckpttool.ops.tensors.manifest import Manifest, check_manifest, read_manifest

        if all_checkpoints or recursive:
            raise UsageProblem("a manifest is checked against one checkpoint: not with all_checkpoints or recursive")
        source = "" if isinstance(manifest, Manifest) else os.fspath(manifest)
        loaded = manifest if isinstance(manifest, Manifest) else read_manifest(source)
        return check_manifest(path, loaded, source, tensors=tensors, ignore_names=ignore_names, quick=quick)
    if tensors or ignore_names or quick:
        raise UsageProblem("tensors, ignore_names and quick go with manifest")
    if all_checkpoints or recursive:
        require_directory(path, "verify")
        return verify_directory(path, recursive=recursive)
    return verify_checkpoint(path)


def manifest(target: PathLike) -> "Manifest":
    """Every file (relative path, size, SHA-256, CRC-32C) and every tensor (name, dtype, shape,
    content SHA-256 and CRC-32C, the same whatever the format) of `target`, as `ckpttool manifest` records them;
    `.document()` is the JSON document it writes. A damaged checkpoint raises BadInput."""
    from ckpttool.ops.tensors.manifest import build_manifest

    return build_manifest(os.fspath(target))


def diff(a: PathLike, b: PathLike, *, rtol: float = 0.0, atol: float = 0.0, filter: str | None = None,  # noqa: A002
         naming: str = "key") -> "DiffReport":
    """Added, removed, dtype/shape-changed and value-changed variables of two checkpoints or weights
    files, as `diff` does (`report.identical`, `report.differences`). `rtol`/`atol` apply to
    floating-point values (integers compare exactly); `filter`: a regular expression on names;
    `naming="model"` pairs variables by their path through the model, not their keys."""
    from ckpttool.ops.tensors.diff import diff_checkpoints

    return diff_checkpoints(os.fspath(a), os.fspath(b), rtol=rtol, atol=atol, pattern=filter, naming=naming)


def scan(directory: PathLike, *, recursive: bool = False) -> "DirectoryScan | list[DirectoryScan]":
    """What `ls` lists: every checkpoint of `directory` from the state file and the files on disk
    (`.checkpoints`, oldest first; `.latest`; `.leftovers`), and its problems, those of the state
    file included. `recursive`: a list, one scan per run directory under `directory`."""
    import dataclasses

    from ckpttool.ops.runs.directories import require_directory
    from ckpttool.ops.runs.scan import find_checkpoint_dirs, for_each_directory, scan_directory, state_file_problems

    path = os.fspath(directory)
    require_directory(path, "ls")

    def listed(run: str) -> "DirectoryScan":
        found = scan_directory(run)
        return dataclasses.replace(found, problems=found.problems + state_file_problems(found))

    if recursive:
        return for_each_directory(listed, find_checkpoint_dirs(path))
    return listed(path)


def _transforms(layout: str | None, transpose: Mapping[str, Iterable[int]] | None, dtype: str | None,
                keep_dtype: Iterable[str]) -> dict:
    """plan_convert's keyword arguments for the layout, transpose and dtype arguments."""
    from ckpttool.ops.tensors.casting import CastRule

    return {"layout": layout, "transposes": tuple((regex, tuple(perm)) for regex, perm in (transpose or {}).items()),
            "cast": CastRule(dtype, tuple(keep_dtype))}


def average(sources: PathLike | Iterable[PathLike], destination: PathLike, *, last: int | None = None,
            steps: Iterable[int] | None = None, best: int | None = None, metric: str | None = None,
            metrics_file: PathLike | None = None, mode: str = "auto", allow_damaged_metrics: bool = False,
            keep_optimizer: bool = False, to: str | None = None, shard_size: int | str | None = None,
            overwrite: bool = False, dry_run: bool = False, layout: str | None = None,
            transpose: Mapping[str, Iterable[int]] | None = None, dtype: str | None = None,
            keep_dtype: Iterable[str] = (), names: str = "key") -> "AveragePlan":
    """The element-wise mean of checkpoints, as the `average` command writes it: `sources` are
    checkpoints, or one run directory with `last`, `steps` or `best` (by `metric`, from its event
    files, `metrics_file` or trainer_state.json, ranked as `plan_prune`'s keep_best and `best` rank;
    a damaged log raises BadInput unless `allow_damaged_metrics`). Floating variables are averaged
    and written in their dtype (float64 ones as numpy's float64 mean, bit for bit; float32, float16
    and bfloat16 ones summed in float32 in the order given and divided by n: within
    gamma_n * mean(|x|) of the exact mean, gamma_n = n*2**-24 / (1 - n*2**-24), plus 2**-150 (half
    float32's smallest subnormal) where the mean is below 2**-126, plus half a unit in the last
    place of float16/bfloat16; sums beyond float32's range taken in float64), integers and strings taken from the newest, the optimizer
    left out unless `keep_optimizer`; written as `convert` writes (`to`, `shard_size`, `layout`,
    `dtype` ...). `names="model"` (`--names model`) pairs the sources' variables by their path through
    the model and writes them under it. Returns the plan (`plan.sources` with their scores,
    `plan.scores`, `plan.averaged`, `plan.taken`); with `dry_run` nothing is written."""
    from ckpttool.ops.tensors.average import apply_average, plan_average
    from ckpttool.ops.tensors.convert import parse_size

    paths = [os.fspath(sources)] if isinstance(sources, (str, os.PathLike)) else [os.fspath(s) for s in sources]
    try:
        plan = plan_average(paths, os.fspath(destination), last=last,
                            steps=",".join(str(s) for s in steps) if steps is not None else None, best=best,
                            metric=metric, metrics_file=os.fspath(metrics_file) if metrics_file is not None else None,
                            mode=mode, allow_damaged_metrics=allow_damaged_metrics,
                            keep_optimizer=keep_optimizer, to=to, overwrite=overwrite, naming=names,
                            shard_size=parse_size(shard_size) if isinstance(shard_size, str) else shard_size,
                            **_transforms(layout, transpose, dtype, keep_dtype))
        if not dry_run:
            apply_average(plan)
    except Refused as exc:
        raise _in_api_words(exc) from None
    return plan
