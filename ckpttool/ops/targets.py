"""Turns any TARGET a user may type into a checkpoint to read (DESIGN.md
"Targets"): a prefix, one of its files, a run directory, or a SavedModel.

Graphs are TARGETs too, read as their Const nodes (format "graphdef"): a GraphDef `.pb`; a `.meta`
with no checkpoint beside it (said on stderr: `model.ckpt-50.meta` still means the checkpoint
`model.ckpt-50` when that exists); a `saved_model.pb` named directly whose SavedModel has no
variables. `graph=True` (the commands' `--graph`) reads the graph of any TARGET instead of its
variables: a SavedModel's saved_model.pb, a checkpoint's .meta.

An Orbax checkpoint (a step directory) or one of its items is a TARGET by its metadata files
(formats/orbax/tree.py), format "orbax"; a run directory of Orbax steps is its latest step."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from ckpttool.errors import NotFound, Unsupported
from ckpttool.storage import fs
from ckpttool.formats.orbax.tree import is_orbax_dir
from ckpttool.formats.reader import (GRAPH_FORMAT, PYTORCH_FORMAT, detect_format, keras_file_format,
                                     pytorch_file_format, weights_file_format)
from ckpttool.formats.tf.shards import split_v1_pattern, v1_pattern, v1_shard
from ckpttool.formats.tf.state import STATE_FILENAME
from ckpttool.formats.tf.shards import checkpoint_exists
from ckpttool.formats.tf.table import is_table_file

_SUFFIX_RE = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt", "saved_model.cpb")


@dataclass(frozen=True)
class Target:
    prefix: str
    # "v2" | "v1" | "safetensors" | "npz" | "keras" | "keras_h5" | "pytorch" | "orbax" | "graphdef" (a graph's
    # constants: `prefix` is the graph file) | "none" (a graph-only SavedModel, with graph_only_ok)
    format: str
    meta_path: str | None  # the graph beside it: P.meta or saved_model.pb
    saved_model_dir: str | None
    warnings: tuple[str, ...] = ()  # e.g. how a directory's latest checkpoint had to be found
    directory: str | None = None  # the directory given for it (run, SavedModel), as given: say what it chose
    min_elements: int | None = None  # graphdef: constants with fewer elements are left out (None: the default)


def _saved_model_graph(directory: str, names: set[str] | None = None) -> str | None:
    """The graph file of a SavedModel directory; `names`, the directory's listing, saves a look-up each."""
    for name in SAVED_MODEL_FILES:
        path = fs.join(directory, name)
        if name in names if names is not None else fs.is_file(path):
            return path
    return None


def _saved_model_target(directory: str, graph: str, graph_only_ok: bool = False) -> Target:
    prefix = fs.join(directory, "variables", "variables")
    if not fs.is_file(prefix + ".index"):
        if graph_only_ok:  # TF-Transform's transform_fn, small serving models: TensorFlow loads them so
            return Target(prefix, "none", graph, directory,
                          (f"SavedModel {directory} has no variables (graph only): nothing to list",))
        raise NotFound(f"SavedModel {directory} has no variables (looked for {prefix}.index)",
                       hint="--graph reads the constants of its graph")
    return Target(prefix, "v2", graph, directory)


def _variables_without_graph(directory: str) -> Target | None:
    """A SavedModel folder that lost its saved_model.pb still holds a readable variables/ bundle."""
    prefix = fs.join(directory, "variables", "variables")
    if not fs.is_file(prefix + ".index"):
        return None
    return Target(prefix, "v2", None, directory,
                  (f"{directory} has no saved_model.pb; reading its variables/variables",))


def open_target(target: Target):
    """The reader of a resolved target (formats/reader.py), with its options."""
    from ckpttool.formats.reader import open_checkpoint

    return open_checkpoint(target.prefix, target.format, target.min_elements)


def resolve_target(path: str, *, graph_only_ok: bool = False, graph: bool = False,
                   min_elements: int | None = None) -> Target:
    """`graph_only_ok`: a SavedModel without variables resolves (format "none") instead of failing.
    `graph`: the constants of the TARGET's graph (its saved_model.pb or .meta) rather than its variables;
    `min_elements`: of a graph's constants, those with fewer elements are left out."""
    if graph:
        return _graph_target(path, min_elements)
    target = _resolve(path, graph_only_ok)
    return replace(target, min_elements=min_elements) if target.format == GRAPH_FORMAT else target


def _graph_target(path: str, min_elements: int | None) -> Target:
    target = _resolve(path, True)
    if target.format == GRAPH_FORMAT:
        return replace(target, min_elements=min_elements)
    if target.meta_path is None:
        raise NotFound(f"no graph for {path} (looked for {target.prefix}.meta and a SavedModel's saved_model.pb)")
    if not target.meta_path.endswith(".pb") and not target.meta_path.endswith(".meta"):
        raise Unsupported(f"{target.meta_path}: the constants of a text or chunked graph are not read",
                          hint="`ckpttool export-json` shows the graph")
    return Target(target.meta_path, GRAPH_FORMAT, target.meta_path, target.saved_model_dir, target.warnings,
                  target.directory, min_elements)


def _resolve(path: str, graph_only_ok: bool) -> Target:
    if fs.is_url(path):
        path = fs.absolute(path)
    weights_format = weights_file_format(path)
    if weights_format:  # a weights file (safetensors, .npz, Keras 3), named so: its bytes must agree
        if not fs.exists(path):
            raise NotFound(f"no {weights_format} file at {path}")
        if weights_format == "keras":  # Keras 3 or legacy HDF5: the bytes say which
            weights_format = keras_file_format(path)
        if weights_format != "keras_h5":  # a legacy HDF5 model may be named .keras: it is read as one
            _refuse_misnamed_file(path)
        return Target(path, weights_format, None, None)
    is_directory, names = _directory_listing(path)
    if is_directory and is_orbax_dir(path):  # an Orbax step or item, by its metadata files
        return Target(path, "orbax", None, None)
    if is_directory:
        found = _directory_target(path, graph_only_ok, names)
        return found if found.format == "orbax" and found.prefix == path else replace(found, directory=path)
    if fs.basename(path) in SAVED_MODEL_FILES and fs.is_file(path):
        directory = fs.dirname(path) or "."
        if path.endswith(".pb") and not fs.is_file(fs.join(directory, "variables", "variables.index")):
            return Target(path, GRAPH_FORMAT, path, directory,
                          (f"SavedModel {directory} has no variables: reading the constants of {path}",))
        return _saved_model_target(directory, path, graph_only_ok)
    if fs.basename(path) == STATE_FILENAME and fs.is_file(path):  # run/checkpoint: the run's latest
        return _resolve(fs.dirname(path) or ".", graph_only_ok)
    match = _SUFFIX_RE.search(path)
    if not match and pytorch_file_format(path):  # by its bytes (.pt, .pth, .bin or any name) or a set's index
        return Target(path, PYTORCH_FORMAT, None, None)
    if match:
        prefix = path[: match.start()]
        if checkpoint_exists(prefix):
            return _prefix_target(prefix)
        if match[1] == "meta" and fs.is_file(path):
            return _lone_meta_target(path, prefix)
    if path.endswith(".pb") and fs.is_file(path) and not fs.is_file(path + ".index"):
        return Target(path, GRAPH_FORMAT, path, None)
    if path.endswith(".pbtxt") and fs.is_file(path) and not fs.is_file(path + ".index"):
        raise Unsupported(f"{path} is a text graph: constants are read from binary graphs (.pb) only",
                          hint="`ckpttool export-json` shows it")
    shard = v1_shard(fs.basename(path))
    if shard and fs.is_file(path):  # one file of a sharded V1 save: the checkpoint is all of them
        pattern = fs.join(fs.dirname(path), v1_pattern(shard[0], shard[2])) if fs.dirname(path) else \
            v1_pattern(shard[0], shard[2])
        if detect_format(pattern) == "v1":
            return _prefix_target(pattern)
    if checkpoint_exists(path):
        if not fs.is_file(path + ".index") and fs.is_file(path):  # a file that is no V2 index: what is it?
            _refuse_foreign_file(path)
        return _prefix_target(path)
    from ckpttool.ops.runs.hints import steps_in_directory

    raise NotFound(f"no checkpoint at {path} (looked for {path}.index, a V1 checkpoint file {path}, "
                   "a run directory and a SavedModel)", hint=steps_in_directory(path))


def _lone_meta_target(path: str, prefix: str) -> Target:
    """A `.meta` whose checkpoint is not beside it: the checkpoint of a session bundle's sharded V1
    save (`export-00000-of-00002` beside `export.meta`) when there is one, else the graph's constants."""
    directory, stem = fs.dirname(path), fs.basename(prefix)
    try:
        names = [entry.name for entry in fs.list_dir(directory or ".")]
    except (NotFound, OSError):
        names = []
    for name in sorted(names):
        shard = v1_shard(name)
        if shard and shard[0] == stem:
            pattern = v1_pattern(stem, shard[2])
            candidate = fs.join(directory, pattern) if directory else pattern
            if checkpoint_exists(candidate):
                return _prefix_target(candidate)
    return Target(path, GRAPH_FORMAT, path, None,
                  (f"no checkpoint beside {path} (looked for {prefix}.index): reading the constants of its graph",))


def _directory_listing(path: str) -> tuple[bool, set[str] | None]:
    """Whether `path` is a directory, and for a bucket its names (one listing answers both; a local
    directory's names are looked up one by one instead, as listing it could be long)."""
    if not fs.is_url(path):
        return os.path.isdir(path), None
    try:
        names = {entry.name for entry in fs.list_dir(path)}
    except NotFound:
        return False, None  # not a "directory" (no object under path/): a prefix or a file
    return bool(names), names


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# What each weights file name promises its first bytes are (None: not a zip, not HDF5).
_EXPECTED_KIND = ((".weights.h5", "hdf5"), (".keras", "zip"), (".npz", "zip"), (".safetensors", None))


def _kind_of_bytes(head: bytes) -> str | None:
    return "hdf5" if head == _HDF5_MAGIC else "zip" if head[:4] in _ZIP_MAGICS else None


def _refuse_misnamed_file(path: str) -> None:
    """A weights file is what its bytes say, not its name: a legacy Keras HDF5 model named
    model.keras is an HDF5 file (exit 3, unsupported), never a damaged zip archive."""
    expected = next((kind for suffix, kind in _EXPECTED_KIND if path.endswith(suffix)), "unknown")
    if expected == "unknown" or not fs.is_file(path):
        return  # a sharded safetensors index (JSON), or a directory: its reader says what is wrong
    entry = fs.stat_path(path)
    head = fs.read_range(path, 0, 8, "file") if entry is not None and entry.size >= 8 else b""
    actual = _kind_of_bytes(head)
    if actual != expected and actual is not None:
        _refuse_foreign_file(path, fs.basename(path).rsplit(".", 1)[-1])


def _refuse_foreign_file(path: str, named: str | None = None) -> None:
    """A file that is no checkpoint but something people often take for one (an HDF5
    Keras 2 model, a PyTorch zip, a frozen GraphDef) is named as what it is. `named`: the
    format its name claims (a .keras file that is HDF5), said instead of 'a checkpoint'."""
    head = fs.read_range(path, 0, 8, "file")
    claimed = f"a .{named} file" if named else "a TensorFlow checkpoint"
    if head == _HDF5_MAGIC:
        raise Unsupported(f"{path} is an HDF5 file, not {claimed}",
                          hint="ckpttool reads Keras 3 weights named *.weights.h5 or *.keras; a Keras 2 .h5 model "
                               "can be loaded in Keras and saved with save_weights('model.weights.h5')")
    if head[:4] in _ZIP_MAGICS:
        members = _zip_members(path)
        if "model.weights.h5" in members:  # (a PyTorch zip never gets here: it is read, by its bytes)
            what, hint = "a zip archive holding model.weights.h5", "a Keras 3 model: name it *.keras"
        else:
            what, hint = "a zip archive", None
        raise Unsupported(f"{path} is {what}, not {claimed}", hint=hint)
    if named is None and not is_table_file(path) and (nodes := _graph_def_nodes(path)):
        raise Unsupported(f"{path} is a TensorFlow GraphDef ({nodes} nodes; a frozen graph?), not a checkpoint: "
                          "ckpttool does not read its constants as variables",
                          hint=f"ckpttool export-json {path} shows the graph (JSON, or --format pbtxt)")


def _graph_def_nodes(path: str) -> int:
    """How many nodes `path` holds when it parses as a GraphDef whose nodes all have an op (a few
    random bytes can parse as an empty message; they cannot make named nodes with ops); else 0."""
    from ckpttool.formats.tf.graphs.meta import GRAPH_FILE_CAP
    from ckpttool.formats.tf.protos import graph_pb2

    try:
        data = fs.read_capped(path, GRAPH_FILE_CAP, "graph file")
        graph = graph_pb2.GraphDef()
        graph.ParseFromString(data)
    except Exception:  # CkptError, MemoryError, protobuf's DecodeError: not a GraphDef
        return 0
    ok = len(graph.node) > 0 and all(node.op and node.name for node in graph.node)
    return len(graph.node) if ok else 0


def _zip_members(path: str) -> list[str]:
    import zipfile

    try:
        with fs.open_input(path, "zip archive") as handle, zipfile.ZipFile(handle) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return []


def _directory_target(path: str, graph_only_ok: bool, names: set[str] | None) -> Target:
    from ckpttool.ops.runs.latest import find_latest

    graph = _saved_model_graph(path, names)
    if graph:
        return _saved_model_target(path, graph, graph_only_ok)
    latest = find_latest(path)
    if latest.prefix is None and (orphan := _variables_without_graph(path)):
        return orphan
    if latest.prefix is None and is_orbax_dir(path, unmarked=True):  # items without a step's marker
        return Target(path, "orbax", None, None)
    if latest.prefix is None:
        raise NotFound(f"no checkpoint in directory {path} (looked for a state file, *.index files, "
                       "V1 checkpoint files and saved_model.pb)")
    # The latest is always directly in the directory: named from the path as given.
    named = fs.join(path, fs.basename(latest.prefix))
    if latest.format == "keras":  # a series member (ops/runs/series.py): a Keras checkpoint file
        return Target(named, "keras", None, None, latest.warnings, path)
    if latest.format == "savedmodel":
        return replace(_saved_model_target(named, fs.join(named, "saved_model.pb"), graph_only_ok),
                       warnings=latest.warnings, directory=path)
    if latest.format == "orbax":
        return Target(named, "orbax", None, None, latest.warnings, path)
    if latest.format == "hf":
        raise Unsupported(f"the latest checkpoint in {path} is {fs.basename(latest.prefix)}/, an HF Trainer "
                          "checkpoint, which ckpttool lists and prunes but does not read")
    return _prefix_target(named, latest.warnings)


def _prefix_target(prefix: str, warnings: tuple[str, ...] = ()) -> Target:
    fmt = detect_format(prefix)
    pattern = split_v1_pattern(fs.basename(prefix))
    # A sharded V1 save P-?????-of-N keeps its graph in P.meta (a session bundle's export.meta).
    meta = (prefix[: len(prefix) - len(fs.basename(prefix))] + pattern[0] if pattern else prefix) + ".meta"
    return Target(prefix, fmt, meta if fs.is_file(meta) else None, None, warnings)
