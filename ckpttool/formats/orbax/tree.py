"""What an Orbax checkpoint holds, from its metadata files alone (plain JSON, no TensorStore):
which directories are items, and each item's leaves.

Layout (Orbax 0.5 and later, the v0 and v1 APIs alike): a checkpoint (a CheckpointManager step
`run/100/`, or a single checkpoint) holds `_CHECKPOINT_METADATA` (and `orbax.checkpoint`, the v1
API's marker) and one directory per item (`default/`, `state/`, `params/` ...). A PyTree item holds
`_METADATA`: `tree_metadata` maps each leaf's key path to its keys (`key_metadata`: the key and
whether it is a dict key or a sequence index) and its value type (`jax.Array`, `np.ndarray`,
`scalar`: an array in the store; `string`: its value in `_strings.json`; empty containers:
nothing stored). The store holds each array under its parameter name, the keys joined with `.`:
in one OCDBT database (`manifest.ocdbt`, `d/`, `ocdbt.process_<n>/`), or as a zarr array directory
per parameter (use_ocdbt=False); zarr v2 or v3 (`use_zarr3`).

Names: a leaf is named by its keys joined with `/` (`params/dense/kernel`, `opt_state/0/mu`),
as TensorFlow names scoped variables; a checkpoint with several PyTree items prefixes each name
with its item (`params/...`, `opt_state/...`), one with a single item does not (the step and the
item read alike). Everything read here is hostile: file sizes are capped, every key is checked
to be text or an index, and a parameter name that could leave the item directory is refused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

from ckpttool.errors import CorruptCheckpoint, NotFound, Unsupported
from ckpttool.storage import fs
from ckpttool.text import excerpt

METADATA_FILE = "_METADATA"  # a PyTree item's tree
CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"  # the checkpoint's (step's) own: item handlers, times
V1_MARKER = "orbax.checkpoint"  # the v1 API's marker of a checkpoint directory
COMMIT_MARKER = "commit_success.txt"  # written where renames are not atomic (GCS, S3)
STRINGS_FILE = "_strings.json"
OCDBT_MANIFEST = "manifest.ocdbt"
METADATA_CAP = 256 << 20  # a _METADATA of a million leaves is about 300 MB... refused past this
STRINGS_CAP = 64 << 20
STORED_TYPES = ("jax.Array", "np.ndarray", "scalar")
STRING_TYPE = "string"
_DICT_KEY, _SEQUENCE_KEY = 2, 1
_MAX_ITEMS = 256  # item directories looked at in a checkpoint


@dataclass(frozen=True)
class Leaf:
    """One leaf of an item's tree that holds a value."""

    name: str  # the keys joined with "/" (prefixed by the item in a checkpoint of several)
    param: str  # the array's name in the store: the keys joined with "."
    value_type: str  # "jax.Array", "np.ndarray", "scalar", "string" ...


@dataclass(frozen=True)
class Item:
    """A PyTree item directory and what its metadata says."""

    name: str  # the item's directory name ("" for an item given directly)
    path: str
    leaves: tuple[Leaf, ...]
    use_ocdbt: bool
    use_zarr3: bool
    every_chunk_stored: bool = True  # Orbax 0.5+ writes chunks equal to the fill value too: none may be missing


def is_item_dir(path: str) -> bool:
    """A PyTree item: its `_METADATA` file is there (its bytes are read when it is opened)."""
    return fs.is_regular_file(fs.join(path, METADATA_FILE))


def item_dirs(path: str) -> list[str]:
    """The item directories of a checkpoint directory (those holding `_METADATA`), by name."""
    try:
        entries = fs.list_dir(path)
    except (NotFound, OSError):
        return []
    dirs = sorted(e.name for e in entries if e.kind == "dir")[:_MAX_ITEMS]
    return [name for name in dirs if is_item_dir(fs.join(path, name))]


def is_orbax_dir(path: str, unmarked: bool = False) -> bool:
    """An Orbax checkpoint or one of its PyTree items, by the files present (never by its name): an
    item's `_METADATA`, or a checkpoint's marker with an item below it; `unmarked`: or items below
    it alone (what a Checkpointer saving into `dir/default` leaves). Without `unmarked` the markers
    are looked up one by one, so that a large TF run directory is not listed for nothing."""
    if fs.is_url(path) or not fs.is_dir(path):
        return False
    if is_item_dir(path):
        return True
    markers = (CHECKPOINT_METADATA, V1_MARKER, COMMIT_MARKER)
    return (unmarked or any(fs.is_regular_file(fs.join(path, name)) for name in markers)) and bool(item_dirs(path))


def _load_json(path: str, cap: int, what: str):
    data = fs.read_capped(path, cap, what)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CorruptCheckpoint(f"{path} is not valid JSON ({excerpt(str(exc))})") from None


def _key_text(entry, where: str) -> tuple[str, int]:
    """(the key as text, its key type) of one `key_metadata` entry."""
    if not isinstance(entry, dict):
        raise CorruptCheckpoint(f"{where}: a key entry is not an object")
    key, key_type = entry.get("key"), entry.get("key_type")
    if key_type not in (_DICT_KEY, _SEQUENCE_KEY) or isinstance(key_type, bool):
        raise CorruptCheckpoint(f"{where}: key type {excerpt(repr(key_type))} is neither a dict key (2) nor an index (1)")
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise CorruptCheckpoint(f"{where}: key {excerpt(repr(key))} is neither text nor an index")
    text = str(key)
    if key_type == _SEQUENCE_KEY and not text.isdecimal():
        raise CorruptCheckpoint(f"{where}: sequence index {excerpt(text)} is not a number")
    return text, key_type


def _safe_param(param: str, where: str) -> str:
    """A parameter name is a directory or key name in the store: it must stay one name."""
    if not param or param in (".", "..") or any(c in param for c in "/\\\x00"):
        raise Unsupported(f"{where}: parameter name {excerpt(param)!r} is not a plain name in the store "
                          "(empty, '.', '..', or holding '/', '\\' or NUL); refusing to read it")
    return param


def read_item(path: str, name: str = "") -> Item:
    """The leaves of the PyTree item at `path` from its `_METADATA` (and `_strings.json` names)."""
    doc = _load_json(fs.join(path, METADATA_FILE), METADATA_CAP, "Orbax tree metadata")
    where = fs.join(path, METADATA_FILE)
    tree = doc.get("tree_metadata") if isinstance(doc, dict) else None
    if not isinstance(tree, dict):
        raise CorruptCheckpoint(f"{where} has no tree_metadata object (is it an Orbax PyTree item?)")
    use_ocdbt, use_zarr3 = doc.get("use_ocdbt"), doc.get("use_zarr3", False)
    every_chunk = doc.get("store_array_data_equal_to_fill_value", False)
    if use_ocdbt is None:  # older metadata leaves it out: the files say
        use_ocdbt = fs.is_file(fs.join(path, OCDBT_MANIFEST))
    if not all(isinstance(flag, bool) for flag in (use_ocdbt, use_zarr3, every_chunk)):
        raise CorruptCheckpoint(f"{where}: use_ocdbt, use_zarr3 and store_array_data_equal_to_fill_value must be "
                                "true or false")
    leaves = []
    for keypath, entry in tree.items():
        here = f"{where}, leaf {excerpt(keypath)}"
        if not isinstance(entry, dict) or not isinstance(entry.get("key_metadata"), list) \
                or not isinstance(entry.get("value_metadata"), dict):
            raise CorruptCheckpoint(f"{here}: no key_metadata list and value_metadata object")
        keys = [_key_text(k, here)[0] for k in entry["key_metadata"]]
        value = entry["value_metadata"]
        value_type, skip = value.get("value_type"), value.get("skip_deserialize", False)
        if not isinstance(value_type, str) or not isinstance(skip, bool):
            raise CorruptCheckpoint(f"{here}: value_type must be text and skip_deserialize true or false")
        if skip or not keys:
            continue  # an empty container (None, {}, []): nothing stored
        param = ".".join(keys)
        leaves.append(Leaf("/".join(keys), _safe_param(param, here) if value_type != STRING_TYPE else param,
                           value_type))
    return Item(name, path, tuple(leaves), use_ocdbt, use_zarr3, every_chunk)


def read_strings(item: Item) -> dict[str, str]:
    """The values of an item's string leaves (`_strings.json`: parameter name -> text)."""
    path = fs.join(item.path, STRINGS_FILE)
    doc = _load_json(path, STRINGS_CAP, "Orbax strings file") if fs.is_file(path) else {}
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise CorruptCheckpoint(f"{path} is not an object of strings")
    return doc


def open_items(path: str) -> list[Item]:
    """The PyTree items of the checkpoint or item at `path`, names prefixed when there are several."""
    if is_item_dir(path):
        return [read_item(path)]
    names = item_dirs(path)
    if not names:
        raise NotFound(f"{path} holds no Orbax PyTree item (no {METADATA_FILE} in it or in a directory below it)")
    items = [read_item(fs.join(path, name), name) for name in names]
    if len(items) == 1:
        return items
    return [replace(item, leaves=tuple(replace(leaf, name=f"{item.name}/{leaf.name}") for leaf in item.leaves))
            for item in items]
