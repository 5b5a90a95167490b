"""Keras 3 weight files written after a template (`convert ... --like TEMPLATE`): the template's
HDF5 weights file is copied whole (its groups, attributes, dataset layouts and shapes are what
`model.load_weights()` expects), then each weight given is overwritten in place, streamed in
bands of whole rows. A `.keras` destination is the template's zip with every member kept (config,
metadata) but `model.weights.h5`, replaced by the file so written.

The caller writes into a temporary file (storage/atomic) and moves it into place.
"""
from __future__ import annotations

import shutil
import zipfile
from math import prod
from typing import BinaryIO, Callable, Iterable

import numpy as np

from ckpttool.errors import CorruptCheckpoint
from ckpttool.formats.keras.keras3 import (_H5_ERRORS, CHUNK_BYTES, WEIGHTS_MEMBER, ZIP_MAGICS, _extract_weights,
                                    _import_h5py)
from ckpttool.formats.zips import ZIP_ERRORS, check_zip_member, open_zip
from ckpttool.storage import fs


def template_is_zip(template: str) -> bool:
    return fs.read_range(template, 0, 4, "Keras template")[:4] in ZIP_MAGICS


def copy_template_weights(template: str, out: BinaryIO, scratch: str) -> None:
    """The template's HDF5 weights file (out of its zip for a .keras) copied into `out`."""
    if template_is_zip(template):
        source_path = _extract_weights(template, scratch)
        with open(source_path, "rb") as source:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
    else:
        with fs.open_input(template, "Keras template") as source:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
    out.flush()


def fill_weights(h5_path: str | BinaryIO,
                 items: Iterable[tuple[bytes, str, tuple[int, ...], Callable[[], Iterable[bytes]]]]) -> None:
    """Overwrite datasets of the HDF5 file at `h5_path` (a path, or a file open for reading and
    writing): (dataset path, storage dtype, shape, chunks of
    its little-endian C-order bytes). Each dataset keeps its type; its shape must be the one planned
    (the template may have changed since)."""
    h5py = _import_h5py()
    try:
        with h5py.File(h5_path, "r+", locking=False) as h5file:
            for path, storage, shape, chunks in items:
                _fill(h5file[path], path, np.dtype(storage).newbyteorder("<"), shape, chunks)
    except _H5_ERRORS as exc:
        raise CorruptCheckpoint(f"cannot write the Keras weights file ({str(exc)[:200]})") from None


def _fill(dataset, path: bytes, dtype: np.dtype, shape: tuple[int, ...], chunks) -> None:
    """One dataset, by bands of whole rows as the source's chunks arrive."""
    what = path.decode("utf-8", "replace")
    if tuple(dataset.shape) != tuple(shape):
        raise CorruptCheckpoint(f"the template's {what} is now {list(dataset.shape)}, not {list(shape)}")
    if not shape:
        dataset[()] = np.frombuffer(b"".join(chunks()), dtype=dtype).reshape(())
        return
    row_bytes = prod(shape[1:]) * dtype.itemsize
    pending, row = bytearray(), 0
    for chunk in chunks():
        pending += chunk
        rows = len(pending) // row_bytes if row_bytes else 0
        if rows:
            block = np.frombuffer(bytes(pending[: rows * row_bytes]), dtype=dtype)
            dataset[row:row + rows] = block.reshape((rows, *shape[1:]))
            del pending[: rows * row_bytes]
            row += rows
    if row_bytes and row != shape[0]:
        raise CorruptCheckpoint(f"{what}: the source held {row} of {shape[0]} rows")


def write_archive(template: str, weights_h5: str, out: BinaryIO) -> None:
    """The template .keras zip's members, in order and compression, with model.weights.h5 replaced."""
    archive = open_zip(template, "Keras archive")
    try:
        with zipfile.ZipFile(out, "w", allowZip64=True) as target:
            for info in archive.infolist():
                member = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                member.compress_type, member.external_attr = info.compress_type, info.external_attr
                if info.filename == WEIGHTS_MEMBER:
                    with open(weights_h5, "rb") as source, target.open(member, "w", force_zip64=True) as sink:
                        shutil.copyfileobj(source, sink, CHUNK_BYTES)
                    continue
                check_zip_member(info, template)
                with archive.open(info) as source, target.open(member, "w", force_zip64=True) as sink:
                    shutil.copyfileobj(source, sink, CHUNK_BYTES)
    except ZIP_ERRORS as exc:
        raise CorruptCheckpoint(f"{fs.basename(template)}: cannot copy its members ({str(exc)[:200]})") from None
    finally:
        fp = archive.fp
        archive.close()
        if fp is not None:
            fp.close()
