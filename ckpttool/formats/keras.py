"""Keras 3 weight files, read only: `.weights.h5` (HDF5) and `.keras` (a zip
holding `model.weights.h5` beside the model's config).

Variables are named by their HDF5 dataset paths, exactly as Keras 3 stores and
matches them on load: `layers/dense/vars/0` is the first variable (kernel) of
the model's first Dense layer, `layers/sequential/layers/dense_1/vars/1` a
bias inside a nested model, `optimizer/vars/N` the optimizer's state. The
file records no variable names (`kernel`, `bias`), only these positions; the
path segments are Keras' per-class counters (`dense`, `dense_1`), which equal
the layer names unless layers were named by hand.

h5py (the `keras` extra) is imported only when such a file is opened. External
and virtual datasets (which would read other files) are refused, and so are
datasets that declare far more bytes than they store.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator

import numpy as np

from ckpttool.errors import BadInput, CorruptCheckpoint, Unsupported
from ckpttool.formats.dtypes import STRING, dtype_from_name
from ckpttool.formats.npz import ZIP_ERRORS, check_zip_member, open_zip, tf_dtype_of
from ckpttool.formats.variables import Variable
from ckpttool.storage.atomic import atomic_output

WEIGHTS_MEMBER = "model.weights.h5"
CHUNK_BYTES = 8 << 20
_BOMB_FLOOR = 256 << 20
_BOMB_RATIO = 100


def is_keras_path(path: str) -> bool:
    return path.endswith((".weights.h5", ".keras"))


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise Unsupported("reading Keras files needs h5py, which is not installed",
                          hint="pip install 'ckpttool[keras]'  (or: pip install h5py)") from None
    return h5py


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
        h5py = _import_h5py()
        try:
            h5_path = path
            if path.endswith(".keras"):
                self._tmpdir = tempfile.mkdtemp(prefix="ckpttool-keras-")
                h5_path = _extract_weights(path, self._tmpdir)
            elif not os.path.isfile(path):
                raise BadInput(f"{path} is not a regular file")
            try:
                self._file = h5py.File(h5_path, "r", locking=False)
                self._datasets = self._collect(h5py)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise CorruptCheckpoint(f"{os.path.basename(path)}: not a readable HDF5 weights file "
                                        f"({str(exc)[:200]})") from None
        except BaseException:
            self.close()
            raise
        self.variables = [Variable(name, dtype, shape, ()) for name, (_ds, dtype, shape) in
                          sorted(self._datasets.items(), key=lambda item: item[0].encode("utf-8", "surrogateescape"))]
        self._by_name = {v.name: v for v in self.variables}

    def _collect(self, h5py) -> dict:
        found: dict[str, tuple] = {}

        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            what = f"{os.path.basename(self.prefix)} dataset {name!r}"
            if obj.external:
                raise BadInput(f"{what} is stored in another file; refusing to follow it")
            if obj.is_virtual:
                raise BadInput(f"{what} is a virtual dataset; refusing to follow it")
            if obj.attrs.get("dtype") == "bfloat16" and obj.dtype.itemsize == 2:
                dtype = dtype_from_name("bfloat16")
            else:
                dtype = tf_dtype_of(obj.dtype, what)
            shape = tuple(int(d) for d in obj.shape)
            declared = int(np.prod(shape, dtype=object)) * obj.dtype.itemsize
            if declared > _BOMB_FLOOR and declared > _BOMB_RATIO * max(obj.id.get_storage_size(), 1):
                raise CorruptCheckpoint(f"{what} declares {declared} bytes but stores "
                                        f"{obj.id.get_storage_size()}; refusing a likely decompression bomb")
            found[name] = (obj, dtype, shape)

        self._file.visititems(visit)
        return found

    def variable(self, name: str) -> Variable | None:
        return self._by_name.get(name)

    def data_files(self) -> list[str]:
        return [self.prefix]

    def _read(self, var: Variable, selection=()) -> np.ndarray:
        dataset = self._datasets[var.name][0]
        try:
            return np.asarray(dataset[selection] if selection else dataset[()])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CorruptCheckpoint(f"{os.path.basename(self.prefix)}: cannot read {var.name!r} "
                                    f"({str(exc)[:200]})") from None

    @staticmethod
    def _stored(array: np.ndarray, var: Variable) -> np.ndarray:
        """Elements in the storage dtype, little-endian; bfloat16 comes back from h5py as raw 2-byte items."""
        if var.dtype.name == "bfloat16":
            return np.ascontiguousarray(array).view("<u2")
        return np.ascontiguousarray(array, dtype=np.dtype(var.dtype.storage))

    def iter_stored_bytes(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """Little-endian C-order bytes, read in slabs along the first axis."""
        if var.dtype.code == STRING:
            raise Unsupported(f"{var.name!r} holds strings, which have no fixed-width bytes")
        if not var.shape or not var.num_elements:
            yield self._stored(self._read(var), var).tobytes()
            return
        row_bytes = max(1, var.num_elements // var.shape[0] * var.dtype.itemsize)
        rows = max(1, (chunk_bytes or CHUNK_BYTES) // row_bytes)
        for start in range(0, var.shape[0], rows):
            yield self._stored(self._read(var, np.s_[start:start + rows]), var).tobytes()

    def iter_value_chunks(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        if var.dtype.code == STRING:
            yield self.read(var).reshape(-1)
            return
        storage = np.dtype(var.dtype.storage)
        for chunk in self.iter_stored_bytes(var, chunk_bytes):
            yield var.dtype.decode(np.frombuffer(chunk, dtype=storage))

    def read(self, var: Variable) -> np.ndarray:
        if var.dtype.code == STRING:
            values = self._read(var).reshape(-1).tolist()
            out = np.empty(len(values), dtype=object)
            out[:] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
            return out.reshape(var.shape)
        return var.dtype.decode(self._stored(self._read(var), var)).reshape(var.shape)

    def check_variable(self, var: Variable) -> int:
        """Read every element (HDF5 checks its own structures; Keras stores no checksums)."""
        if var.dtype.code == STRING:
            return sum(len(v) for v in self.read(var).reshape(-1))
        return sum(len(chunk) for chunk in self.iter_stored_bytes(var))

    def object_graph_bytes(self) -> bytes | None:
        return None

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - closing a damaged file must not mask the real error
                pass
            self._file = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "KerasWeights":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
