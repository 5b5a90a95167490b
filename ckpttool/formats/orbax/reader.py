"""An Orbax checkpoint (a step directory or one of its PyTree items) as a checkpoint reader: the
variables from the metadata (tree.py), each array opened through TensorStore (store.py) for its
dtype and shape, values read in bands of whole chunks. String leaves are string scalars.

Only local directories are read, and only plain files and directories inside them: a link
anywhere under an item is refused before TensorStore is asked to read anything (TensorStore
would follow it)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ckpttool.errors import BadInput, CorruptCheckpoint, Unsupported
from ckpttool.formats.dtypes import STRING, array_shape_problem, checked_size, decoded, dtype_from_name
from ckpttool.formats.orbax import store
from ckpttool.formats.orbax.tree import STRING_TYPE, Item, Leaf, open_items, read_strings
from ckpttool.formats.variables import Variable
from ckpttool.storage import fs
from ckpttool.text import name_bytes, quote

FORMAT = "orbax"
CHUNK_BYTES = 8 << 20
_MAX_FILES = 1_000_000  # files under the items looked through


def _walk_plain(root: str) -> list[tuple[str, int]]:
    """(path, size) of every file under `root`; a link or special file is refused."""
    found: list[tuple[str, int]] = []
    todo = [root]
    while todo:
        current = todo.pop()
        try:
            entries = fs.list_dir(current)
        except OSError as exc:
            raise BadInput(f"{current} cannot be listed ({exc.strerror or exc})") from None
        for entry in entries:
            if entry.kind == "dir":
                todo.append(entry.path)
            elif entry.kind == "file":
                found.append((entry.path, entry.size))
            else:
                raise BadInput(f"{entry.path} is {'a symbolic link' if entry.kind == 'link' else 'not a plain file'}; "
                               "ckpttool reads Orbax checkpoints made of plain files only")
            if len(found) > _MAX_FILES:
                raise Unsupported(f"{root} holds more than {_MAX_FILES} files; not read")
    return found


class OrbaxReader:
    """An open Orbax checkpoint or item; tensor names as tree.py says."""

    format = FORMAT

    def __init__(self, path: str):
        if fs.is_url(path):
            raise Unsupported(f"{path}: Orbax checkpoints are read from local directories only",
                              hint="copy the step directory here first (gsutil -m cp -r, aws s3 sync)")
        self.prefix = path
        self.items = open_items(path)
        walked = {item.path: _walk_plain(item.path) for item in self.items}
        self.files = [found for item in self.items for found in walked[item.path]]
        self._stored = {path: sum(size for _file, size in found) for path, found in walked.items()}
        self._arrays: dict[str, tuple[Item, Leaf, object]] = {}
        self._strings: dict[str, bytes] = {}
        self.variables = sorted(self._open_all(), key=lambda v: name_bytes(v.name))
        self._by_name = {v.name: v for v in self.variables}
        self.on_bytes = None  # verify's progress, fed as bands are read

    def _open_all(self) -> list[Variable]:
        variables, pending, seen = [], [], set()
        ctx = None
        for item in self.items:
            strings = None
            for leaf in item.leaves:
                if leaf.name in seen:
                    raise Unsupported(f"{self.prefix}: two leaves are both named {quote(leaf.name)} (a key holding "
                                      "'/'); ckpttool cannot tell them apart")
                seen.add(leaf.name)
                if leaf.value_type == STRING_TYPE:
                    strings = read_strings(item) if strings is None else strings
                    if leaf.param not in strings:
                        raise CorruptCheckpoint(f"{item.path}: string leaf {quote(leaf.name)} is not in its _strings.json")
                    self._strings[leaf.name] = strings[leaf.param].encode("utf-8", "surrogatepass")
                    variables.append(Variable(leaf.name, dtype_from_name("string"), (), ()))
                    continue
                ctx = ctx or store.context()
                pending.append((item, leaf, store.open_array(item, leaf.param, ctx)))
        for item, leaf, future in pending:
            what = f"{fs.basename(item.path)}: array {quote(leaf.name)} (stored as {leaf.param!r})"
            try:
                array = future.result()
            except Exception as exc:  # noqa: BLE001 - TensorStore's errors: missing or damaged metadata
                raise store.store_error(what, exc) from None
            dtype = store.tf_dtype(array, what)
            shape = tuple(int(d) for d in array.shape)
            problem = array_shape_problem(shape, dtype.itemsize)
            if problem:
                raise Unsupported(f"{what}: a shape with {problem}")
            self._arrays[leaf.name] = (item, leaf, array)
            variables.append(Variable(leaf.name, dtype, shape, ()))
        return variables

    def variable(self, name: str) -> Variable | None:
        return self._by_name.get(name)

    def data_files(self) -> list[str]:
        return [path for path, _size in self.files]

    def stored_array(self, var: Variable) -> tuple[Item, Leaf, object] | None:
        """(item, leaf, opened TensorStore array) of a variable in the store; None for a string."""
        return self._arrays.get(var.name)

    def store_problems(self):
        """(damage, warnings, what cannot be checked) of the stores, beyond what reading finds (checks.py)."""
        from ckpttool.formats.orbax.checks import NOT_CHECKED, check_store

        errors, warnings = check_store(self)
        return errors, warnings, NOT_CHECKED

    def _what(self, var: Variable) -> str:
        item, leaf, _array = self._arrays[var.name]
        return f"{fs.basename(item.path)}: array {quote(var.name)} (stored as {leaf.param!r})"

    def iter_stored_bytes(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """Little-endian C-order bytes of the stored elements, in pieces of at most `chunk_bytes`."""
        if var.dtype.code == STRING:
            raise Unsupported(f"{var.name!r} holds a string, which has no fixed-width bytes")
        step = max(1, (chunk_bytes or CHUNK_BYTES) // var.dtype.itemsize) * var.dtype.itemsize
        emitted = False
        item, _leaf, array = self._arrays[var.name]
        for band in store.read_bands(array, var.dtype, self._what(var), CHUNK_BYTES, self._stored[item.path]):
            data = memoryview(band.reshape(-1).view(np.uint8))
            if self.on_bytes is not None:
                self.on_bytes(len(data))
            for start in range(0, len(data), step):
                emitted = True
                yield bytes(data[start:start + step])
        if not emitted:
            yield b""

    def iter_value_chunks(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        if var.dtype.code == STRING:
            yield self.read(var).reshape(-1)
            return
        yield from decoded(var.dtype, self.iter_stored_bytes(var, chunk_bytes))

    def read(self, var: Variable) -> np.ndarray:
        if var.dtype.code == STRING:
            out = np.empty((), dtype=object)
            out[()] = self._strings[var.name]
            return out
        storage = np.dtype(var.dtype.storage)
        flat = np.frombuffer(b"".join(self.iter_stored_bytes(var)), dtype=storage)
        return var.dtype.decode(flat).reshape(var.shape)

    def check_variable(self, var: Variable) -> int:
        """Decode every chunk (TensorStore checks each decodes to its chunk's size); bools are 0 or 1."""
        if var.dtype.code == STRING:
            return len(self._strings[var.name])
        return checked_size(var, self.iter_stored_bytes(var))

    def object_graph_bytes(self) -> bytes | None:
        return None

    def close(self) -> None:
        self._arrays.clear()

    def __enter__(self) -> "OrbaxReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

