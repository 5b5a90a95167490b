"""Checkpoint series that are not TensorFlow prefixes: what `ls`, `latest`, `prune` and
`verify --all` count as a checkpoint besides `model.ckpt-N` bundles.

- Keras checkpoint files: `*.weights.h5`, `*.keras`, legacy `*.h5` / `*.hdf5` whose names carry a
  number (ModelCheckpoint's `w.{epoch:02d}-{val_loss:.2f}.weights.h5`). A family is the name with
  its numbers taken out (`w.#-#.weights.h5`); the step is the number that varies within the family
  (the first one when there is one file): a template that also prints a metric still has the epoch
  as its step. A file is a member only when its bytes show a Keras file (formats/keras/probe.py:
  Keras 3 or legacy Keras HDF5, a Keras 3 zip), never by its name: a plain HDF5 file written with
  h5py is none. Keras writes straight to the final name, so a member is complete only when its
  bytes end where its HDF5 superblock or zip directory says; one `cut_short` is an interrupted
  save's leftover (what `prune --clean` may remove).
- SavedModel export versions (TF Serving's `model_base_path/<version>/`, Estimator exporters):
  numeric subdirectories holding `saved_model.pb`, complete with every variables shard their index
  names; `temp-<n>` directories are an exporter's debris when they hold what an exporter writes.
- Step directories: Orbax `<step>/` (told by `_CHECKPOINT_METADATA`, `commit_success.txt`, the v1
  API's `orbax.checkpoint` marker or an item's `_METADATA`), committed with `_CHECKPOINT_METADATA`
  or `commit_success.txt` inside; `*.orbax-checkpoint-tmp*` is debris when it holds what Orbax writes) and the HF Trainer's
  `checkpoint-<step>/` (with its `trainer_state.json`, and weights whose bytes are whole).

A directory member is deletable only when it is complete and holds nothing but what its framework
writes (`unexpected` names what else is there): such a directory is reported and kept. Debris is
only what its writer's temporary naming *and* contents show (`Debris.problem` says why not).
Nothing here deletes; prune plans from `Member.deletable`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Container

from ckpttool.errors import BadInput, CkptError
from ckpttool.formats.damage import Damage
from ckpttool.formats.keras import probe as keras_probe
from ckpttool.formats.tf.shards import missing_shard_ids
from ckpttool.formats.tf.shards import data_shard, shard_count
from ckpttool.storage import fs
from ckpttool.text import excerpt

class _LazyPattern:
    """A regular expression compiled on first use: listing a plain TF directory (every `ls`, `latest`)
    imports this module, and the Hugging Face file list alone takes milliseconds to compile. Names
    end at `\\Z`, never `$`, which also matches before a final newline (`temp-4\\n` is no
    exporter's)."""

    def __init__(self, pattern: str):
        self.pattern, self._compiled = pattern, None

    def __getattr__(self, name: str):
        if self._compiled is None:
            self._compiled = re.compile(self.pattern)
        return getattr(self._compiled, name)


KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5", ".hdf5")
KERAS_ENDINGS = (".h5", ".keras", ".hdf5")  # what every KERAS_SUFFIXES name ends with
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_SAVED_MODEL_FILES = {"saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "keras_metadata.pb"}
_SAVED_MODEL_DIRS = {"variables", "assets", "assets.extra"}
_VARIABLES_RE = _LazyPattern(r"^variables\.(index|data-\d{5}-of-\d{5})\Z")
# What an exporter's SavedModel builder leaves in variables/ while its Saver writes (a data file's
# `.tempstate` before its rename, a sharded save's `variables_temp_<32 hex>/` of part files).
_EXPORTER_VARIABLES_RE = _LazyPattern(
    r"^(variables\.(index|data-\d{5}-of-\d{5})(\.tempstate\d+)?|variables_temp(_[0-9a-f]{32})?"
    r"|variables_temp(_[0-9a-f]{32})?/part-\d{5}-of-\d{5}\.(index|data-\d{5}-of-\d{5})(\.tempstate\d+)?)\Z")
ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "commit_success.txt")
# The v1 API's marker: names a directory an Orbax checkpoint from its creation, before the commit
# (so it says what the directory is, never that it is complete).
ORBAX_V1_MARKER = "orbax.checkpoint"
ORBAX_TMP_RE = _LazyPattern(r"\.orbax-checkpoint-tmp(-\d+)?\Z")
EXPORTER_TMP_RE = _LazyPattern(r"^temp-\d+\Z")
HF_STEP_RE = _LazyPattern(r"^checkpoint-(\d+)\Z")
# What the HF Trainer (and the model/tokenizer/processor it saves with it) writes into checkpoint-<step>/.
_HF_FILE_RE = _LazyPattern(
    r"^(trainer_state\.json|training_args\.bin|optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth"
    r"|config\.json|generation_config\.json|preprocessor_config\.json|processor_config\.json|chat_template\.(jinja|json)"
    r"|(pytorch_model|model|adapter_model|tf_model|flax_model)(-\d{5}-of-\d{5})?\.(bin|safetensors|h5|msgpack)"
    r"|(pytorch_model|model)\.(bin|safetensors)\.index\.json|adapter_config\.json"
    r"|tokenizer(_config)?\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt"
    r"|spiece\.model|sentencepiece\.bpe\.model|tokenizer\.model|README\.md)\Z")
_HF_DIR_RE = _LazyPattern(r"^(global_step\d+|pytorch_model_fsdp_\d+|optimizer_\d+)\Z")  # DeepSpeed / FSDP state
_HF_WEIGHTS_RE = _LazyPattern(r"^(pytorch_model|model|adapter_model|tf_model)(-\d{5}-of-\d{5})?\.(safetensors|h5)\Z")
# What Orbax (0.5 and later: OCDBT; TensorStore's zarr arrays before) writes inside an item directory
# of a step, by path below the item: its metadata files, OCDBT's manifest and data files, zarr
# arrays' metadata and chunks. Every other name is not Orbax's.
_ORBAX_ITEM_FILE_RE = _LazyPattern(
    r"^(_[^/]+|manifest\.ocdbt|commit_success\.txt|metadata|d/[0-9a-f]+"
    r"|ocdbt\.process_\d+/(manifest\.ocdbt|d/[0-9a-f]+)|array_metadatas/process_\d+"
    r"|[^/]+/(\.zarray|\.zattrs|\.zgroup|zarr\.json|(c/)?\d+([./]\d+)*))\Z")
_ORBAX_ITEM_DIR_RE = _LazyPattern(r"^(d|ocdbt\.process_\d+(/d)?|array_metadatas|[^/]+(/c)?(/\d+)*)\Z")
_MAX_ENTRIES = 100_000  # a directory member larger than this is not looked through: kept
_WRITERS = {"exporter_tmp": "an exporter", "orbax_tmp": "Orbax"}
KIND_NAMES = {"keras": "Keras checkpoint", "savedmodel": "SavedModel export", "orbax": "Orbax step",
              "hf": "HF Trainer checkpoint", "orbax_tmp": "Orbax temporary", "exporter_tmp": "exporter temporary"}
COMPLETE_WHEN = {"savedmodel": "saved_model.pb, and variables/variables.index with every data shard it names "
                               "when it has variables",
                 "orbax": "commit marker _CHECKPOINT_METADATA or commit_success.txt",
                 "hf": "trainer_state.json, and whole weights",
                 "keras": "bytes that end where its HDF5 superblock or zip directory says"}
# Removed after everything else in a directory member, in this order: a prune interrupted half way
# leaves the member still recognised as complete (and holding only its framework's files), so the
# journal's next run finishes it instead of refusing an incomplete directory.
LAST_FILES = {"savedmodel": ("variables/variables.index", "saved_model.pbtxt", "saved_model.pb"),
              "orbax": ORBAX_MARKERS, "hf": ("trainer_state.json",)}


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # "keras" | "savedmodel" | "orbax" | "hf"
    family: str
    step: int | None
    path: str
    is_dir: bool
    size_bytes: int
    mtime: float
    complete: bool
    unexpected: tuple[str, ...] = ()  # what a directory holds besides its framework's files
    problem: str | None = None  # why it is not complete
    cut_short: bool = False  # a file its bytes show was cut short (an interrupted save's leftover)
    too_deep: str | None = None  # a directory nested deeper than ckpttool removes (never deleted): how deep

    @property
    def deletable(self) -> bool:
        return self.complete and not self.unexpected and not self.too_deep

    @property
    def keras_epochs(self) -> bool:
        """ModelCheckpoint numbers its files by epoch from 1 (metric logs count from 0)."""
        return self.kind == "keras"


@dataclass(frozen=True)
class Debris:
    path: str
    kind: str  # "orbax_tmp" | "exporter_tmp"
    size_bytes: int
    mtime: float
    problem: str | None = None  # why it is not provably its writer's debris (then never deleted)


def keras_stem(name: str) -> str | None:
    """The name without its Keras suffix, or None when it has none."""
    for suffix in KERAS_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _probe(entry: fs.Entry) -> keras_probe.Probe:
    try:
        return keras_probe.probe_keras_file(entry.path, entry.size)
    except (CkptError, OSError) as exc:
        return keras_probe.Probe(None, None, undecided=f"it cannot be read ({exc})")


def keras_members(directory: str, entries: list[fs.Entry]) -> tuple[list[Member], list[tuple[str, str]]]:
    """The Keras checkpoint files among `entries` (regular files only, their bytes showing a Keras
    file), steps chosen per family; and (path, why) for each file named like one whose bytes tell
    no kind (damaged before its kind shows): never a member, to be reported. A file whose bytes
    show another kind (plain HDF5, any other file) is neither."""
    named = [(entry, stem, numbers) for entry in entries if entry.kind == "file"
             and (stem := keras_stem(entry.name)) is not None
             and (numbers := _NUMBER_RE.findall(stem))]  # `model.weights.h5`: a file, not a series member
    if len(named) > 1 and fs.is_url(directory):  # a request or two each, waiting on the network
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            probes = list(pool.map(_probe, [entry for entry, _stem, _numbers in named]))
    else:
        probes = [_probe(entry) for entry, _stem, _numbers in named]
    candidates: dict[str, list[tuple[fs.Entry, list[str], keras_probe.Probe]]] = {}
    unrecognised = []
    for (entry, stem, numbers), probe in zip(named, probes):
        if probe.is_keras:
            family = _NUMBER_RE.sub("#", stem) + entry.name[len(stem):]
            candidates.setdefault(family, []).append((entry, numbers, probe))
        elif probe.kind is None:
            damage = f"; {probe.problem}" if probe.problem and probe.problem != probe.undecided else ""
            unrecognised.append((entry.path, f"{excerpt(entry.name)} is named like a Keras checkpoint, but its "
                                             f"bytes do not show one ({probe.undecided}{damage}): not counted, "
                                             "never deleted"))
    members = []
    for family, files in candidates.items():
        position = _varying_position([(entry, numbers) for entry, numbers, _found in files])
        for entry, numbers, probe in files:
            step_text = numbers[position] if position < len(numbers) else numbers[0]
            step = int(step_text) if step_text.isdecimal() else None
            members.append(Member(entry.name, "keras", family, step, entry.path, False, entry.size,
                                  entry.mtime, probe.problem is None, problem=probe.problem,
                                  cut_short=probe.cut_short))
    return members, unrecognised


def _varying_position(files: list[tuple[fs.Entry, list[str]]]) -> int:
    """The first number position whose values differ across the family and are whole numbers."""
    if len(files) < 2:
        return 0
    width = min(len(numbers) for _entry, numbers in files)
    for position in range(width):
        values = {numbers[position] for _entry, numbers in files}
        if len(values) > 1 and all(v.isdecimal() for v in values):
            return position
    return 0


def _walk(path: str) -> tuple[list[tuple[str, str, int, float]], bool]:
    """(relative path, kind, size, mtime) of everything under `path`, without following links;
    False when it holds more than _MAX_ENTRIES (not looked through)."""
    found: list[tuple[str, str, int, float]] = []
    todo = [""]
    while todo:
        relative = todo.pop()
        try:
            entries = fs.list_dir(fs.join(path, relative) if relative else path)
        except (BadInput, OSError):
            found.append((relative, "unreadable", 0, 0.0))
            continue
        for entry in entries:
            if entry.name in ("", ".", "..") or "/" in entry.name:
                found.append((f"{relative}/{entry.name}" if relative else entry.name, "bad_name", 0, 0.0))
                continue
            child = f"{relative}/{entry.name}" if relative else entry.name
            found.append((child, entry.kind, entry.size, entry.mtime))
            if entry.kind == "dir":
                todo.append(child)
            if len(found) > _MAX_ENTRIES:
                return found, False
    return found, True


@dataclass(frozen=True)
class _Layout:
    """What a writer puts in a directory: the files and directories at its top, and what it puts
    below a top directory (`inside(top, rest, kind)`; None: anything)."""

    top_file: Callable[[str], bool]
    top_dirs: Container[str]
    inside: Callable[[str, str, str], bool] | None = None


def _unexpected(contents, layout: _Layout) -> list[str]:
    """Names under a member directory that its framework does not write (links and specials always)."""
    wrong = []
    for relative, kind, _size, _mtime in contents:
        top, _, rest = relative.partition("/")
        if kind not in ("file", "dir"):
            wrong.append(f"{relative} ({kind})")
        elif not rest:
            if (kind == "file" and not layout.top_file(top)) or (kind == "dir" and top not in layout.top_dirs):
                wrong.append(relative)
        elif layout.inside is not None and not layout.inside(top, rest, kind):
            wrong.append(relative)
    return wrong


def _saved_model_inside(top: str, rest: str, kind: str) -> bool:
    if top == "variables":
        return kind == "file" and _VARIABLES_RE.match(rest) is not None
    return True  # assets/ and assets.extra/ hold whatever the model brings


def _exporter_temp_inside(top: str, rest: str, kind: str) -> bool:
    if top == "variables":
        return _EXPORTER_VARIABLES_RE.match(rest) is not None and (kind == "dir") == ("." not in rest)
    return True


def _orbax_item_inside(_item: str, rest: str, kind: str) -> bool:
    return (_ORBAX_ITEM_DIR_RE if kind == "dir" else _ORBAX_ITEM_FILE_RE).match(rest) is not None


class _Matching:
    """Directory names allowed at a member's top, by pattern."""

    def __init__(self, pattern: re.Pattern):
        self.pattern = pattern

    def __contains__(self, name: str) -> bool:
        return self.pattern.match(name) is not None


# Orbax writes one subdirectory per item (`default`, `state`, `params`, any name the user gave the
# CheckpointManager): every plain directory name is allowed at the top.
_ORBAX_ITEMS = _Matching(re.compile(r"^[^/]+\Z"))
_SAVED_MODEL = _Layout(lambda n: n in _SAVED_MODEL_FILES, _SAVED_MODEL_DIRS, _saved_model_inside)
_EXPORTER_TEMP = _Layout(_SAVED_MODEL.top_file, _SAVED_MODEL_DIRS, _exporter_temp_inside)
_ORBAX = _Layout(lambda n: n in ORBAX_MARKERS or n == ORBAX_V1_MARKER or n.startswith("_"), _ORBAX_ITEMS)
_ORBAX_TEMP = _Layout(_ORBAX.top_file, _ORBAX_ITEMS, _orbax_item_inside)
_HF = _Layout(lambda n: _HF_FILE_RE.match(n) is not None, _Matching(_HF_DIR_RE))


def _saved_model_problem(path: str, files: dict[str, int]) -> str | None:
    """Why a SavedModel version is not complete: no graph, or variables/ without its index or a data
    shard the index names (in a bucket, whose indexes are not read, the shards' names say how many)."""
    if not files.keys() & {"saved_model.pb", "saved_model.pbtxt"}:
        return "it has no saved_model.pb"
    if not any(name.startswith("variables/") for name in files):
        return None  # a model without variables
    index = files.get("variables/variables.index")
    if index is None:
        return "variables/variables.index is missing"
    shards = [found for name in files if name.startswith("variables/variables.data-")
              and (found := data_shard(name)) is not None]
    if fs.is_url(path):
        counts = {count for _shard, count in shards}
        count = counts.pop() if len(counts) == 1 else None
    else:
        count = shard_count(fs.join(path, "variables", "variables.index"), index)
    if count is None:
        return ("variables/variables.index is incomplete or corrupt" if not fs.is_url(path)
                else "variables/ holds no data shards of one save")
    missing, how_many = missing_shard_ids(count, {shard for shard, of in shards if of == count}, 3)
    if not how_many:
        return None
    more = f" and {how_many - len(missing)} more" if how_many > len(missing) else ""
    return "variables/ is missing " + ", ".join(f"variables.data-{i:05d}-of-{count:05d}" for i in missing) + more


def _orbax_problem(_path: str, files: dict[str, int]) -> str | None:
    return None if any(marker in files for marker in ORBAX_MARKERS) else f"it has no {' or '.join(ORBAX_MARKERS)}"


def _hf_problem(path: str, files: dict[str, int]) -> str | None:
    """Why an HF Trainer step is not complete: no trainer_state.json (written last), or model weights
    whose bytes end before (or after) where their own header says."""
    if "trainer_state.json" not in files:
        return "it has no trainer_state.json"
    from ckpttool.formats.safetensors import size_problem

    for name in sorted(files):
        if _HF_WEIGHTS_RE.match(name):
            full = fs.join(path, name)
            problem = (size_problem(full) if name.endswith(".safetensors")
                       else keras_probe.whole_file_problem(full, files[name]))
            if problem:
                return f"{name}: {problem}"
    return None


def _directory_member(entry: fs.Entry, kind: str, family: str, step: int, problem_of, layout: _Layout) -> Member:
    contents, whole = _walk(entry.path)
    files = {relative: size for relative, k, size, _m in contents if k == "file"}
    problem = problem_of(entry.path, files) if whole else f"it holds more than {_MAX_ENTRIES} entries"
    unexpected = _unexpected(contents, layout) if whole else [f"more than {_MAX_ENTRIES} entries (not looked through)"]
    size = sum(files.values())
    mtime = max([m for _r, k, _s, m in contents if k == "file"] or [entry.mtime])
    return Member(entry.name, kind, family, step, entry.path, True, size, mtime, problem is None, tuple(unexpected),
                  problem=problem, too_deep=_too_deep(contents))


def _too_deep(contents) -> str | None:
    """Why a tree `_walk` listed is nested too deep for prune to remove it (fs.MAX_TREE_DEPTH: the
    apply would refuse it), or None: the plan says so, rather than the apply."""
    return fs.too_deep([relative for relative, *_rest in contents], [])


def _debris(entry: fs.Entry, kind: str) -> Debris:
    """A directory named as its writer names a temporary one; debris only when it holds nothing that
    writer does not make (an exporter's, something that only it makes: a user's empty `temp-2024/`
    is none)."""
    contents, whole = _walk(entry.path)
    files = [(size, mtime) for _r, k, size, mtime in contents if k == "file"]
    # The directory's own time too: a save that has just made it has written nothing yet.
    size, mtime = sum(s for s, _m in files), max([m for _s, m in files] + [entry.mtime])
    wrong = _unexpected(contents, _EXPORTER_TEMP if kind == "exporter_tmp" else _ORBAX_TEMP) if whole else [
        f"more than {_MAX_ENTRIES} entries"]
    problem = None
    if wrong:
        shown = ", ".join(excerpt(w) for w in wrong[:3]) + (", ..." if len(wrong) > 3 else "")
        problem = f"it holds {shown}, which {_WRITERS[kind]} does not write"
    elif kind == "exporter_tmp" and not any(relative.partition("/")[0] == "variables" or relative in _SAVED_MODEL_FILES
                                            for relative, _k, _s, _m in contents):
        problem = "nothing in it shows an exporter made it (no saved_model.pb, no variables/)"
    return Debris(entry.path, kind, size, mtime, problem or _too_deep(contents))


def directory_members(entries: list[fs.Entry]) -> tuple[list[Member], list[Debris]]:
    """SavedModel export versions and step directories among `entries`, and directories named as
    their writers name temporary ones (debris unless `problem` says why not)."""
    members: list[Member] = []
    debris: list[Debris] = []
    for entry in entries:
        if entry.kind != "dir":
            continue
        name = entry.name
        temporary = is_debris_name(name)
        if temporary:
            debris.append(_debris(entry, temporary))
            continue
        hf = HF_STEP_RE.match(name)
        if hf:
            members.append(_directory_member(entry, "hf", "checkpoint", int(hf[1]), _hf_problem, _HF))
            continue
        if not name.isdecimal():
            continue
        inner = _list_names(entry.path)
        if inner & {"saved_model.pb", "saved_model.pbtxt"}:
            members.append(_directory_member(entry, "savedmodel", "savedmodel", int(name), _saved_model_problem,
                                             _SAVED_MODEL))
        elif inner & {*ORBAX_MARKERS, ORBAX_V1_MARKER} or _looks_like_orbax(entry.path, inner):
            members.append(_directory_member(entry, "orbax", "orbax", int(name), _orbax_problem, _ORBAX))
    return members, debris


def _looks_like_orbax(path: str, inner: set[str]) -> bool:
    """An uncommitted Orbax step (no marker yet): an item directory with Orbax's `_METADATA`."""
    return any(fs.is_file(fs.join(path, name, "_METADATA")) for name in sorted(inner)[:16])


def _list_names(path: str) -> set[str]:
    try:
        return {e.name for e in fs.list_dir(path)}
    except (BadInput, OSError):
        return set()


def is_debris_name(name: str) -> str | None:
    """The debris kind a directory named `name` is by its name ("orbax_tmp", "exporter_tmp"), or None."""
    if ORBAX_TMP_RE.search(name):
        return "orbax_tmp"
    return "exporter_tmp" if EXPORTER_TMP_RE.match(name) else None


def plain_tree(path: str) -> tuple[list[str], list[str], str | None]:
    """(files, directories, None) under directory `path` as relative paths, deepest directories
    first; or why it is not only plain files and directories (a link, a special file, a hostile
    name, an unreadable or too large directory): such a tree is never deleted."""
    contents, whole = _walk(path)
    if not whole:
        return [], [], f"more than {_MAX_ENTRIES} entries"
    files, dirs = [], []
    for relative, kind, _size, _mtime in contents:
        if kind == "file":
            files.append(relative)
        elif kind == "dir":
            dirs.append(relative)
        else:
            return [], [], f"{relative} is {'a symbolic link' if kind == 'link' else 'not a plain file'} ({kind})"
    dirs.sort(key=lambda d: (-d.count("/"), d))
    return files, dirs, None


def is_step_directory(name: str, files: list[str]) -> bool:
    """Whether a directory named `name` holding `files` is a SavedModel version or a committed Orbax
    step by its name and markers alone (to find the directories holding a series, without reading)."""
    return name.isdecimal() and any(f in files for f in ("saved_model.pb", "saved_model.pbtxt", ORBAX_V1_MARKER)
                                    + ORBAX_MARKERS)


def names_a_series(dirs: list[str], files: list[str]) -> bool:
    """Whether a directory's names promise a series by themselves (HF `checkpoint-<step>/`, a Keras
    file with a number in its name): `find_checkpoint_dirs` then lists it, its scan says the rest."""
    return any(HF_STEP_RE.match(d) for d in dirs) or any(
        (stem := keras_stem(name)) is not None and _NUMBER_RE.search(stem) for name in files)


def hf_best_checkpoint(member_path: str) -> tuple[str | None, Damage | None]:
    """The `checkpoint-<step>` that the HF Trainer's trainer_state.json in `member_path` names as
    `best_model_checkpoint` (the Trainer never rotates it away), or None (none, or unreadable); and
    the damage met reading the file (then the best may be unknown or another one: prune refuses to
    delete by it unless told). The file is read in bounded memory (formats/trainer_state: a long
    run's log_history is tens of MB)."""
    from ckpttool.formats.trainer_state import best_model_checkpoint

    best, damage = best_model_checkpoint(fs.join(member_path, "trainer_state.json"))
    if not isinstance(best, str):
        return None, damage
    name = best.rstrip("/").replace("\\", "/").rpartition("/")[2]
    return (name if HF_STEP_RE.match(name) else None), damage
