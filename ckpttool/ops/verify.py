"""`verify`: read every tensor of a checkpoint and check every stored CRC,
shard presence and sizes, and index/data pairing. Reports all damage."""
from __future__ import annotations

import glob
import os
import re
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Iterator

from ckpttool.errors import BadInput, BadSlices, ChecksumMismatch, NotFound, Truncated
from ckpttool.formats.bundle import Bundle
from ckpttool.formats.shards import missing_shard_ids
from ckpttool.formats.reader import open_checkpoint
from ckpttool.formats.variables import Variable
from ckpttool.ops.targets import Target, resolve_target

_SHARD_RE = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
_LISTED_SHARDS = 20  # missing shards reported one by one; the rest in one line


def total_bytes(target_path: str) -> int:
    """Bytes `verify` will read (for a progress bar); 0 when unknown."""
    try:
        target = resolve_target(target_path)
        with open_checkpoint(target.prefix, target.format) as reader:
            return sum(v.size_bytes for v in reader.variables)
    except BadInput:
        return 0


@dataclass(frozen=True)
class VerifyError:
    name: str
    problem: str
    message: str


@dataclass(frozen=True)
class VerifyReport:
    target: Target
    checkpoint: str
    ok: bool
    checked_tensors: int
    checked_bytes: int
    errors: tuple[VerifyError, ...]


_KINDS = ((NotFound, "missing_shard"), (ChecksumMismatch, "checksum"), (Truncated, "truncated"),
          (BadSlices, "bad_slices"))


def _problem_kind(exc: BadInput) -> str:
    return next((kind for error_type, kind in _KINDS if isinstance(exc, error_type)), "corrupt")


def _shard_errors(bundle: Bundle) -> list[VerifyError]:
    """Missing, unexpected and mis-sized data files. Costs what the directory
    holds, never what the header claims (it may claim 2^31 shards)."""
    errors = []
    num_shards = bundle.header.num_shards
    present: dict[int, str] = {}
    for path in sorted(glob.glob(glob.escape(bundle.prefix) + ".data-*")):
        match = _SHARD_RE.search(path)
        if not match:
            continue
        if int(match[2]) == num_shards and int(match[1]) < num_shards:
            present[int(match[1])] = path
        else:
            errors.append(VerifyError(os.path.basename(path), "unexpected_shard",
                                      f"{os.path.basename(path)} does not belong to this index "
                                      f"({num_shards} shard(s) expected)"))
    missing, count = missing_shard_ids(num_shards, set(present), _LISTED_SHARDS)
    for shard_id in missing:
        name = os.path.basename(bundle.shard_path(shard_id))
        errors.append(VerifyError(name, "missing_shard", f"data shard {name} is missing"))
    if count > len(missing):
        errors.append(VerifyError(os.path.basename(bundle.prefix), "missing_shard",
                                  f"{count - len(missing)} more of the {num_shards} data shards the index "
                                  "names are missing"))
    ends = bundle.shard_ends()
    for shard_id, path in sorted(present.items()):
        name = os.path.basename(path)
        size = os.path.getsize(path)
        if size > ends.get(shard_id, 0):
            errors.append(VerifyError(name, "size_mismatch", f"{name} has {size - ends.get(shard_id, 0)} "
                                      "bytes that no tensor in the index accounts for"))
    return errors


def _checked_variables(reader) -> Iterator[tuple[Variable, int | BadInput]]:
    """(variable, bytes checked or the damage found), in order; a bundle reads in parallel."""
    if isinstance(reader, Bundle):
        yield from reader.check_variables(reader.variables)
        return
    for var in reader.variables:
        try:
            yield var, reader.check_variable(var)
        except BadInput as exc:
            yield var, exc


def verify_checkpoint(target_path: str, on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check everything; `on_progress(bytes)` is called as each variable is done."""
    target = resolve_target(target_path)
    errors: list[VerifyError] = []
    checked_tensors = checked_bytes = 0
    try:
        reader = open_checkpoint(target.prefix, target.format)
    except BadInput as exc:
        index = target.prefix + (".index" if target.format == "v2" else "")
        errors.append(VerifyError(os.path.basename(index), "corrupt_index", exc.message))
        return VerifyReport(target, target.prefix, False, 0, 0, tuple(errors))
    with reader:
        if isinstance(reader, Bundle):
            errors.extend(_shard_errors(reader))
        with closing(_checked_variables(reader)) as checks:  # its reading threads stop before the reader closes
            for var, outcome in checks:
                if isinstance(outcome, BadInput):
                    errors.append(VerifyError(var.name, _problem_kind(outcome), outcome.message))
                else:
                    checked_bytes += outcome
                    checked_tensors += 1
                if on_progress:
                    on_progress(var.size_bytes)
    return VerifyReport(target, target.prefix, not errors, checked_tensors, checked_bytes, tuple(errors))
