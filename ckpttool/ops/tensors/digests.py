"""Content digests for manifests (ops/tensors/manifest.py): each tensor's and file's SHA-256 (the
strong check people sign) and CRC-32C (the quick one, at `verify`'s speed), streamed in bounded
chunks and spread over a few threads (hashlib, google-crc32c and pread let other threads run).

A tensor's SHA-256 covers its canonical encoding (docs/reference/manifest.md): a header naming the
dtype and shape, then the elements, C order, little-endian. Its CRC-32C covers the elements only
(dtype and shape are compared as fields), so a TF bundle's index already holds it: the CRC that
TensorFlow stores for a little-endian fixed-width tensor is the CRC-32C of the same bytes (masked).
The quick check of a bundle therefore runs `verify`'s own pass (every stored CRC checked against
the data, large tensors in pieces on two threads) and takes each tensor's CRC from its index entry
instead of reading it twice; only what is stored otherwise (strings, big-endian bundles, slices
that are not whole rows) is read again and checksummed."""
from __future__ import annotations

from collections import deque
from contextlib import closing
from typing import Callable, Iterable, Iterator, TypeVar, Union

from ckpttool.errors import BadInput, CorruptCheckpoint
from ckpttool.formats.tf import crc32c as crc
from ckpttool.formats.tf.bundle import Bundle
from ckpttool.formats.tf.parallel_check import PIECE_BYTES as CRC_PIECE_BYTES, WORKERS, range_crc
from ckpttool.formats.variables import Variable
from ckpttool.storage import fs

SHA256, CRC32C = "sha256", "crc32c"
TENSOR_ENCODING = "ckpttool-tensor-v1"
HASH_CHUNK_BYTES = 1 << 20  # google-crc32c and hashlib let other threads run from 1 MiB on
# hashlib (OpenSSL), the raw-bytes reader and the safetensors reader are imported where used: a
# quick check of a bundle by files or tensors needs none of them, and starts as fast as verify.

T = TypeVar("T")
Digests = tuple[str, ...]  # hex digests, one per kind asked for, in that order
Outcome = Union[Digests, BadInput]  # the digests, or why they could not be computed


class _Crc32c:
    """hashlib's interface over CRC-32C, so one loop feeds both."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = crc.extend(self.value, data)

    def hexdigest(self) -> str:
        return crc_hex(self.value)


def crc_hex(value: int) -> str:
    """A CRC-32C as a manifest writes it: 8 lowercase hex digits, most significant first."""
    return f"{value:08x}"


def tensor_header(dtype: str, shape: Iterable[int]) -> bytes:
    """The bytes that start a tensor's canonical encoding (its SHA-256 covers them, its CRC-32C not)."""
    return f"{TENSOR_ENCODING}\0{dtype}\0{','.join(str(int(d)) for d in shape)}\0".encode("ascii")


def _hashers(kinds: tuple[str, ...], var: Variable | None) -> list:
    """One hasher per kind; a tensor's SHA-256 starts with its header (`var`), a file's not (None)."""
    import hashlib

    hashers = []
    for kind in kinds:
        if kind == SHA256:
            hashers.append(hashlib.sha256(tensor_header(var.dtype.name, var.shape) if var else b""))
        else:
            hashers.append(_Crc32c())
    return hashers


def _element_bytes(item) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else bytes(item)


def tensor_digest(reader, var: Variable, kinds: tuple[str, ...] = (SHA256,)) -> Digests:
    """`var`'s digests of `kinds`, streamed over one read of its canonical bytes (a bundle's CRCs
    checked on the way)."""
    from ckpttool.formats.raw import iter_stored_bytes

    hashers = _hashers(kinds, var)
    if var.dtype.fixed_width:
        for chunk in iter_stored_bytes(reader, var, HASH_CHUNK_BYTES):
            for hasher in hashers:
                hasher.update(chunk)
        return tuple(h.hexdigest() for h in hashers)
    # Strings and variants: a stored slice order is not the logical order, so a partitioned one is read whole.
    chunks = [reader.read(var).reshape(-1)] if var.partitioned else reader.iter_value_chunks(var, HASH_CHUNK_BYTES)
    for chunk in chunks:
        for item in chunk:
            data = _element_bytes(item)
            framed = len(data).to_bytes(8, "little") + data  # one call per element and hasher
            for hasher in hashers:
                hasher.update(framed)
    return tuple(h.hexdigest() for h in hashers)


def ordered(jobs: Iterable[Callable[[], T]], parallel: bool) -> Iterator[T]:
    """Each job's result, in order; run by WORKERS threads when `parallel`, a bounded number in flight."""
    if not parallel or WORKERS < 2:
        for job in jobs:
            yield job()
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="ckpttool-hash")
    pending: deque = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(job))
            if len(pending) > 2 * WORKERS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # workers read through the caller's open files: they stop before it closes them
        pool.shutdown(wait=True, cancel_futures=True)


def caught(job: Callable[[], T]) -> Callable[[], Union[T, BadInput]]:
    """`job`, returning the BadInput it raises instead."""
    def run():
        try:
            return job()
        except BadInput as exc:
            return exc
    return run


def _shareable(reader) -> bool:
    """Whether threads may read `reader` at once: positional reads of local files only."""
    from ckpttool.formats.safetensors import SafetensorsReader

    return isinstance(reader, (Bundle, SafetensorsReader)) and not fs.is_url(reader.prefix)


def tensor_digests(reader, variables: list[Variable], on_progress: Callable[[int], None] | None = None,
                   kinds: tuple[str, ...] = (SHA256,)) -> Iterator[tuple[Variable, Outcome]]:
    """(variable, its digests of `kinds` or the damage met) for each of `variables`, in order,
    tensor by tensor in parallel where the reader allows it."""
    parallel = _shareable(reader)

    def job(var: Variable) -> Callable[[], Outcome]:
        if parallel and isinstance(reader, Bundle):
            try:  # open its shards now, in this thread (the bundle opens them lazily, unlocked)
                reader.open_parts(var)
            except BadInput as exc:
                return lambda failed=exc: failed
        return caught(lambda: tensor_digest(reader, var, kinds))

    for var, outcome in zip(variables, ordered((job(v) for v in variables), parallel)):
        if on_progress:
            on_progress(var.size_bytes)
        yield var, outcome


def _indexed_crc(bundle: Bundle, var: Variable) -> int | None:
    """The CRC-32C of `var`'s canonical bytes, from its index entry (or entries) when the stored
    bytes are those bytes: little-endian (or one byte wide), fixed width, one part or slices of
    whole rows (their CRCs joined in row order). None: read it. Only once the data was checked
    against these CRCs do they say anything about the data."""
    if not var.dtype.fixed_width or (bundle.header.big_endian and var.dtype.itemsize > 1):
        return None
    if not var.partitioned:
        return crc.unmask(var.parts[0].crc32c)
    from ckpttool.formats.raw import rows_in_order

    try:
        order = rows_in_order(var)
    except CorruptCheckpoint:
        return None
    if order is None:
        return None
    running = 0
    for i in order:
        running = crc.combine(running, crc.unmask(var.parts[i].crc32c), var.parts[i].size)
    return running


def quick_digests(reader, variables: list[Variable],
                  on_progress: Callable[[int], None] | None = None) -> Iterator[tuple[Variable, Outcome]]:
    """(variable, (its CRC-32C,) or the damage met) for each of `variables`, in order. A bundle
    is checked by verify's pass and its index's CRCs are taken (module docstring); other readers'
    tensors are read once and checksummed, several at a time where the reader allows it."""
    if not isinstance(reader, Bundle):
        yield from tensor_digests(reader, variables, on_progress, (CRC32C,))
        return
    with closing(reader.check_variables(variables)) as checks:  # its threads stop before the reader closes
        for var, checked in checks:
            if isinstance(checked, BadInput):
                outcome: Outcome = checked
            else:
                indexed = _indexed_crc(reader, var)
                outcome = (crc_hex(indexed),) if indexed is not None else \
                    caught(lambda: tensor_digest(reader, var, (CRC32C,)))()
            if on_progress:
                on_progress(var.size_bytes)
            yield var, outcome


# -- files ---------------------------------------------------------------------------------------

def range_digests(handle, offset: int, length: int, kinds: tuple[str, ...]) -> Digests:
    """Digests of `kinds` of bytes [offset, offset+length) of an open file (a CRC-32C unmasked)."""
    hashers = _hashers(kinds, None)
    got = 0
    for chunk in handle.iter_range(offset, length, HASH_CHUNK_BYTES):
        for hasher in hashers:
            hasher.update(chunk)
        got += len(chunk)
    if got != length:
        raise CorruptCheckpoint(f"{fs.basename(handle.path)} shrank while it was read")
    return tuple(h.hexdigest() for h in hashers)


def crc_pieces(handle, size: int) -> list[Callable[[], tuple[int, int]]]:
    """Jobs giving (CRC-32C, bytes read) of each piece of a file, as verify checks a large tensor:
    joined in order by `joined_crc`, the file's CRC-32C."""
    return [lambda at=at: range_crc(handle, at, min(CRC_PIECE_BYTES, size - at))
            for at in range(0, size, CRC_PIECE_BYTES)]


def joined_crc(handle, pieces: list[tuple[int, int]], size: int) -> str:
    """The file's CRC-32C (hex) from its pieces' (crc, length), in order."""
    running = got = 0
    for piece_crc, piece_got in pieces:
        running = crc.combine(running, piece_crc, piece_got)
        got += piece_got
    if got != size:
        raise CorruptCheckpoint(f"{fs.basename(handle.path)} shrank while it was read")
    return crc_hex(running)
