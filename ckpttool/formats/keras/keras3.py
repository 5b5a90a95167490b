"""Keras 3 weight files, read only: `.weights.h5` (HDF5) and `.keras` (a zip
holding `model.weights.h5` beside the model's config).

Variables are named by their HDF5 dataset paths, exactly as Keras 3 stores and
matches them on load: `layers/dense/vars/0` is the first variable (kernel) of
the model's first Dense layer, `layers/sequential/layers/dense_1/vars/1` a
bias inside a nested model, `optimizer/vars/N` the optimizer's state. The
file records no variable names (`kernel`, `bias`), only these positions; the
path segments are Keras' per-class counters (`dense`, `dense_1`), which equal
the layer names unless layers were named by hand.

Whether a file is a zip (.keras) or HDF5 is told by its bytes, not its name.
A file in a bucket is read through storage's seekable RemoteInput (h5py reads a
file object; a .keras zip's weights are first copied to a local temp).
h5py (the `keras` extra) is imported only when such a file is opened. External
and virtual datasets (which would read other files) are refused. A file may
declare more than it holds, so before anything is read (the rule of the
.keras zip members, see formats/npz.py):
- a dataset whose storage was never written (or only partly: chunks missing)
  is refused; HDF5 would hand out its fill value for every element, and Keras
  writes every weight whole;
- a dataset that declares more than 256 MiB and over 100 times the bytes it
  stores (compression past any real weight's), and a file whose datasets
  together declare more than 256 MiB and over 100 times the file's size
  (chunks shared between datasets), are refused as decompression bombs.
Reading goes by bands of whole chunk rows, one HDF5 read each, so a
compressed chunk is inflated once however small the pieces handed on; no
dataset is held open between reads (100k open datasets cost gigabytes).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from math import prod
from typing import Iterator

import numpy as np

from ckpttool.errors import BadInput, CorruptCheckpoint, Unsupported
from ckpttool.formats.dtypes import STRING, checked_size, decoded, dtype_from_name
from ckpttool.formats.npz import tf_dtype_of
from ckpttool.formats.variables import Variable
from ckpttool.formats.zips import ZIP_ERRORS, ZIP_MAX_RATIO, ZIP_RATIO_FLOOR, check_zip_member, open_zip
from ckpttool.storage import fs
from ckpttool.text import name_bytes, quote
from ckpttool.storage.atomic import atomic_output

WEIGHTS_MEMBER = "model.weights.h5"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
CHUNK_BYTES = 8 << 20
_BOMB_FLOOR, _BOMB_RATIO = ZIP_RATIO_FLOOR, ZIP_MAX_RATIO  # the .keras zip rule's numbers
_PY_OBJECT_BYTES = 64  # a string element read into Python costs about this much beyond its text
_H5_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError)


def is_keras_path(path: str) -> bool:
    return path.endswith((".weights.h5", ".keras"))


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise Unsupported("reading Keras files needs h5py, which is not installed",
                          hint="pip install 'ckpttool[keras]'  (or: pip install h5py)") from None
    return h5py


def _is_bfloat16(dataset) -> bool:
    """Keras marks a bfloat16 weight (stored as 2-byte items) with a `dtype` attribute."""
    if dataset.dtype.itemsize != 2 or "dtype" not in dataset.attrs:
        return False
    if dataset.attrs.get_id("dtype").get_storage_size() > 64:  # a hostile attribute is not read whole
        return False
    value = dataset.attrs["dtype"]
    return isinstance(value, (str, bytes)) and value in ("bfloat16", b"bfloat16")


def _extract_weights(archive_path: str, directory: str) -> str:
    """Copy model.weights.h5 out of a .keras archive into `directory` (h5py needs a real file)."""
    archive = open_zip(archive_path, "Keras archive")
    out = os.path.join(directory, WEIGHTS_MEMBER)
    try:
        try:
            info = archive.getinfo(WEIGHTS_MEMBER)
        except KeyError:
            raise CorruptCheckpoint(f"{os.path.basename(archive_path)} holds no {WEIGHTS_MEMBER} "
                                    "(is it a Keras 3 .keras file?)") from None
        check_zip_member(info, archive_path)
        if info.flag_bits & 0x1:  # zipfile would raise RuntimeError, asking for a password
            raise Unsupported(f"{os.path.basename(archive_path)}: {WEIGHTS_MEMBER} is encrypted",
                              hint="Keras never encrypts; unzip it with its password and give the .weights.h5")
        with archive.open(info) as source, atomic_output(out, sync=False) as target:  # the one temp helper
            # zipfile stops at the declared size and checks the CRC at the end.
            shutil.copyfileobj(source, target, CHUNK_BYTES)
    except ZIP_ERRORS as exc:
        raise CorruptCheckpoint(f"{os.path.basename(archive_path)}: cannot extract {WEIGHTS_MEMBER} "
                                f"({str(exc)[:200]})") from None
    finally:
        fp = archive.fp
        archive.close()
        if fp is not None:
            fp.close()
    return out


class KerasWeights:
    """An open Keras 3 weights file as a checkpoint reader."""

    format = "keras"

    def __init__(self, path: str):
        self.prefix = path
        self._tmpdir: str | None = None
        self._file = None
        self._handle = None
        h5py = _import_h5py()
        try:
            source, size = self._open_source(path)
            try:
                self._file = h5py.File(source, "r", locking=False)
                variables = self._collect(h5py, size)
            except _H5_ERRORS as exc:
                raise CorruptCheckpoint(f"{os.path.basename(path)}: not a readable HDF5 weights file "
                                        f"({str(exc)[:200]})") from None
        except BaseException:
            self.close()
            raise
        self.variables = sorted(variables, key=lambda v: name_bytes(v.name))
        self._by_name = {v.name: v for v in self.variables}

    def _open_source(self, path: str):
        """(what h5py opens, the file's size): the HDF5 file itself, or the one a .keras zip holds
        (told by its bytes, not its name); an object in a bucket is read through ranged GETs."""
        head = fs.read_range(path, 0, len(HDF5_MAGIC), "Keras file")
        if head[:4] in ZIP_MAGICS:
            self._tmpdir = tempfile.mkdtemp(prefix="ckpttool-keras-")
            h5_path = _extract_weights(path, self._tmpdir)
            return h5_path, os.path.getsize(h5_path)
        if fs.is_url(path):
            self._handle = fs.open_input(path, "Keras weights file")
            return self._handle, self._handle.size
        if not os.path.isfile(path):
            raise BadInput(f"{path} is not a regular file")
        return path, os.path.getsize(path)

    def _named_datasets(self, h5py) -> list[tuple[str, bytes]]:
        """(variable name, dataset path) of every dataset: Keras 3 names a weight by its path."""
        # The low-level walk hands out each dataset's name as bytes (it need not be UTF-8) and
        # opens nothing.
        paths: list[bytes] = []

        def visit(path: bytes, info) -> None:
            if info.type == h5py.h5o.TYPE_DATASET:
                paths.append(path)

        h5py.h5o.visit(self._file.id, visit, info=True)
        return [(path.decode("utf-8", "surrogateescape"), path) for path in paths]

    def _collect(self, h5py, file_size: int) -> list[Variable]:
        # Each dataset is opened, checked and closed again.
        self._datasets: dict[str, tuple[bytes, int]] = {}
        variables, total = [], 0
        for name, path in self._named_datasets(h5py):
            var, declared, chunk_rows = self._check_dataset(h5py, path, name)
            total += declared
            self._datasets[name] = (path, chunk_rows)
            variables.append(var)
        if total > _BOMB_FLOOR and total > _BOMB_RATIO * max(file_size, 1):
            raise CorruptCheckpoint(f"{os.path.basename(self.prefix)}: its datasets declare {total} bytes but the "
                                    f"file holds {file_size}; refusing a likely decompression bomb")
        return variables

    def _check_dataset(self, h5py, path: bytes, name: str) -> tuple[Variable, int, int]:
        """The dataset's variable, declared bytes and rows per chunk (0: not chunked), or why it is refused."""
        what = f"{os.path.basename(self.prefix)} dataset {quote(name)}"
        dataset = self._file[path]
        plist = dataset.id.get_create_plist()
        layout = plist.get_layout()
        if plist.get_external_count():
            raise BadInput(f"{what} is stored in another file; refusing to follow it")
        if layout == h5py.h5d.VIRTUAL:
            raise BadInput(f"{what} is a virtual dataset; refusing to follow it")
        if dataset.shape is None:
            raise CorruptCheckpoint(f"{what} has no shape (an empty dataspace)")
        if _is_bfloat16(dataset):
            dtype = dtype_from_name("bfloat16")
        else:
            dtype = tf_dtype_of(dataset.dtype, what)
        shape = tuple(int(d) for d in dataset.shape)
        declared = prod(shape) * dataset.id.get_type().get_size()
        stored = dataset.id.get_storage_size()
        if prod(shape) and dataset.id.get_space_status() != h5py.h5d.SPACE_STATUS_ALLOCATED:
            partly = "partly " if stored else ""
            raise CorruptCheckpoint(f"{what} was {partly}never written: it declares {declared} bytes and "
                                    f"stores {stored} (every element would read as its fill value)")
        if declared > _BOMB_FLOOR and declared > _BOMB_RATIO * max(stored, 1):
            raise CorruptCheckpoint(f"{what} declares {declared} bytes but stores {stored}; "
                                    "refusing a likely decompression bomb")
        chunk_rows = int(plist.get_chunk()[0]) if layout == h5py.h5d.CHUNKED and shape else 0
        return Variable(name, dtype, shape, ()), declared, chunk_rows

    def variable(self, name: str) -> Variable | None:
        return self._by_name.get(name)

    def data_files(self) -> list[str]:
        return [self.prefix]

    def _fail(self, var: Variable, exc: BaseException) -> CorruptCheckpoint:
        return CorruptCheckpoint(f"{os.path.basename(self.prefix)}: cannot read {quote(var.name)} "
                                 f"({str(exc)[:200]})")

    def _read(self, var: Variable) -> np.ndarray:
        """The whole dataset, in one HDF5 read."""
        try:
            return np.asarray(self._file[self._datasets[var.name][0]][()])
        except _H5_ERRORS as exc:
            raise self._fail(var, exc) from None

    def _bands(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        """The dataset in C order, as bands along the first axis of about `chunk_bytes` each.
        A chunked dataset's bands are whole rows of chunks, each band one HDF5 read: every
        chunk is inflated once (HDF5 keeps no chunk over 1 MiB in its cache, so reads of
        pieces of a larger chunk each inflated all of it)."""
        path, chunk_rows = self._datasets[var.name]
        try:
            dataset = self._file[path]
            if not var.shape or not var.num_elements:
                yield np.asarray(dataset[()])
                return
            row_bytes = var.num_elements // var.shape[0] * dataset.dtype.itemsize
            rows = max(1, (chunk_bytes or CHUNK_BYTES) // max(1, row_bytes))
            if chunk_rows:
                rows = max(1, rows // chunk_rows) * chunk_rows
            for start in range(0, var.shape[0], rows):
                yield np.asarray(dataset[start:start + rows])
        except _H5_ERRORS as exc:
            raise self._fail(var, exc) from None

    @staticmethod
    def _stored(array: np.ndarray, var: Variable) -> np.ndarray:
        """Elements in the storage dtype, little-endian; bfloat16 comes back from h5py as raw 2-byte items."""
        if var.dtype.name == "bfloat16":
            return np.ascontiguousarray(array).view("<u2")
        return np.ascontiguousarray(array, dtype=np.dtype(var.dtype.storage))

    @staticmethod
    def _strings(array: np.ndarray) -> np.ndarray:
        values = array.reshape(-1).tolist()
        out = np.empty(len(values), dtype=object)
        out[:] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
        return out

    def iter_stored_bytes(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """Little-endian C-order bytes, in pieces of at most `chunk_bytes` (a band may be larger)."""
        if var.dtype.code == STRING:
            raise Unsupported(f"{var.name!r} holds strings, which have no fixed-width bytes")
        step = max(1, (chunk_bytes or CHUNK_BYTES) // var.dtype.itemsize)
        for band in self._bands(var, chunk_bytes):
            flat = self._stored(band, var).reshape(-1)
            if not flat.size:
                yield b""
            for start in range(0, flat.size, step):
                yield flat[start:start + step].tobytes()

    def iter_value_chunks(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        if var.dtype.code == STRING:  # Python objects: a band is handed on in smaller pieces
            for band in self._bands(var, chunk_bytes):
                flat = band.reshape(-1)
                step = max(1, (chunk_bytes or CHUNK_BYTES) // (flat.dtype.itemsize + _PY_OBJECT_BYTES))
                for start in range(0, max(flat.size, 1), step):
                    yield self._strings(flat[start:start + step])
            return
        yield from decoded(var.dtype, self.iter_stored_bytes(var, chunk_bytes))

    def read(self, var: Variable) -> np.ndarray:
        if var.dtype.code == STRING:
            return self._strings(self._read(var)).reshape(var.shape)
        return var.dtype.decode(self._stored(self._read(var), var)).reshape(var.shape)

    def check_variable(self, var: Variable) -> int:
        """Read every element (HDF5 checks its own structures; Keras stores no checksums)."""
        if var.dtype.code == STRING:
            return sum(int(np.char.str_len(band).sum()) for band in self._bands(var) if band.size)
        return checked_size(var, self.iter_stored_bytes(var))  # h5py hands a bool's byte 2 on as it is

    def object_graph_bytes(self) -> bytes | None:
        return None

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - closing a damaged file must not mask the real error
                pass
            self._file = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "KerasWeights":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
