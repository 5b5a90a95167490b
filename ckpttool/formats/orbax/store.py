"""The arrays of an Orbax item, through TensorStore (the `ckpttool[orbax]` extra, imported here
only): opening each array (OCDBT or plain zarr directories, zarr v2 or v3), its TensorFlow dtype,
and reading it in bands of whole stored chunks.

Every read of an item written by Orbax 0.5 or later (whose metadata says every chunk was stored,
even one equal to the fill value) is made with `fill_missing_data_reads` off: a chunk that is not
in the store is an error, never the fill value (Orbax reads so too). A band is a run of rows of the first axis
holding whole stored chunks, so each compressed chunk is decoded once; memory is about one row of
chunks (an unsharded array saved by one device is one chunk: all of it).
"""
from __future__ import annotations

import os
from math import prod
from typing import TYPE_CHECKING, Iterator

from ckpttool.errors import CorruptCheckpoint, Unsupported
from ckpttool.formats.dtypes import DType, dtype_from_name
from ckpttool.formats.zips import ZIP_MAX_RATIO as BOMB_RATIO, ZIP_RATIO_FLOOR as BOMB_FLOOR
from ckpttool.text import excerpt

if TYPE_CHECKING:
    import numpy as np

    from ckpttool.formats.orbax.tree import Item

# TensorStore's dtype names that are not TensorFlow's.
_TS_NAMES = {"bool": "bool", "char": "int8", "byte": "uint8"}
_TS_CONTEXT = {"cache_pool": {"total_bytes_limit": 0}, "cache_pool#ocdbt": {"total_bytes_limit": 64 << 20},
               "data_copy_concurrency": {"limit": max(1, min(8, os.cpu_count() or 1))}}


def import_tensorstore():
    try:
        import tensorstore
    except ImportError:
        raise Unsupported("reading Orbax checkpoints needs tensorstore, which is not installed",
                          hint="pip install 'ckpttool[orbax]'  (or: pip install tensorstore; no JAX needed)") from None
    return tensorstore


def store_error(what: str, exc: BaseException) -> CorruptCheckpoint:
    """TensorStore's error as one line (its messages carry source locations after the first)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = first.split(" [tensorstore_spec=")[0]  # the spec it was opened with: our own, not news
    return CorruptCheckpoint(f"{what}: {excerpt(first, 300)}")


def kvstore_spec(item: "Item", param: str | None = None) -> dict:
    """The key-value store an item's arrays live in (an OCDBT database, or plain files)."""
    base = {"driver": "file", "path": os.path.abspath(item.path) + "/"}
    if item.use_ocdbt:
        spec = {"driver": "ocdbt", "base": base, "cache_pool": "cache_pool#ocdbt"}
        if param is not None:
            spec["path"] = param + "/"
        return spec
    return {**base, "path": base["path"] + (param + "/" if param is not None else "")}


def context():
    return import_tensorstore().Context(_TS_CONTEXT)


def open_array(item: "Item", param: str, ctx):
    """A future of the opened array (its metadata read, no data)."""
    ts = import_tensorstore()
    spec = {"driver": "zarr3" if item.use_zarr3 else "zarr", "kvstore": kvstore_spec(item, param),
            # A chunk missing where every chunk was written is damage, never the fill value.
            "fill_missing_data_reads": not item.every_chunk_stored,
            "recheck_cached_data": False, "recheck_cached_metadata": False}
    return ts.open(spec, open=True, read=True, context=ctx)


def tf_dtype(array, what: str) -> DType:
    name = array.dtype.name
    try:
        return dtype_from_name(_TS_NAMES.get(name, name))
    except KeyError:
        raise Unsupported(f"{what} has TensorStore dtype {excerpt(name)}, which has no TensorFlow equivalent") from None


def _bands(shape: tuple[int, ...], chunk: tuple[int, ...], itemsize: int, target: int) -> Iterator[tuple]:
    """Index tuples covering `shape` in C order: runs of whole chunk rows of about `target` bytes
    (at least one row of chunks)."""
    if not shape:
        yield ()
        return
    row_bytes = prod(shape[1:]) * itemsize
    step = max(1, chunk[0] if chunk and chunk[0] > 0 else 1)
    rows = max(step, target // max(row_bytes, 1) // step * step)
    for start in range(0, shape[0], rows):
        yield (slice(start, min(start + rows, shape[0])),)


def read_bands(array, dtype: DType, what: str, target: int, stored: int) -> Iterator["np.ndarray"]:
    """The array's stored elements (in its storage dtype: bfloat16 as uint16 ...), band by band.
    `stored`: the bytes the array's item holds on disk. A band (at least one row of chunks, which
    TensorStore decodes whole) declaring more than 256 MiB and over 100 times that is refused as a
    likely decompression bomb, before anything is allocated (the rule of formats/npz.py's zips)."""
    import numpy as np

    shape = tuple(array.shape)
    chunk = tuple(array.chunk_layout.read_chunk.shape or ())
    storage = np.dtype(dtype.storage)
    if shape:
        band_bytes = min(shape[0], max(chunk[0] if chunk else 1, 1)) * prod(shape[1:]) * dtype.itemsize
        if band_bytes > BOMB_FLOOR and band_bytes > BOMB_RATIO * max(stored, 1):
            raise CorruptCheckpoint(f"{what}: one row of its chunks declares {band_bytes} bytes, but its item "
                                    f"stores {stored}; refusing a likely decompression bomb")
    for index in _bands(shape, chunk, dtype.itemsize, target):
        try:
            band = array[index].read().result() if index else array.read().result()
        except Exception as exc:  # noqa: BLE001 - TensorStore raises ValueError and others, all from the store
            raise store_error(what, exc) from None
        band = np.ascontiguousarray(band)
        yield band.view(storage) if band.dtype.itemsize == storage.itemsize else band.astype(storage)
