"""`verify`: read every tensor of a checkpoint and check every stored CRC,
shard presence and sizes, and index/data pairing. Reports all damage."""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Callable

from ckpttool.errors import BadInput, NotFound
from ckpttool.formats.bundle import Bundle
from ckpttool.formats.reader import open_checkpoint
from ckpttool.ops.targets import Target, resolve_target

_SHARD_RE = re.compile(r"\.data-(\d{5})-of-(\d{5})$")


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


def _problem_kind(exc: BadInput) -> str:
    if isinstance(exc, NotFound):
        return "missing_shard"
    text = exc.message
    if "checksum" in text:
        return "checksum"
    if "truncated" in text or "past the end" in text:
        return "truncated"
    return "corrupt"


def _shard_errors(bundle: Bundle) -> list[VerifyError]:
    """Missing, unexpected and mis-sized data files."""
    errors = []
    expected = set(bundle.data_files())
    for path in sorted(glob.glob(glob.escape(bundle.prefix) + ".data-*")):
        if path not in expected and _SHARD_RE.search(path):
            errors.append(VerifyError(os.path.basename(path), "unexpected_shard",
                                      f"{os.path.basename(path)} does not belong to this index "
                                      f"({bundle.header.num_shards} shard(s) expected)"))
    ends: dict[int, int] = {}
    for var in bundle.variables:
        for part in var.parts:
            ends[part.shard_id] = max(ends.get(part.shard_id, 0), part.offset + part.size)
    for shard_id, path in enumerate(bundle.data_files()):
        name = os.path.basename(path)
        if not os.path.isfile(path):
            errors.append(VerifyError(name, "missing_shard", f"data shard {name} is missing"))
            continue
        size = os.path.getsize(path)
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
