"""A PyTorch file (`.pt`, `.pth`, `.bin`; zip or legacy) or a sharded set through its index
(`pytorch_model.bin.index.json`: {"weight_map": {tensor: file}}) as a checkpoint reader.

Tensors are materialised from their storages' bytes with numpy: a C-contiguous tensor is streamed
from its byte range; any other view (a transpose, a slice, an expand; several tensors over one
storage) reads the span it covers and takes numpy's `as_strided` of it, as torch's `set_` does.
Values are little-endian; bfloat16 and the float8 types decode as the project's other readers do
(formats/dtypes.py).

`verify` gets from `check_variable` what the format can check: each zip record's CRC-32 (once per
storage), every storage present and of its declared size, booleans 0 or 1; `not_checked` says what it
cannot (a legacy file has no checksum at all).
"""
from __future__ import annotations

import os
import zlib
from typing import TYPE_CHECKING, Iterator

from ckpttool.errors import BadInput, ChecksumMismatch, CorruptCheckpoint, Truncated
from ckpttool.formats.dtypes import check_bool_bytes
from ckpttool.formats.pytorch.archive import PytorchArchive, read_legacy, read_zip, sniff, tensor_span
from ckpttool.formats.safetensors import read_weight_map, refuse_leaving
from ckpttool.formats.variables import FileSetReader, Variable
from ckpttool.storage.fs import open_random_access
from ckpttool.text import excerpt

if TYPE_CHECKING:
    import numpy as np

FORMAT = "pytorch"
INDEX_SUFFIXES = (".bin.index.json", ".pt.index.json", ".pth.index.json")
CHUNK_BYTES = 8 << 20


def is_index_path(path: str) -> bool:
    return path.endswith(INDEX_SUFFIXES)


class PytorchFile:
    """One parsed PyTorch file and the handle its storages are read through."""

    def __init__(self, path: str):
        self.path = path
        kind = sniff(path)
        if kind is None:
            raise CorruptCheckpoint(f"{os.path.basename(path)} is not a PyTorch file (neither a zip with "
                                    "<root>/data.pkl nor a legacy torch.save file)")
        self.handle = open_random_access(path, "PyTorch file")
        try:
            self.archive: PytorchArchive = (read_zip if kind == "zip" else read_legacy)(path, self.handle)
        except BaseException:
            self.handle.close()
            raise
        self._crc_checked: dict[str, BadInput | None] = {}

    def check_storage(self, key: str) -> None:
        """Raise the storage's damage: missing or short, or (zip) its record's CRC-32 wrong. Read once."""
        if key not in self._crc_checked:
            self._crc_checked[key] = self._storage_damage(key)
        if self._crc_checked[key] is not None:
            raise self._crc_checked[key]

    def _storage_damage(self, key: str) -> BadInput | None:
        storage = self.archive.storages[key]
        if storage.problem:
            return Truncated(f"{os.path.basename(self.path)}: {storage.problem}")
        if storage.crc32 is None:
            return None
        crc = 0
        for chunk in self.handle.iter_range(storage.offset, storage.size, CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
        if crc != storage.crc32:
            return ChecksumMismatch(f"{os.path.basename(self.path)}: record data/{excerpt(key, 40)} does not match "
                                    "its CRC-32")
        return None

    def close(self) -> None:
        self.handle.close()


class PytorchReader(FileSetReader):
    """PyTorch weights as a checkpoint reader; names as the pickle nests them, joined with `.`."""

    format = FORMAT

    def __init__(self, path: str):
        self.metadata: dict[str, str] = {}
        self._where: dict[str, tuple[int, str]] = {}  # variable -> (file, its name there)
        super().__init__(path)

    def _open(self, path: str) -> None:
        if is_index_path(path):
            weight_map = read_weight_map(path, "PyTorch index")
            directory = os.path.dirname(path)
            names = sorted(set(weight_map.values()))
            for filename in names:
                shard = os.path.join(directory, filename)
                refuse_leaving(path, shard)
                self._files.append(PytorchFile(shard))
            for name, filename in weight_map.items():
                if name not in self._files[names.index(filename)].archive.tensors:
                    raise CorruptCheckpoint(f"{os.path.basename(path)}: {filename} does not hold "
                                            f"{excerpt(name, 80)!r}")
        else:
            weight_map = None
            self._files.append(PytorchFile(path))
        self.variables = []
        for file_id, file in enumerate(self._files):
            for name, ref in file.archive.tensors.items():
                if weight_map is not None and weight_map.get(name) != os.path.basename(file.path):
                    continue  # a shard may hold tensors its index places elsewhere (tied copies): the index says
                if name in self._where:
                    raise CorruptCheckpoint(f"{excerpt(name, 80)!r} is in two files of the set")
                self._where[name] = (file_id, name)
                self.variables.append(Variable(name, ref.dtype.dtype, ref.shape, ()))

    @property
    def not_checked(self) -> tuple[str, ...]:
        """What `verify` cannot check in these files."""
        notes = ["a PyTorch file has no checksum of its pickle's meaning: names, shapes and dtypes are checked "
                 "only against the storages they point into"]
        if any(file.archive.kind == "zip" for file in self._files):
            notes.append("zip records no tensor uses (version records, storages no tensor points into) are not read")
        if any(file.archive.kind == "legacy" for file in self._files):
            notes.append("a legacy (non-zip) PyTorch file stores no checksum: its storages' sizes are checked, "
                         "their bytes cannot be")
        return tuple(notes)

    def _locate(self, var: Variable):
        file_id, name = self._where[var.name]
        file = self._files[file_id]
        ref = file.archive.tensors[name]
        return file, ref, file.archive.storages[ref.storage.key]

    def _raise_if_damaged(self, file: PytorchFile, key: str) -> None:
        problem = file.archive.storages[key].problem
        if problem:
            raise Truncated(f"{os.path.basename(file.path)}: {problem}")

    def iter_stored_bytes(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """The tensor's bytes, little-endian in C order, in chunks."""
        file, ref, storage = self._locate(var)
        self._raise_if_damaged(file, ref.storage.key)
        start, length, contiguous = tensor_span(ref)
        if not length:
            return
        if not contiguous:
            yield self._strided(file, var, ref, storage.offset + start, length).tobytes()
            return
        yield from self.byte_range(file.handle, storage.offset + start, length, var.dtype.itemsize,
                                   chunk_bytes or CHUNK_BYTES,
                                   f"{os.path.basename(file.path)}, reading {excerpt(var.name, 80)!r}")

    def _strided(self, file: PytorchFile, var: Variable, ref, offset: int, length: int) -> np.ndarray:
        """A view that is not C-contiguous, made contiguous: the span it covers, strided as torch does."""
        import numpy as np

        data = file.handle.read_at(offset, length)
        if len(data) != length:
            raise Truncated(f"{os.path.basename(file.path)} was cut short while reading {excerpt(var.name, 80)!r}")
        flat = np.frombuffer(data, dtype=np.dtype(var.dtype.storage))
        itemsize = var.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat, shape=ref.shape, strides=[s * itemsize for s in ref.stride],
                                               writeable=False)
        return np.ascontiguousarray(view)

    def check_variable(self, var: Variable) -> int:
        """Its storage present, whole and (zip) matching its CRC-32; its bytes read; booleans 0 or 1."""
        file, ref, _storage = self._locate(var)
        file.check_storage(ref.storage.key)
        total = 0
        for chunk in self.iter_stored_bytes(var):
            check_bool_bytes(var.name, var.dtype, chunk)
            total += len(chunk)
        return total
