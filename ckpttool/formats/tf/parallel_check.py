"""verify's reading of a V2 bundle, shared among threads.

A large tensor in a local shard is checked in pieces: each piece is read and
checksummed by a worker thread (pread and google-crc32c let other threads run
meanwhile), and the pieces' CRCs are joined in order (crc32c.combine), so the
shards of a sharded checkpoint and the pieces of one big tensor are read at
once. Small tensors, strings and remote files are checked in the calling
thread, in between. Results come back in the variables' order, and are what
`Bundle.check_variable` gives for each, so a report never depends on timing.
"""
from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Union

from ckpttool.errors import BadInput
from ckpttool.formats.tf import crc32c as crc
from ckpttool.storage.fs import LocalInput
from ckpttool.formats.variables import StoredTensor, Variable

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor


class Bundle(Protocol):
    """What this module needs of formats/tf/bundle.Bundle (which calls it: this module imports
    nothing of bundle's, so the two are no import circle)."""

    on_bytes: Callable[[int], None] | None

    def check_variable(self, var: Variable) -> int: ...

    def open_parts(self, var: Variable) -> list[tuple[StoredTensor, object]]: ...

    def check_read(self, part: StoredTensor, crc32c: int, bytes_read: int) -> None: ...

PIECE_BYTES = 16 << 20  # one worker's share of a large tensor
THREADED_MIN_BYTES = 1 << 20  # smaller variables are checked by the calling thread
WORKERS = min(4, os.cpu_count() or 1)

Outcome = Union[int, BadInput]  # bytes checked, or the damage found
_Pieces = list[tuple[StoredTensor, list["Future"]]]


def _checked(bundle: Bundle, var: Variable) -> Outcome:
    try:
        return bundle.check_variable(var)
    except BadInput as exc:
        return exc


def _piece_crc(handle: LocalInput, offset: int, length: int) -> tuple[int, int]:
    """CRC-32C (unmasked) of bytes [offset, offset+length) and how many there were."""
    running = got = 0
    for chunk in handle.iter_range(offset, length):
        running = crc.extend(running, chunk)
        got += len(chunk)
    return running, got


def _start(bundle: Bundle, var: Variable, pool: "ThreadPoolExecutor") -> Outcome | _Pieces:
    """The outcome at once, or the pieces of `var` handed to the workers."""
    if not var.dtype.fixed_width or var.size_bytes < THREADED_MIN_BYTES or var.dtype.name == "bool":
        return _checked(bundle, var)  # a bool's bytes are checked too, not only their CRC
    try:
        opened = bundle.open_parts(var)
    except BadInput as exc:
        return exc
    if not all(isinstance(handle, LocalInput) for _part, handle in opened):
        return _checked(bundle, var)  # remote reads keep their own requests in flight
    return [(part, [pool.submit(_piece_crc, handle, offset, min(PIECE_BYTES, part.offset + part.size - offset))
                    for offset in range(part.offset, part.offset + part.size, PIECE_BYTES)])
            for part, handle in opened]


def _finish(bundle: Bundle, var: Variable, work: Outcome | _Pieces) -> Outcome:
    if not isinstance(work, list):
        return work
    try:
        for part, pieces in work:
            running = got = 0
            for future in pieces:
                piece_crc, piece_got = future.result()
                running = crc.combine(running, piece_crc, piece_got)
                got += piece_got
                if bundle.on_bytes:
                    bundle.on_bytes(piece_got)
            bundle.check_read(part, running, got)
    except BadInput as exc:
        return exc
    return sum(part.size for part, _pieces in work)


def _in_flight(work: Outcome | _Pieces) -> int:
    return sum(len(pieces) for _part, pieces in work) if isinstance(work, list) else 0


def check_in_parallel(bundle: Bundle, variables: list[Variable]) -> Iterator[tuple[Variable, Outcome]]:
    """(variable, outcome) for each of `variables`, in order."""
    if WORKERS < 2:
        for var in variables:
            yield var, _checked(bundle, var)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="ckpttool-check")
    pending: deque[tuple[Variable, Outcome | _Pieces]] = deque()
    in_flight = 0
    try:
        for var in variables:
            work = _start(bundle, var, pool)
            pending.append((var, work))
            in_flight += _in_flight(work)
            # Enough queued to keep every worker busy; no more (memory and
            # the order of results stay bounded by the oldest variable).
            while in_flight > 2 * WORKERS:
                done, work = pending.popleft()
                in_flight -= _in_flight(work)
                yield done, _finish(bundle, done, work)
        while pending:
            done, work = pending.popleft()
            yield done, _finish(bundle, done, work)
    finally:
        # Workers read through the bundle's open files: they stop before it can close them.
        pool.shutdown(wait=True, cancel_futures=True)
