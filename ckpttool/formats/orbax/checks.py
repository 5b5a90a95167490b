"""What `verify` can check of an Orbax item's store besides decoding every chunk (reader.py):

- the OCDBT manifest and B-tree nodes are read whole (TensorStore checks their CRC-32C) and list
  every key; a plain zarr item's files are listed;
- every array's chunk keys are there, one per cell of its chunk grid (zarr v2 chunks, zarr v3
  shards): a missing one is damage when the metadata says Orbax stored every chunk, else a
  warning (it reads as the fill value); a key outside the grid is a warning;
- an uncompressed zarr v2 chunk file holds exactly one chunk's bytes.

What it cannot check: array values carry no checksum in zarr or OCDBT (Orbax's zstd frames are
written without one), so a changed byte inside a chunk that still decodes to its size goes
unnoticed. `NOT_CHECKED` says so in every report."""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod

from ckpttool.formats.orbax import store
from ckpttool.text import excerpt, quote

NOT_CHECKED = ("Orbax stores no checksum of array values (zarr and OCDBT keep none; TensorStore checks the "
               "OCDBT manifest's and B-tree nodes' CRC-32C and that each chunk decodes to its size): a changed "
               "byte inside a chunk that still decodes is not detected")
_NAMED_MISSING = 5
_WARNINGS = ("unexpected_chunk", "unstored_chunk")
_METADATA_KEYS = (".zarray", ".zattrs", ".zgroup", "zarr.json")
_ENUMERATED = 1 << 20  # chunk grids up to this many cells are compared key by key


@dataclass(frozen=True)
class StoreProblem:
    name: str
    problem: str  # "missing_manifest" | "corrupt_store" | "missing_chunk" | "size_mismatch" | "unexpected_chunk"
    message: str


def _keys(item) -> set[str] | StoreProblem:
    """Every key of the item's store (its OCDBT database's, or its files' relative paths)."""
    from ckpttool.storage import fs

    ts = store.import_tensorstore()
    if item.use_ocdbt and not fs.is_file(fs.join(item.path, "manifest.ocdbt")):
        return StoreProblem(item.name or fs.basename(item.path), "missing_manifest",
                            f"{item.path} has no manifest.ocdbt: none of its arrays can be found")
    try:
        kv = ts.KvStore.open(store.kvstore_spec(item), context=store.context()).result()
        return {key.decode("utf-8", "surrogateescape") for key in kv.list().result()}
    except Exception as exc:  # noqa: BLE001 - TensorStore's: a damaged manifest or B-tree node
        error = store.store_error(f"{item.path}: its store cannot be listed", exc)
        return StoreProblem(item.name or fs.basename(item.path), "corrupt_store", error.message)


def _cells(array, use_zarr3: bool, param: str, keys: set[str]) -> tuple[set[str] | None, int, set[str]]:
    """(the chunk keys the array's grid calls for, or None when too many to list; how many; the chunk
    keys stored), keys relative to the array's own prefix."""
    meta = array.spec().to_json().get("metadata", {})
    if use_zarr3:
        encoding = meta.get("chunk_key_encoding") or {}
        default = encoding.get("name", "default") == "default"
        separator = (encoding.get("configuration") or {}).get("separator", "/" if default else ".")
        scalar = "c" if default else "0"
        prefix = "c" + separator if default else ""
    else:
        separator, scalar, prefix = meta.get("dimension_separator", "."), "0", ""
    own = {key[len(param) + 1:] for key in keys if key.startswith(param + "/")}
    own.difference_update(_METADATA_KEYS)
    if not array.shape:
        return {scalar}, 1, own
    chunk = tuple(int(c) for c in (array.chunk_layout.write_chunk.shape or array.shape))
    cells = [ceil(int(s) / c) if c else 0 for s, c in zip(array.shape, chunk)]
    count = prod(cells)
    stored = {key for key in own if key.startswith(prefix)}
    if count > _ENUMERATED:
        return None, count, stored
    from itertools import product

    return {prefix + separator.join(map(str, cell)) for cell in product(*(range(n) for n in cells))}, count, stored


def _array_problems(name: str, param: str, array, item, keys: set[str],
                    sizes: dict[str, int]) -> list[StoreProblem]:
    expected, count, stored = _cells(array, item.use_zarr3, param, keys)
    if expected is None:  # too many cells to list: counts only
        missing, outside = max(0, count - len(stored)), []
        shown = ""
    else:
        gone, outside = sorted(expected - stored), sorted(stored - expected)
        missing = len(gone)
        shown = " (" + ", ".join(excerpt(k) for k in gone[:_NAMED_MISSING]) + (" ..." if missing > _NAMED_MISSING else "") + ")"
    problems = []
    if missing:
        if item.every_chunk_stored:
            problems.append(StoreProblem(name, "missing_chunk", f"array {quote(name)}: {missing} of its {count} chunk(s) "
                                         f"are not in the store{shown}"))
        else:
            problems.append(StoreProblem(name, "unstored_chunk", f"array {quote(name)}: {missing} of its {count} chunk(s) "
                                         f"are not stored{shown}; Orbax before 0.5 left out chunks equal to the fill "
                                         "value, which read so"))
    if outside:
        problems.append(StoreProblem(name, "unexpected_chunk", f"array {quote(name)}: {len(outside)} key(s) outside its "
                                     f"chunk grid ({', '.join(excerpt(k) for k in outside[:_NAMED_MISSING])}): not read"))
    meta = array.spec().to_json().get("metadata", {})
    if not item.use_ocdbt and not item.use_zarr3 and meta.get("compressor") is None and not meta.get("filters"):
        chunk = tuple(int(c) for c in (array.chunk_layout.write_chunk.shape or ()))
        want = prod(chunk) * array.dtype.numpy_dtype.itemsize
        wrong = sorted(key for key in stored if sizes.get(f"{param}/{key}", want) != want)
        if wrong:
            problems.append(StoreProblem(name, "size_mismatch", f"array {quote(name)}: {len(wrong)} uncompressed chunk "
                                         f"file(s) are not {want} bytes ({', '.join(excerpt(k) for k in wrong[:5])})"))
    return problems


def check_store(reader) -> tuple[list[StoreProblem], list[StoreProblem]]:
    """(damage, warnings) of every item's store, as the module docstring says."""
    import os

    errors: list[StoreProblem] = []
    warnings: list[StoreProblem] = []
    sizes_by_item: dict[str, dict[str, int]] = {}
    for path, size in reader.files:
        for item in reader.items:
            root = os.path.join(item.path, "")
            if path.startswith(root):
                sizes_by_item.setdefault(item.path, {})[path[len(root):]] = size
    for item in reader.items:
        keys = _keys(item)
        if isinstance(keys, StoreProblem):
            errors.append(keys)
            continue
        for var in reader.variables:
            opened = reader.stored_array(var)
            if opened is None or opened[0] is not item:
                continue
            for problem in _array_problems(var.name, opened[1].param, opened[2], item, keys,
                                           sizes_by_item.get(item.path, {})):
                (warnings if problem.problem in _WARNINGS else errors).append(problem)
    return errors, warnings
