"""`verify`: read every tensor of a checkpoint and check every stored CRC,
shard presence and sizes, and index/data pairing. Reports all damage."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

from ckpttool.errors import BadInput, BadSlices, ChecksumMismatch, NotFound, Truncated
from ckpttool.formats import fs
from ckpttool.formats.bundle import Bundle
from ckpttool.formats.shards import missing_shard_ids
from ckpttool.formats.reader import open_checkpoint
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
    sizes: dict[str, int] = {}
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
        size = sizes[path]
        if size > ends.get(shard_id, 0):
            errors.append(VerifyError(name, "size_mismatch", f"{name} has {size - ends.get(shard_id, 0)} "
                                      "bytes that no tensor in the index accounts for"))
    return errors


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
        for var in reader.variables:
            try:
                checked_bytes += reader.check_variable(var)
                checked_tensors += 1
            except BadInput as exc:
                errors.append(VerifyError(var.name, _problem_kind(exc), exc.message))
            if on_progress:
                on_progress(var.size_bytes)
    return VerifyReport(target, target.prefix, not errors, checked_tensors, checked_bytes, tuple(errors))
