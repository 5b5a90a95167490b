"""The Python API: ckpttool as a library for scripts and notebooks, without TensorFlow.

    import ckpttool

    with ckpttool.open("run/") as ckpt:              # latest checkpoint of a run directory
        for var in ckpt.variables:                    # name, dtype, shape: from the index only
            print(var.name, var.dtype, var.shape)
        kernel = ckpt["dense/kernel"]                 # one tensor, read when asked (numpy)
    weights = ckpttool.load("model.safetensors")      # every tensor: {name: numpy array}
    ckpttool.latest("run/")                           # "run/model.ckpt-500", like tf.train.latest_checkpoint
    plan = ckpttool.plan_prune("run/", keep_last=3)   # what would go; then ckpttool.apply_prune(plan)
    ckpttool.convert("run/", "model.safetensors", drop_optimizer=True)

Every TARGET form of the command line works (prefix, one of its files, run
directory, SavedModel, .safetensors, .npz, Keras 3 files). Failures raise the
ckpttool.errors.CkptError subclasses (BadInput for missing or corrupt input,
Refused for safety refusals, UsageProblem for bad arguments).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from ckpttool.errors import UnknownVariable, UsageProblem

if TYPE_CHECKING:  # only for type checkers: importing numpy is left to the first read
    import numpy as np

    from ckpttool.ops.convert import ConvertResult
    from ckpttool.ops.prune import PrunePlan, PruneResult

PathLike = str | os.PathLike


@dataclass(frozen=True)
class VariableInfo:
    """A variable as listed by the index: no value is read."""

    name: str
    dtype: str  # TensorFlow's name: "float32", "bfloat16", "string" ...
    shape: tuple[int, ...]
    num_elements: int
    size_bytes: int
    partitioned: bool


class Checkpoint:
    """An open checkpoint or weights file. Lists variables at once; reads values only when asked.

    A mapping-like object: `len(ckpt)`, `name in ckpt`, `for name in ckpt`,
    `ckpt[name]` (same as `ckpt.read(name)`). Close it (or use `with`).
    """

    def __init__(self, target: PathLike):
        from ckpttool.formats.reader import open_checkpoint
        from ckpttool.ops.targets import resolve_target

        resolved = resolve_target(os.fspath(target))
        self.path: str = resolved.prefix  #: the prefix or file actually read
        self.format: str = resolved.format  #: "v2", "v1", "safetensors", "npz" or "keras"
        self._reader = open_checkpoint(resolved.prefix, resolved.format)
        self._closed = False
        self.variables: tuple[VariableInfo, ...] = tuple(
            VariableInfo(v.name, v.dtype.name, v.shape, v.num_elements, v.size_bytes, v.partitioned)
            for v in self._reader.variables if not v.internal)

    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    def _variable(self, name: str):
        if self._closed:
            raise UsageProblem(f"{self.path} is closed; open it again to read {name!r}")
        var = self._reader.variable(name)
        if var is None or var.internal:
            raise UnknownVariable(f"no variable named {name!r} in {self.path}")
        return var

    def read(self, name: str, *, raw: bool = False) -> "np.ndarray":
        """The variable's value as a numpy array (partitioned variables assembled).

        Types numpy lacks are decoded exactly to a wider type (bfloat16 and
        float8 to float32, int4 to int8), as `inspect` shows them; `raw=True`
        gives the stored elements instead (bfloat16 as its uint16 bits).
        Strings come back as an object array of bytes.
        """
        from ckpttool.ops.values import check_value_shape

        var = self._variable(name)
        check_value_shape(var)
        if raw and var.dtype.fixed_width:
            from ckpttool.formats.raw import read_stored

            return read_stored(self._reader, var)
        return self._reader.read(var)

    def __getitem__(self, name: str) -> "np.ndarray":
        return self.read(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(v.name == name for v in self.variables)

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


def open(target: PathLike) -> Checkpoint:  # noqa: A001 - the natural name, as in zipfile/tarfile.open
    """Open a checkpoint or weights file for listing and lazy reading."""
    return Checkpoint(target)


def load(target: PathLike, names: Iterable[str] | None = None, *, raw: bool = False) -> dict[str, "np.ndarray"]:
    """Every variable (or those in `names`) as {name: numpy array}; see Checkpoint.read for `raw`."""
    with Checkpoint(target) as ckpt:
        return {name: ckpt.read(name, raw=raw) for name in (ckpt.names() if names is None else names)}


def latest(directory: PathLike) -> str | None:
    """The newest checkpoint prefix of `directory` as tf.train.latest_checkpoint returns it, or None.

    Unlike TensorFlow it still answers when the directory was moved or its
    state file is missing or broken (see the `latest` command)."""
    from ckpttool.ops.latest import find_latest

    return find_latest(os.fspath(directory)).latest


def plan_prune(directory: PathLike, *, keep_last: int | None = None, keep_every_hours: float | None = None,
               keep_every_steps: int | None = None, keep_steps: Iterable[int] = (),
               min_age: float | str | None = None, clean: bool = False) -> "PrunePlan":
    """What `prune` would delete (nothing is touched). `min_age`: seconds, or text such as "7d".
    At least one rule is required. Carry the plan out with `apply_prune`."""
    from ckpttool.ops.prune import plan_prune as plan
    from ckpttool.ops.retention import RetentionRules, parse_duration

    age = parse_duration(min_age) if isinstance(min_age, str) else min_age
    rules = RetentionRules(keep_last, keep_every_hours, keep_every_steps, tuple(keep_steps), age)
    return plan(os.fspath(directory), rules, clean=clean)


def apply_prune(plan: "PrunePlan") -> "PruneResult":
    """Delete what `plan` says, safely (locked, state file first, the latest always kept)."""
    from ckpttool.ops.prune import apply_prune as apply

    return apply(plan)


def convert(source: PathLike, destination: PathLike, *, to: str | None = None,
            map: Mapping[str, str] | None = None, regex: Iterable[tuple[str, str]] = (),  # noqa: A002
            add_prefix: str | None = None, strip_prefix: str | None = None, ema: bool = False,
            drop: Iterable[str] = (), keep: Iterable[str] = (), drop_optimizer: bool = False,
            sep: str | None = None, strict: bool = False, shard_size: int | str | None = None,
            metadata: Mapping[str, str] | None = None, overwrite: bool = False,
            dry_run: bool = False, like: PathLike | None = None, partial: bool = False) -> "ConvertResult":
    """Convert weights as the `convert` command does; the result lists the files written.

    `to`: "tf", "safetensors" or "npz" (default: from the destination's
    extension). The rename arguments are those of rename-vars (`map` exact
    names, `regex` (pattern, replacement) pairs, ...). `shard_size`: bytes or
    text such as "5GB". With `dry_run` nothing is written (files_written = ()).
    `like`: a Keras 3 `.keras` / `.weights.h5` of the target model; the destination (NAME.weights.h5
    or NAME.keras) is then a Keras 3 file laid out as it (`partial`: its unmatched weights kept).
    """
    from ckpttool.ops.convert import ConvertResult, apply_convert, parse_size, plan_convert
    from ckpttool.ops.rename_rules import RenameRules

    rules = RenameRules(tuple((map or {}).items()), tuple(regex), add_prefix, strip_prefix, ema, tuple(drop),
                        tuple(keep), drop_optimizer, sep)
    size = parse_size(shard_size) if isinstance(shard_size, str) else shard_size
    plan = plan_convert(os.fspath(source), os.fspath(destination), to=to, rules=rules, strict=strict,
                        shard_size=size, metadata=dict(metadata or {}), overwrite=overwrite,
                        like=os.fspath(like) if like is not None else None, partial=partial)
    return ConvertResult(plan, (), 0) if dry_run else apply_convert(plan)
