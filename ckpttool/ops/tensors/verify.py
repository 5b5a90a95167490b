"""`verify`: read every tensor of a checkpoint and check every stored CRC,
shard presence and sizes, and index/data pairing. Reports all damage, each
cause once: a missing or truncated data shard is one problem (naming the
tensors it held), not one per tensor. A data file of the same prefix that the
index does not name (a shard of an earlier save with another shard count,
which TensorFlow never reads) is a warning, not damage. `verify_directory` checks every checkpoint of a run
directory, or of every run directory under a root.

Series members (ops/runs/series.py) in `verify_directory`: a Keras checkpoint file is read whole by the
Keras reader (every dataset); a SavedModel version by its variables/ bundle (a graph-only one: its
graph is there, nothing more to read); an HF Trainer step by its safetensors weights when it has
them; an Orbax step by its PyTree items through TensorStore (formats/orbax: every chunk decoded,
chunk keys, manifest; a warning says what Orbax's store cannot show). An incomplete or foreign-holding directory member is reported as such."""
from __future__ import annotations

import os
import re
from contextlib import closing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterator

from ckpttool.errors import BadInput, BadSlices, ChecksumMismatch, NotFound, Truncated, UnsafeFile
from ckpttool.storage import fs
from ckpttool.formats.tf.bundle import Bundle
from ckpttool.formats.tf.shards import missing_shard_ids
from ckpttool.formats.variables import Variable
from ckpttool.ops.targets import Target, open_target, resolve_target

if TYPE_CHECKING:  # directory scans and series (ops/runs) are imported where a directory is verified:
    from ckpttool.ops.runs.scan import CheckpointInfo  # verifying one checkpoint starts without them

_SHARD_RE = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
_LISTED_SHARDS = 20  # missing shards reported one by one; the rest in one line
_NAMED_TENSORS = 5  # tensors of a missing shard named in its message; JSON lists them all


def total_bytes(target: str | Target) -> int:
    """Bytes `verify` will read (for a progress bar); 0 when unknown."""
    try:
        if isinstance(target, str):
            target = resolve_target(target)
        with open_target(_every_constant(target)) as reader:
            return sum(v.size_bytes for v in reader.variables)
    except BadInput:
        return 0


def _every_constant(target: Target) -> Target:
    """A graph is verified whole: every Const decodes to its declared shape, small ones too."""
    if target.format == "graphdef" and target.min_elements is None:
        return replace(target, min_elements=0)
    return target


@dataclass(frozen=True)
class VerifyError:
    name: str
    problem: str
    message: str
    tensors: tuple[str, ...] = ()  # a missing shard: the tensors stored in it (not checked)


@dataclass(frozen=True)
class VerifyReport:
    target: Target
    checkpoint: str
    ok: bool
    checked_tensors: int
    checked_bytes: int
    errors: tuple[VerifyError, ...]
    warnings: tuple[VerifyError, ...] = ()  # not damage: files beside the checkpoint that it does not use


@dataclass(frozen=True)
class DirectoryVerifyReport:
    directory: str  # as given
    checkpoints: tuple[VerifyReport, ...]  # oldest first, directory by directory

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.checkpoints)


_KINDS = ((NotFound, "missing_shard"), (ChecksumMismatch, "checksum"), (Truncated, "truncated"),
          (BadSlices, "bad_slices"))


def _problem_kind(exc: BadInput) -> str:
    return next((kind for error_type, kind in _KINDS if isinstance(exc, error_type)), "corrupt")


def _present_shards(bundle: Bundle) -> tuple[dict[int, str], dict[str, int], list[VerifyError]]:
    """The data files of the bundle's index by shard id, their sizes, and (warnings) the files that
    do not belong to it (one listing of the directory: a bucket's too). Costs what the directory holds,
    never what the header claims (it may claim 2^31 shards)."""
    num_shards = bundle.header.num_shards
    present: dict[int, str] = {}
    sizes: dict[str, int] = {}
    errors = []
    stem = fs.basename(bundle.prefix) + ".data-"
    for entry in sorted(fs.list_dir(fs.dirname(bundle.prefix)), key=lambda e: e.name):
        match = _SHARD_RE.search(entry.name)
        if not entry.name.startswith(stem) or not match or entry.kind == "dir":
            continue
        path = entry.path
        sizes[path] = os.path.getsize(path) if entry.kind == "link" else entry.size  # a link: its target's
        if int(match[2]) == num_shards and int(match[1]) < num_shards:
            present[int(match[1])] = path
        else:
            errors.append(VerifyError(os.path.basename(path), "unexpected_shard",
                                      f"{os.path.basename(path)} does not belong to this index "
                                      f"({num_shards} shard{'s' if num_shards != 1 else ''} expected; "
                                      "left by an earlier save?): not read, not damage"))
    return present, sizes, errors


def _missing_shard_errors(bundle: Bundle, present: dict[int, str],
                          unreadable: dict[int, list[str]]) -> list[VerifyError]:
    """One problem per missing data shard, naming the tensors stored in it (`unreadable`)."""
    errors = []
    num_shards = bundle.header.num_shards
    missing, count = missing_shard_ids(num_shards, set(present), _LISTED_SHARDS)
    for shard_id in missing:
        name = os.path.basename(bundle.shard_path(shard_id))
        held = unreadable.get(shard_id, [])
        message = f"data shard {name} is missing" + (f"; it holds {_tensors(held)}" if held else "")
        errors.append(VerifyError(name, "missing_shard", message, tuple(held)))
    if count > len(missing):
        errors.append(VerifyError(os.path.basename(bundle.prefix), "missing_shard",
                                  f"{count - len(missing)} more of the {num_shards} data shards the index "
                                  "names are missing"))
    return errors


def _tensors(names: list[str]) -> str:
    """'3 tensors (a, b, c)', the first few named."""
    shown = ", ".join(names[:_NAMED_TENSORS]) + (", ..." if len(names) > _NAMED_TENSORS else "")
    return f"{len(names)} tensor{'s' if len(names) != 1 else ''} ({shown})"


def _truncated_shards(bundle: Bundle, present: dict[int, str], sizes: dict[str, int]) -> dict[int, int]:
    """Shard id -> size of each present data shard shorter than the index says it is."""
    ends = bundle.shard_ends()
    return {shard_id: sizes[path] for shard_id, path in present.items() if sizes[path] < ends.get(shard_id, 0)}


def _truncated_shard_errors(bundle: Bundle, present: dict[int, str], truncated: dict[int, int],
                            cut: dict[int, list[str]]) -> list[VerifyError]:
    """One problem per truncated data shard, naming the tensors that lie past its end (`cut`)."""
    ends = bundle.shard_ends()
    errors = []
    for shard_id, size in sorted(truncated.items()):
        name = os.path.basename(present[shard_id])
        held = cut.get(shard_id, [])
        errors.append(VerifyError(name, "truncated", f"data shard {name} is truncated: it has {size} bytes, "
                                  f"the index needs {ends[shard_id]}; {_tensors(held)} lie past its end",
                                  tuple(held)))
    return errors


def _size_errors(bundle: Bundle, present: dict[int, str], sizes: dict[str, int]) -> list[VerifyError]:
    errors = []
    ends = bundle.shard_ends()
    for shard_id, path in sorted(present.items()):
        name = os.path.basename(path)
        size = sizes[path]
        if size > ends.get(shard_id, 0):
            errors.append(VerifyError(name, "size_mismatch", f"{name} has {size - ends.get(shard_id, 0)} "
                                      "bytes that no tensor in the index accounts for"))
    return errors


def _checked_variables(reader, variables: list[Variable]) -> Iterator[tuple[Variable, int | BadInput]]:
    """(variable, bytes checked or the damage found), in order; a bundle reads in parallel."""
    if isinstance(reader, Bundle):
        yield from reader.check_variables(variables)
        return
    for var in variables:
        try:
            yield var, reader.check_variable(var)
        except BadInput as exc:
            yield var, exc


def _bytes_as_read(reader, on_progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """`on_progress` fed as the reader reads (pieces of a large tensor, 8 MiB ranged GETs), not
    only as each variable is done: the per-variable calls then add only what was not yet counted,
    so the total stays the bytes to check."""
    if on_progress is None or not hasattr(reader, "on_bytes"):
        return on_progress
    read = due = 0

    def as_read(count: int) -> None:
        nonlocal read
        read += count
        on_progress(count)

    def variable_done(size: int) -> None:
        nonlocal read, due
        due += size
        if due > read:
            on_progress(due - read)
            read = due

    reader.on_bytes = as_read
    return variable_done


def _store_problems(reader) -> tuple[list[VerifyError], list[VerifyError]]:
    """What a reader checks of its store as a whole (an Orbax item's chunk keys and manifest), and
    (as a warning) what it cannot check."""
    if not hasattr(reader, "store_problems"):
        return [], []
    errors, warnings, not_checked = reader.store_problems()
    as_errors = [VerifyError(p.name, p.problem, p.message) for p in errors]
    return as_errors, [VerifyError(p.name, p.problem, p.message) for p in warnings] + [
        VerifyError(fs.basename(reader.prefix), "not_checked", not_checked)]


def verify_checkpoint(target: str | Target, on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check everything; `on_progress(bytes)` is called as each variable is done."""
    if isinstance(target, str):
        target = resolve_target(target)
    target = _every_constant(target)
    errors: list[VerifyError] = []
    warnings: list[VerifyError] = []
    checked_tensors = checked_bytes = 0
    try:
        reader = open_target(target)
    except BadInput as exc:  # reported as damage (exit 1), as every file that cannot be opened is
        index = target.prefix + (".index" if target.format == "v2" else "")
        kind = "refused" if isinstance(exc, UnsafeFile) else "corrupt_index"
        errors.append(VerifyError(os.path.basename(index), kind, exc.message))
        return VerifyReport(target, target.prefix, False, 0, 0, tuple(errors))
    with reader:
        on_progress = _bytes_as_read(reader, on_progress)
        present: dict[int, str] | None = None
        truncated: dict[int, int] = {}
        if isinstance(reader, Bundle):
            present, sizes, warnings = _present_shards(reader)
            truncated = _truncated_shards(reader, present, sizes)
        warnings += [VerifyError(fs.basename(target.prefix), "not_checked", note)
                     for note in getattr(reader, "not_checked", ())]  # what the format cannot check (PyTorch)
        unreadable: dict[int, list[str]] = {}  # missing shard -> tensors stored in it (one problem per shard)
        cut: dict[int, list[str]] = {}  # truncated shard -> tensors past its end (one problem per shard)
        checkable = []
        for var in reader.variables:
            gone = sorted({p.shard_id for p in var.parts if present is not None and p.shard_id not in present})
            short = sorted({p.shard_id for p in var.parts  # an empty tensor reads wherever it claims to be
                            if p.shard_id in truncated and p.size and p.offset + p.size > truncated[p.shard_id]})
            if gone or short:
                (unreadable if gone else cut).setdefault((gone or short)[0], []).append(var.name)
                if on_progress:
                    on_progress(var.size_bytes)
            else:
                checkable.append(var)
        tensor_errors = []
        with closing(_checked_variables(reader, checkable)) as checks:  # its threads stop before the reader closes
            for var, outcome in checks:
                if isinstance(outcome, BadInput):
                    tensor_errors.append(VerifyError(var.name, _problem_kind(outcome), outcome.message))
                else:
                    checked_bytes += outcome
                    checked_tensors += 1
                if on_progress:
                    on_progress(var.size_bytes)
        errors_of_store, warnings_of_store = _store_problems(reader)
        errors += errors_of_store
        warnings += warnings_of_store
        if present is not None:
            errors += (_missing_shard_errors(reader, present, unreadable)
                       + _truncated_shard_errors(reader, present, truncated, cut) + _size_errors(reader, present, sizes))
    errors += tensor_errors
    return VerifyReport(target, target.prefix, not errors, checked_tensors, checked_bytes, tuple(errors),
                        tuple(warnings))


def verify_directory(directory: str, *, recursive: bool = False,
                     on_progress: Callable[[int], None] | None = None) -> DirectoryVerifyReport:
    """Every checkpoint of `directory` (and, `recursive`, of every run directory under it),
    oldest first; an incomplete one is verified too (and reported damaged)."""
    from ckpttool.ops.runs.scan import find_checkpoint_dirs, scan_directory

    reports = []
    for run in find_checkpoint_dirs(directory) if recursive else [directory]:
        for checkpoint in scan_directory(run).checkpoints:
            reports.append(verify_member(checkpoint, fs.join(run, checkpoint.name), on_progress))
    if not reports:
        raise NotFound(f"no checkpoint in {'any directory under ' if recursive else 'directory '}{directory}")
    return DirectoryVerifyReport(directory, tuple(reports))


def verify_member(checkpoint: "CheckpointInfo", path: str,
                  on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    """One checkpoint a directory scan found (`path`: as named from the directory given): a TF
    prefix, or a series member (Keras file, SavedModel version, Orbax or HF step)."""
    from ckpttool.ops.runs.scan import TF_FORMATS

    if checkpoint.format not in TF_FORMATS:
        return _verify_series_member(checkpoint, path, on_progress)
    if checkpoint.format == "v2" and not fs.is_file(path + ".index"):
        return _without_index(path, checkpoint.name)
    return verify_checkpoint(resolve_target(path), on_progress)


_HF_WEIGHTS = ("model.safetensors.index.json", "model.safetensors", "adapter_model.safetensors")


def _verify_series_member(member: "CheckpointInfo", path: str,
                          on_progress: Callable[[int], None] | None) -> VerifyReport:
    """A Keras file, SavedModel version, Orbax or HF step (`path`: as named from the directory given)."""
    from ckpttool.formats.orbax.tree import is_orbax_dir
    from ckpttool.ops.runs import series

    if member.format == "keras":
        target = Target(path, "keras", None, None)
    elif member.format == "savedmodel" and fs.is_file(fs.join(path, "variables", "variables.index")):
        target = Target(fs.join(path, "variables", "variables"), "v2", fs.join(path, "saved_model.pb"), path)
    elif member.format == "orbax" and member.complete and is_orbax_dir(path):
        target = Target(path, "orbax", None, path)
    elif member.format == "hf" and (weights := next((fs.join(path, w) for w in _HF_WEIGHTS
                                                     if fs.is_file(fs.join(path, w))), None)):
        target = Target(weights, "safetensors", None, path)
    else:
        target = None
    if target is None:
        report = VerifyReport(Target(path, member.format, None, None), path, True, 0, 0, ())
    elif member.format == "keras" and fs.is_url(path):
        report = _verify_fetched(target, on_progress)
    else:
        report = verify_checkpoint(target, on_progress)
    errors, warnings = list(report.errors), list(report.warnings)
    if not member.complete:
        label = member.name + ("/" if member.is_directory else "")
        errors.append(VerifyError(member.name, "incomplete", f"{label} is not a complete "
                                  f"{series.KIND_NAMES[member.format]} (it needs {series.COMPLETE_WHEN[member.format]})"))
    if member.unexpected:
        warnings.append(VerifyError(member.name, "foreign_files", f"{member.name}/ holds "
                                    f"{', '.join(member.unexpected[:5])}, which its framework does not write"))
    if target is None and member.complete:
        what = {"orbax": "an Orbax step without a PyTree item: listed, nothing to verify",
                "savedmodel": "a SavedModel without variables: its graph is there, no tensor to check",
                "hf": "an HF Trainer step without safetensors weights: listed, not verified"}[member.format]
        warnings.append(VerifyError(member.name, "not_verified", f"{member.name}/ is {what}"))
    return replace(report, checkpoint=path, ok=not errors, errors=tuple(errors), warnings=tuple(warnings))


def _verify_fetched(target: Target, on_progress: Callable[[int], None] | None) -> VerifyReport:
    """A Keras file in a bucket, read from a local copy (HDF5 is read through a local file)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ckpttool-verify-") as staging:
        local = os.path.join(staging, "checkpoint" + (".keras" if target.prefix.endswith(".keras") else ".h5"))
        fs.download(target.prefix, local)
        return verify_checkpoint(replace(target, prefix=local), on_progress)


def directory_bytes(directory: str, recursive: bool) -> int:
    """Bytes of every checkpoint `verify_directory` will read (for a progress bar)."""
    from ckpttool.ops.runs.scan import find_checkpoint_dirs, scan_directory

    try:
        runs = find_checkpoint_dirs(directory) if recursive else [directory]
        return sum(c.size_bytes for run in runs for c in scan_directory(run).checkpoints)
    except BadInput:
        return 0


def _without_index(prefix: str, name: str) -> VerifyReport:
    error = VerifyError(name + ".index", "missing_index",
                        f"{name} has data files but no .index (an interrupted save?): nothing can be read")
    return VerifyReport(Target(prefix, "v2", None, None), prefix, False, 0, 0, (error,))
