"""NumPy `.npz` archives (a zip of `.npy` members), read and written by streaming.

Reading never unpickles: a member holding Python objects is refused, as
np.load(allow_pickle=False) would. Each member's `.npy` header is checked
against the member's size before anything is allocated, and deflated members
that expand far beyond what they store are refused as zip bombs. Writing
streams each member (ZIP64, stored uncompressed, as np.savez does).
"""
from __future__ import annotations

import os
import tokenize
import zipfile
from math import prod
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np

from ckpttool.errors import CorruptCheckpoint, Unsupported
from ckpttool.formats.dtypes import STRING, DType, array_shape_problem, checked_size, dtype_from_name
from ckpttool.formats.variables import Variable
from ckpttool.formats.zips import ZIP_ERRORS, check_zip_member, open_zip

CHUNK_BYTES = 8 << 20
NPY_HEADER_LIMIT = 10_000  # numpy's own default cap on .npy header size
ZERO_WIDTH_LIMIT = 1 << 20  # elements of a zero-width string array (S0), which hold no bytes to bound them

_NUMPY_KINDS = {("b", 1): "bool", ("i", 1): "int8", ("i", 2): "int16", ("i", 4): "int32", ("i", 8): "int64",
                ("u", 1): "uint8", ("u", 2): "uint16", ("u", 4): "uint32", ("u", 8): "uint64",
                ("f", 2): "float16", ("f", 4): "float32", ("f", 8): "float64",
                ("c", 8): "complex64", ("c", 16): "complex128"}


def tf_dtype_of(np_dtype: np.dtype, what: str) -> DType:
    """The TensorFlow dtype of a numpy dtype (bytes and text arrays are strings)."""
    if np_dtype.hasobject:
        raise Unsupported(f"{what} holds Python objects (a pickle); ckpttool never unpickles data",
                          hint="re-save it from numpy arrays of numbers")
    if np_dtype.kind in "SU":
        return dtype_from_name("string")
    name = _NUMPY_KINDS.get((np_dtype.kind, np_dtype.itemsize))
    if name is None or np_dtype.fields is not None or np_dtype.subdtype is not None:
        raise Unsupported(f"{what} has numpy dtype {np_dtype.str!r}, which has no TensorFlow equivalent")
    return dtype_from_name(name)


def numpy_storage(dtype: DType) -> np.dtype | None:
    """The numpy dtype that holds `dtype` exactly and says so in a .npy header; None if there is none."""
    if not dtype.fixed_width or dtype.decoder is not None or dtype.name.startswith(("qint", "quint")):
        return None
    return np.dtype(dtype.storage)


class _Member:
    """Where one .npy member's data starts, and how to read it."""

    def __init__(self, info: zipfile.ZipInfo, data_offset: int, np_dtype: np.dtype, fortran: bool):
        self.info, self.data_offset, self.np_dtype, self.fortran = info, data_offset, np_dtype, fortran


class NpzReader:
    """An open .npz archive as a checkpoint reader; tensor names are the member names without `.npy`."""

    format = "npz"

    def __init__(self, path: str):
        self.prefix = path
        self._zip = open_zip(path, "npz archive")
        try:
            self._members: dict[str, _Member] = {}
            self.variables = self._scan()
        except BaseException:
            self.close()
            raise
        self._by_name = {v.name: v for v in self.variables}

    def _fail(self, exc: BaseException, member: str = "") -> CorruptCheckpoint:
        where = f" member {member!r}" if member else ""
        return CorruptCheckpoint(f"{os.path.basename(self.prefix)}{where}: {str(exc)[:300] or type(exc).__name__}")

    def _scan(self) -> list[Variable]:
        variables = []
        for info in self._zip.infolist():
            if info.filename.endswith("/"):  # a directory (ZipInfo.is_dir() fails on an empty name)
                continue
            if not info.filename.endswith(".npy"):
                raise Unsupported(f"{os.path.basename(self.prefix)}: member {info.filename!r} is not a .npy array")
            name = info.filename[: -len(".npy")]
            check_zip_member(info, self.prefix)
            try:
                with self._zip.open(info) as stream:
                    version = np.lib.format.read_magic(stream)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, np_dtype = read_header(stream, max_header_size=NPY_HEADER_LIMIT)
                    data_offset = stream.tell()
            # numpy parses the header dict with the tokenizer: an unclosed bracket is a TokenError
            except ZIP_ERRORS + (OSError, TypeError, KeyError, SyntaxError, tokenize.TokenError) as exc:
                raise self._fail(exc, info.filename) from None
            what = f"{os.path.basename(self.prefix)} member {info.filename!r}"
            dtype = tf_dtype_of(np_dtype, what)
            problem = array_shape_problem(tuple(shape), np_dtype.itemsize)
            if problem:  # numpy's read_array refuses such a member: so do we, before anything is written
                raise Unsupported(f"{what}: a shape with {problem}, which numpy cannot load")
            expected = prod(shape) * np_dtype.itemsize
            if np_dtype.itemsize == 0 and prod(shape) > ZERO_WIDTH_LIMIT:
                raise Unsupported(f"{what}: {prod(shape)} zero-width strings ({np_dtype.str}); ckpttool reads at most "
                                  f"{ZERO_WIDTH_LIMIT} (they hold no bytes, but each costs memory)")
            if info.file_size != data_offset + expected:
                raise CorruptCheckpoint(f"{what}: {info.file_size - data_offset} data bytes for shape {list(shape)} "
                                        f"of {np_dtype.str} ({expected} expected)")
            if name in self._members:
                raise CorruptCheckpoint(f"{what}: the name appears twice")
            self._members[name] = _Member(info, data_offset, np_dtype, fortran)
            variables.append(Variable(name, dtype, tuple(shape), ()))
        return sorted(variables, key=lambda v: v.name.encode("utf-8", "surrogateescape"))

    def variable(self, name: str) -> Variable | None:
        return self._by_name.get(name)

    def data_files(self) -> list[str]:
        return [self.prefix]

    def _iter_member(self, member: _Member, chunk_bytes: int) -> Iterator[bytes]:
        """The member's data bytes as stored, read to the end so zipfile checks its CRC-32."""
        itemsize = max(member.np_dtype.itemsize, 1)
        step = max(itemsize, chunk_bytes // itemsize * itemsize)
        try:
            with self._zip.open(member.info) as stream:
                stream.read(member.data_offset)
                pending = b""
                while True:
                    chunk = stream.read(step)
                    if not chunk:
                        break
                    chunk, pending = pending + chunk, b""
                    cut = len(chunk) - len(chunk) % itemsize
                    chunk, pending = chunk[:cut], chunk[cut:]
                    if chunk:
                        yield chunk
        except ZIP_ERRORS + (OSError,) as exc:
            raise self._fail(exc, member.info.filename) from None

    def _whole(self, var: Variable) -> np.ndarray:
        member = self._members[var.name]
        if member.np_dtype.itemsize == 0:  # S0: as numpy's read_array, empty strings without reading
            return np.ndarray(var.shape, dtype=member.np_dtype)
        data = b"".join(self._iter_member(member, CHUNK_BYTES))
        return np.frombuffer(data, dtype=member.np_dtype).reshape(var.shape, order="F" if member.fortran else "C")

    def iter_stored_bytes(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """Little-endian C-order bytes of the tensor, in chunks (Fortran-order members are reordered whole)."""
        member = self._members[var.name]
        little = member.np_dtype.newbyteorder("<")
        if member.fortran and len(var.shape) > 1:
            yield np.ascontiguousarray(self._whole(var), dtype=little).tobytes()
            return
        for chunk in self._iter_member(member, chunk_bytes or CHUNK_BYTES):
            yield chunk if member.np_dtype == little else np.frombuffer(chunk, member.np_dtype).astype(little).tobytes()

    def read(self, var: Variable) -> np.ndarray:
        array = self._whole(var)
        if var.dtype.code != STRING:
            return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.reshape(-1).tolist()]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(var.shape)

    def iter_value_chunks(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        if var.dtype.code == STRING:
            yield self.read(var).reshape(-1)
            return
        native = np.dtype(var.dtype.storage)
        for chunk in self.iter_stored_bytes(var, chunk_bytes):
            yield np.frombuffer(chunk, dtype=native)

    def check_variable(self, var: Variable) -> int:
        """Read the member to its end: zipfile checks its CRC-32; booleans must be 0 or 1."""
        return checked_size(var, self._iter_member(self._members[var.name], CHUNK_BYTES))

    def object_graph_bytes(self) -> bytes | None:
        return None

    def close(self) -> None:
        fp = self._zip.fp
        self._zip.close()
        if fp is not None:
            fp.close()

    def __enter__(self) -> "NpzReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_npz(handle: BinaryIO, items: list[tuple[str, DType, tuple[int, ...]]],
              chunks_of: Callable[[str], Iterable[bytes]]) -> int:
    """Write an .npz to `handle`, one `.npy` member per item, each streamed. Bytes of array data written."""
    total = 0
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, dtype, shape in items:
            header = {"descr": np.lib.format.dtype_to_descr(numpy_storage(dtype)), "fortran_order": False,
                      "shape": tuple(shape)}
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                try:
                    np.lib.format.write_array_header_1_0(member, header)
                except ValueError:  # header too long for format 1.0
                    np.lib.format.write_array_header_2_0(member, header)
                for chunk in chunks_of(name):
                    member.write(chunk)
                    total += len(chunk)
    return total
