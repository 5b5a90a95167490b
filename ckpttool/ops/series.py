"""Checkpoint series that are not TensorFlow prefixes: what `ls`, `latest`, `prune` and
`verify --all` count as a checkpoint besides `model.ckpt-N` bundles.

- Keras checkpoint files: `*.weights.h5`, `*.keras`, legacy `*.h5` / `*.hdf5` whose names carry a
  number (ModelCheckpoint's `w.{epoch:02d}-{val_loss:.2f}.weights.h5`). A family is the name with
  its numbers taken out (`w.#-#.weights.h5`); the step is the number that varies within the family
  (the first one when there is one file): a template that also prints a metric still has the epoch
  as its step. A file is a member only when its bytes are of its kind (HDF5 or zip magic).
- SavedModel export versions (TF Serving's `model_base_path/<version>/`, Estimator exporters):
  numeric subdirectories holding `saved_model.pb`; `temp-<n>` directories are an exporter's debris.
- Step directories: Orbax `<step>/` committed (`_CHECKPOINT_METADATA` or `commit_success.txt`
  inside; `*.orbax-checkpoint-tmp*` is debris) and the HF Trainer's `checkpoint-<step>/` (with its
  `trainer_state.json`).

A directory member is deletable only when it is complete and holds nothing but what its framework
writes (`unexpected` names what else is there): such a directory is reported and kept. Nothing here
deletes; prune plans from `Member.deletable`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ckpttool.errors import BadInput
from ckpttool.storage import fs

class _LazyPattern:
    """A regular expression compiled on first use: listing a plain TF directory (every `ls`, `latest`)
    imports this module, and the Hugging Face file list alone takes milliseconds to compile."""

    def __init__(self, pattern: str):
        self.pattern, self._compiled = pattern, None

    def __getattr__(self, name: str):
        if self._compiled is None:
            self._compiled = re.compile(self.pattern)
        return getattr(self._compiled, name)


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5", ".hdf5")
KERAS_ENDINGS = (".h5", ".keras", ".hdf5")  # what every KERAS_SUFFIXES name ends with
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_SAVED_MODEL_FILES = {"saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "keras_metadata.pb"}
_SAVED_MODEL_DIRS = {"variables", "assets", "assets.extra"}
_VARIABLES_RE = _LazyPattern(r"^variables\.(index|data-\d{5}-of-\d{5})$")
ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "commit_success.txt")
ORBAX_TMP_RE = _LazyPattern(r"\.orbax-checkpoint-tmp(-\d+)?$")
EXPORTER_TMP_RE = _LazyPattern(r"^temp-\d+$")
HF_STEP_RE = _LazyPattern(r"^checkpoint-(\d+)$")
# What the HF Trainer (and the model/tokenizer/processor it saves with it) writes into checkpoint-<step>/.
_HF_FILE_RE = _LazyPattern(
    r"^(trainer_state\.json|training_args\.bin|optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth"
    r"|config\.json|generation_config\.json|preprocessor_config\.json|processor_config\.json|chat_template\.(jinja|json)"
    r"|(pytorch_model|model|adapter_model|tf_model|flax_model)(-\d{5}-of-\d{5})?\.(bin|safetensors|h5|msgpack)"
    r"|(pytorch_model|model)\.(bin|safetensors)\.index\.json|adapter_config\.json"
    r"|tokenizer(_config)?\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt"
    r"|spiece\.model|sentencepiece\.bpe\.model|tokenizer\.model|README\.md)$")
_HF_DIR_RE = _LazyPattern(r"^(global_step\d+|pytorch_model_fsdp_\d+|optimizer_\d+)$")  # DeepSpeed / FSDP state
_MAX_ENTRIES = 100_000  # a directory member larger than this is not looked through: kept
KIND_NAMES = {"keras": "Keras checkpoint", "savedmodel": "SavedModel export", "orbax": "Orbax step",
              "hf": "HF Trainer checkpoint", "orbax_tmp": "Orbax temporary", "exporter_tmp": "exporter temporary"}
COMPLETE_WHEN = {"savedmodel": "saved_model.pb, and variables/variables.index when it has variables",
                 "orbax": "commit marker _CHECKPOINT_METADATA or commit_success.txt",
                 "hf": "trainer_state.json", "keras": "HDF5 or zip bytes"}
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

    @property
    def deletable(self) -> bool:
        return self.complete and not self.unexpected

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


def keras_stem(name: str) -> str | None:
    """The name without its Keras suffix, or None when it has none."""
    for suffix in KERAS_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _keras_kind_ok(path: str, name: str) -> bool:
    try:
        head = fs.read_range(path, 0, 8, "Keras file")
    except (BadInput, OSError):
        return False
    return head.startswith(HDF5_MAGIC) or (name.endswith(".keras") and head.startswith(ZIP_MAGIC))


def keras_members(directory: str, entries: list[fs.Entry], check_magic: bool = True) -> list[Member]:
    """The Keras checkpoint files among `entries` (regular files only), steps chosen per family."""
    candidates: dict[str, list[tuple[fs.Entry, list[str]]]] = {}
    for entry in entries:
        if entry.kind != "file":
            continue
        stem = keras_stem(entry.name)
        if stem is None:
            continue
        numbers = _NUMBER_RE.findall(stem)
        if not numbers:
            continue  # `model.weights.h5`: a file, not a series member
        family = _NUMBER_RE.sub("#", stem) + entry.name[len(stem):]
        candidates.setdefault(family, []).append((entry, numbers))
    members = []
    for family, files in candidates.items():
        position = _varying_position(files)
        for entry, numbers in files:
            if check_magic and not _keras_kind_ok(entry.path, entry.name):
                continue
            step_text = numbers[position] if position < len(numbers) else numbers[0]
            step = int(step_text) if step_text.isdecimal() else None
            members.append(Member(entry.name, "keras", family, step, entry.path, False, entry.size,
                                  entry.mtime, True))
    return members


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


def _unexpected(contents, allowed_top_files, allowed_top_dirs, allowed_inside=None) -> list[str]:
    """Names under a member directory that its framework does not write (links and specials always)."""
    wrong = []
    for relative, kind, _size, _mtime in contents:
        top, _, rest = relative.partition("/")
        if kind not in ("file", "dir"):
            wrong.append(f"{relative} ({kind})")
        elif not rest:
            if (kind == "file" and not allowed_top_files(top)) or (kind == "dir" and top not in allowed_top_dirs):
                wrong.append(relative)
        elif allowed_inside is not None and not allowed_inside(top, rest, kind):
            wrong.append(relative)
    return wrong


def _saved_model_inside(top: str, rest: str, kind: str) -> bool:
    if top == "variables":
        return kind == "file" and _VARIABLES_RE.match(rest) is not None
    return True  # assets/ and assets.extra/ hold whatever the model brings


def _directory_member(entry: fs.Entry, kind: str, family: str, step: int, complete_marker,
                      allowed_files, allowed_dirs, allowed_inside=None) -> Member:
    contents, whole = _walk(entry.path)
    names = {relative for relative, k, _s, _m in contents if k == "file"}
    complete = whole and complete_marker(names)
    unexpected = _unexpected(contents, allowed_files, allowed_dirs, allowed_inside) if whole else [
        f"more than {_MAX_ENTRIES} entries (not looked through)"]
    size = sum(s for _r, k, s, _m in contents if k == "file")
    mtime = max([m for _r, k, _s, m in contents if k == "file"] or [entry.mtime])
    return Member(entry.name, kind, family, step, entry.path, True, size, mtime, complete, tuple(unexpected))


def directory_members(entries: list[fs.Entry]) -> tuple[list[Member], list[Debris]]:
    """SavedModel export versions and step directories among `entries`, and their frameworks' debris."""
    members: list[Member] = []
    debris: list[Debris] = []
    for entry in entries:
        if entry.kind != "dir":
            continue
        name = entry.name
        if ORBAX_TMP_RE.search(name) or (EXPORTER_TMP_RE.match(name)):
            size, mtime = _tree_size(entry.path)
            # The directory's own time too: a save that has just made it has written nothing yet.
            debris.append(Debris(entry.path, "orbax_tmp" if ORBAX_TMP_RE.search(name) else "exporter_tmp",
                                 size, max(mtime, entry.mtime)))
            continue
        hf = HF_STEP_RE.match(name)
        if hf:
            members.append(_directory_member(
                entry, "hf", "checkpoint", int(hf[1]), lambda files: "trainer_state.json" in files,
                lambda n: _HF_FILE_RE.match(n) is not None, _Matching(_HF_DIR_RE), None))
            continue
        if not name.isdecimal():
            continue
        inner = _list_names(entry.path)
        if inner & {"saved_model.pb", "saved_model.pbtxt"}:
            members.append(_directory_member(
                entry, "savedmodel", "savedmodel", int(name),
                lambda files: bool(files & {"saved_model.pb", "saved_model.pbtxt"}) and (
                    not any(f.startswith("variables/") for f in files) or "variables/variables.index" in files),
                lambda n: n in _SAVED_MODEL_FILES, _SAVED_MODEL_DIRS, _saved_model_inside))
        elif inner & set(ORBAX_MARKERS) or _looks_like_orbax(entry.path, inner):
            members.append(_directory_member(
                entry, "orbax", "orbax", int(name), lambda files: any(m in files for m in ORBAX_MARKERS),
                lambda n: n in ORBAX_MARKERS or n.startswith("_"), _ORBAX_ITEMS))
    return members, debris


class _Matching:
    """Directory names allowed at a member's top, by pattern."""

    def __init__(self, pattern: re.Pattern):
        self.pattern = pattern

    def __contains__(self, name: str) -> bool:
        return self.pattern.match(name) is not None


# Orbax writes one subdirectory per item (`default`, `state`, `params`, any name the user gave the
# CheckpointManager): every plain directory name is allowed at the top.
_ORBAX_ITEMS = _Matching(re.compile(r"^[^/]+$"))


def _looks_like_orbax(path: str, inner: set[str]) -> bool:
    """An uncommitted Orbax step (no marker yet): an item directory with Orbax's `_METADATA`."""
    return any(fs.is_file(fs.join(path, name, "_METADATA")) for name in sorted(inner)[:16])


def _list_names(path: str) -> set[str]:
    try:
        return {e.name for e in fs.list_dir(path)}
    except (BadInput, OSError):
        return set()


def _tree_size(path: str) -> tuple[int, float]:
    contents, _whole = _walk(path)
    files = [(s, m) for _r, k, s, m in contents if k == "file"]
    return sum(s for s, _m in files), max([m for _s, m in files] or [0.0])


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
    return name.isdecimal() and any(f in files for f in ("saved_model.pb", "saved_model.pbtxt") + ORBAX_MARKERS)


def names_a_series(dirs: list[str], files: list[str]) -> bool:
    """Whether a directory's names promise a series by themselves (HF `checkpoint-<step>/`, a Keras
    file with a number in its name): `find_checkpoint_dirs` then lists it, its scan says the rest."""
    return any(HF_STEP_RE.match(d) for d in dirs) or any(
        (stem := keras_stem(name)) is not None and _NUMBER_RE.search(stem) for name in files)


def hf_best_checkpoint(member_path: str) -> str | None:
    """The `checkpoint-<step>` that the HF Trainer's trainer_state.json in `member_path` names as
    `best_model_checkpoint` (the Trainer never rotates it away), or None (none, or unreadable). The
    file is read in bounded memory (formats/trainer_state: a long run's log_history is tens of MB)."""
    from ckpttool.formats.trainer_state import best_model_checkpoint

    best = best_model_checkpoint(fs.join(member_path, "trainer_state.json"))
    if not isinstance(best, str):
        return None
    name = best.rstrip("/").replace("\\", "/").rpartition("/")[2]
    return name if HF_STEP_RE.match(name) else None
