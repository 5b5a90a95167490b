"""`rename-vars`: write a new checkpoint with variables renamed; SRC is never modified.

Only the index changes: each entry keeps its bytes, so data shards are copied
(or hard-linked, never written through) and the cost is O(index) plus the
copy. TF2 object-based checkpoints also get a consistent object graph:
attribute checkpoint keys and the children's local names along renamed
object paths, so tf.train.Checkpoint.restore matches the new names.
"""
from __future__ import annotations

import bisect
import json
import os
import re
import time
from dataclasses import dataclass

from ckpttool.errors import BadInput, NotFound, Refused, UnknownVariable, Unsupported, UsageProblem
from ckpttool.formats import fs
from ckpttool.formats.atomic import commit_replacement, discard_replacement, prepare_replacement
from ckpttool.formats.bundle import Bundle, data_file_path, open_bundle
from ckpttool.formats.bundle_writer import (encode_strings, make_entry, remove_checkpoint_files, serialize_index,
                                             write_index)
from ckpttool.formats.dtypes import dtype_from_code
from ckpttool.formats.object_graph import node_paths, parse_object_graph
from ckpttool.formats.ordered_code import encode_slice_key
from ckpttool.formats.protos import checkpoint_pb2 as pb
from ckpttool.formats.state import CheckpointState
from ckpttool.formats.variables import OBJECT_GRAPH_KEY
from ckpttool.ops.destination import (check_parent_creatable, make_parents, refuse_writing_over_source,
                                      remove_empty)
from ckpttool.ops.patterns import compile_pattern
from ckpttool.ops.targets import resolve_target

EMA_SUFFIX = "/ExponentialMovingAverage"
MAP_FILE_CAP = 256 << 20  # a name per line: far more names than any checkpoint holds
_ATTRIBUTES = "/.ATTRIBUTES/"


@dataclass(frozen=True)
class RenameRules:
    maps: tuple[tuple[str, str], ...] = ()  # --map and --map-file, exact
    regexes: tuple[tuple[str, str], ...] = ()
    add_prefix: str | None = None
    strip_prefix: str | None = None
    ema: bool = False
    drop: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    drop_optimizer: bool = False  # leave out OPTIMIZER_PATTERNS
    sep: str | None = None  # replaces "/" in the new names, last (`.` for PyTorch-style names)

    @classmethod
    def from_options(cls, *, maps=(), map_file: str | None = None, regexes=(), add_prefix: str | None = None,
                     strip_prefix: str | None = None, ema: bool = False, drop=(), keep=(),
                     drop_optimizer: bool = False, sep: str | None = None) -> "RenameRules":
        """Rules from option values as typed: `OLD=NEW` texts for maps and regexes, a map file's path."""
        pairs = tuple(parse_pair(m, "--map") for m in maps or ())
        if map_file:
            pairs += read_map_file(map_file)
        return cls(pairs, tuple(parse_pair(r, "--regex") for r in regexes or ()), add_prefix, strip_prefix, ema,
                   tuple(drop or ()), tuple(keep or ()), drop_optimizer, sep)


# What --drop-optimizer leaves out (matched against source names):
OPTIMIZER_PATTERNS = (
    # TF1 slot variables, named after their variable: `dense/kernel/Adam`, `.../Momentum` ...
    r"/(Adam|Adam_1|AdamW|AdamW_1|Nadam|Nadam_1|LazyAdam|LazyAdam_1|Adamax|Adamax_1|Momentum|RMSProp|RMSProp_1"
    r"|Adagrad|AdagradDA|AdagradDA_1|ProximalAdagrad|Adadelta|Adadelta_1|Ftrl|Ftrl_1|adam_m|adam_v|LAMB|LAMB_1)$",
    r"(^|/)beta[12]_power(_\d+)?$",  # TF1 Adam's accumulators
    r"\.OPTIMIZER_SLOT/",  # TF2 object-based slots: `<var>/.OPTIMIZER_SLOT/optimizer/m/...`
    r"^(optimizer|opt)/",  # TF2 `Checkpoint(optimizer=...)` state; Keras 3 files' `optimizer/vars/N`
)


@dataclass(frozen=True)
class RenamePlan:
    source: str
    destination: str
    mapping: dict[str, str]  # every variable kept: source name -> destination name
    renamed: tuple[tuple[str, str], ...]
    dropped: tuple[str, ...]
    unchanged: int
    object_graph: bool  # a TF2 object graph will be rewritten


@dataclass(frozen=True)
class RenameResult:
    plan: RenamePlan
    bytes_written: int


def parse_pair(text: str, option: str) -> tuple[str, str]:
    if "=" not in text:
        raise UsageProblem(f"{option} takes OLD=NEW, got {text!r}")
    old, new = text.split("=", 1)
    return old, new


def read_map_file(path: str) -> tuple[tuple[str, str], ...]:
    """A JSON object {old: new}, or lines `old new` (blank lines and # comments skipped)."""
    try:
        text = fs.read_capped(path, MAP_FILE_CAP, "map file").decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"map file {path} is not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"map file {path} is not valid JSON: {exc}") from None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise BadInput(f"map file {path}: every key and value must be a string")
        return tuple(data.items())
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise BadInput(f"map file {path}, line {number}: expected `old new`")
        pairs.append((parts[0], parts[1]))
    return tuple(pairs)


def compute_mapping(names: list[str], rules: RenameRules) -> tuple[dict[str, str], list[str]]:
    """(kept source name -> new name, dropped names). Rules apply in DESIGN order:
    map, regex, add-prefix, strip-prefix, ema, sep; then drop/keep (and
    drop-optimizer) on source names."""
    known = set(names)
    exact = dict(rules.maps)
    unknown = [old for old in exact if old not in known]
    if unknown:
        raise UnknownVariable("no variable named " + ", ".join(repr(u) for u in unknown) + " in the source",
                              hint="list the names with `ckpttool inspect -q SRC`")
    regexes = [(compile_pattern(p, "--regex"), repl) for p, repl in rules.regexes]
    drops = [compile_pattern(p, "--drop") for p in rules.drop]
    drops += [re.compile(p) for p in OPTIMIZER_PATTERNS] if rules.drop_optimizer else []
    keeps = [compile_pattern(p, "--keep") for p in rules.keep]
    mapping: dict[str, str] = {}
    dropped: list[str] = []
    shadowed = {n[: -len(EMA_SUFFIX)] for n in names if rules.ema and n.endswith(EMA_SUFFIX)}
    for name in names:
        if any(r.search(name) for r in drops) or (keeps and not any(r.search(name) for r in keeps)):
            dropped.append(name)
            continue
        if rules.ema and name in shadowed:
            dropped.append(name)  # replaced by its moving average
            continue
        new = exact.get(name, name)
        for regex, repl in regexes:
            try:
                new = regex.sub(repl, new)
            except (re.error, IndexError) as exc:
                raise UsageProblem(f"bad --regex replacement {repl!r}: {exc}") from None
        if rules.add_prefix:
            new = rules.add_prefix + new
        if rules.strip_prefix and new.startswith(rules.strip_prefix):
            new = new[len(rules.strip_prefix):]
        if rules.ema and new.endswith(EMA_SUFFIX):
            new = new[: -len(EMA_SUFFIX)]
        if rules.sep is not None:
            new = new.replace("/", rules.sep)
        if not new:
            raise UsageProblem(f"the rules give {name!r} an empty name")
        mapping[name] = new
    targets: dict[str, list[str]] = {}
    for old, new in mapping.items():
        targets.setdefault(new, []).append(old)
    collisions = {new: olds for new, olds in targets.items() if len(olds) > 1}
    if collisions:
        listing = "; ".join(f"{' + '.join(sorted(olds))} -> {new}" for new, olds in sorted(collisions.items()))
        raise Refused(f"name collision: {listing}")
    return mapping, dropped


# -- TF2 object graph -----------------------------------------------------

def _unescape(component: str) -> str:
    out, i = [], 0
    while i < len(component):
        if component.startswith("..", i):
            out.append(".")
            i += 2
        elif component.startswith(".S", i):
            out.append("/")
            i += 2
        else:
            out.append(component[i])
            i += 1
    return "".join(out)


def _object_path(key: str) -> tuple[str, ...] | None:
    """Local names of the object a plain attribute key belongs to; None for slots and oddities."""
    if _ATTRIBUTES not in key or ".OPTIMIZER_SLOT" in key:
        return None
    path = key[: key.index(_ATTRIBUTES)]
    return tuple(_unescape(c) for c in path.split("/")) if path else ()


def _attribute_key(key: str, mapping: dict[str, str], dropped: set[str], stored: list[str]) -> str | None:
    """The new checkpoint key of an object attribute, None if all its tensors are dropped.

    An attribute's key is the stored key itself, or a prefix of the keys of
    its tensors (a saveable with several: `it/.ATTRIBUTES/ITERATOR` stores
    `it/.ATTRIBUTES/ITERATOR_STATE`); the new key keeps each suffix.
    """
    if key in mapping:
        return mapping[key]
    if key in dropped:
        return None
    start = bisect.bisect_right(stored, key)
    members = []
    while start < len(stored) and stored[start].startswith(key):
        members.append(stored[start])
        start += 1
    kept = [m for m in members if m not in dropped]
    if not members:
        return key
    if not kept:
        return None
    prefixes = {mapping[m][: len(mapping[m]) - (len(m) - len(key))] if mapping[m].endswith(m[len(key):]) else None
                for m in kept}
    if len(prefixes) != 1 or None in prefixes:
        raise Refused(f"the tensors of object attribute {key!r} would be renamed inconsistently: "
                      + ", ".join(f"{m} -> {mapping[m]}" for m in kept))
    return prefixes.pop()


def _added_prefix(mapping: dict[str, str]) -> str | None:
    """P when every object-graph key gains the same leading path components P ("a/b/")."""
    prefixes = {new[: len(new) - len(old)] for old, new in mapping.items() if old != OBJECT_GRAPH_KEY}
    if len(prefixes) != 1:
        return None
    (prefix,) = prefixes
    if not prefix.endswith("/") or any(not new.endswith(old) for old, new in mapping.items()):
        return None
    return prefix


def _removed_prefix(mapping: dict[str, str]) -> str | None:
    """P when every kept object-graph key loses the same leading path components P ("model/")."""
    prefixes = {old[: len(old) - len(new)] for old, new in mapping.items() if old != OBJECT_GRAPH_KEY}
    if len(prefixes) != 1:
        return None
    (prefix,) = prefixes
    if not prefix.endswith("/") or any(not old.endswith(new) for old, new in mapping.items()):
        return None
    return prefix


def _swap_node_ids(graph, a: int, b: int) -> None:
    """Exchange the ids of nodes a and b: their places in the list and every reference to them."""
    def swapped(node_id: int) -> int:
        return b if node_id == a else a if node_id == b else node_id

    for node in graph.nodes:
        for child in node.children:
            child.node_id = swapped(child.node_id)
        for slot in node.slot_variables:
            slot.original_variable_node_id = swapped(slot.original_variable_node_id)
            slot.slot_variable_node_id = swapped(slot.slot_variable_node_id)
    first, second = type(graph.nodes[a])(), type(graph.nodes[b])()
    first.CopyFrom(graph.nodes[a])
    second.CopyFrom(graph.nodes[b])
    graph.nodes[a].CopyFrom(second)
    graph.nodes[b].CopyFrom(first)


def _reroot_at(graph, components: tuple[str, ...]) -> None:
    """Make the object reached from the root through `components` the new root (--strip-prefix of a
    whole object path, e.g. `model/`). The old root stays in the graph, unreachable and without
    attributes of its own, which TensorFlow's restore ignores."""
    node_id = 0
    for name in components:
        child = next((c.node_id for c in graph.nodes[node_id].children if c.local_name == name), None)
        if child is None:
            raise Unsupported(f"no object {'/'.join(components)} in the TF2 object graph to make the root")
        node_id = child
    _swap_node_ids(graph, 0, node_id)


def _nest_under(graph, components: tuple[str, ...]) -> None:
    """Move the root's contents to a new node reached from the root through `components`."""
    moved = len(graph.nodes)
    graph.nodes.add().CopyFrom(graph.nodes[0])
    for node in graph.nodes:  # references to the old root now mean the moved node
        for child in node.children:
            if child.node_id == 0:
                child.node_id = moved
    root = graph.nodes[0]
    has_values = root.has_checkpoint_values.value
    root.Clear()
    parent = root
    for depth, name in enumerate(components):
        target = moved if depth == len(components) - 1 else len(graph.nodes)
        parent.children.add(node_id=target, local_name=name)
        parent.has_checkpoint_values.value = has_values
        if target != moved:
            parent = graph.nodes.add()


def _rename_attributes(node, mapping: dict[str, str], dropped: set[str], stored: list[str]) -> list[tuple[str, str]]:
    """Rename (or drop) a node's attributes in place; the (old, new) keys of those kept."""
    kept, renamed = [], []
    for attribute in node.attributes:
        old = attribute.checkpoint_key
        new = _attribute_key(old, mapping, dropped, stored)
        if new is None:
            continue
        attribute.checkpoint_key = new
        kept.append(attribute)
        renamed.append((old, new))
    del node.attributes[:]
    node.attributes.extend(kept)
    return renamed


def rewrite_object_graph(data: bytes, mapping: dict[str, str], dropped: set[str]) -> bytes:
    """The object graph with checkpoint keys renamed and object paths renamed to match."""
    graph = parse_object_graph(data)
    stored = sorted(set(mapping) | dropped)
    added, removed = _added_prefix(mapping), _removed_prefix(mapping)
    if added is not None or removed is not None:
        # --add-prefix (or a rule that only prepends): a new level of objects above the old root;
        # --strip-prefix of a whole object path (with the rest dropped): that object becomes the root.
        components = tuple(_unescape(c) for c in (added or removed)[:-1].split("/"))
        if added is not None:
            _nest_under(graph, components)
        else:
            _reroot_at(graph, components)
        for node in graph.nodes:
            _rename_attributes(node, mapping, dropped, stored)
        return graph.SerializeToString()
    paths = node_paths(graph)
    edge_renames: dict[tuple[int, str], tuple[str, str]] = {}  # (parent, old local) -> (new local, why)
    for node_id, node in enumerate(graph.nodes):
        renamed = _rename_attributes(node, mapping, dropped, stored)
        if node_id not in paths:
            continue  # slot variables and other nodes reached only indirectly: keys only
        for key, new_key in renamed:
            old_path, new_path = _object_path(key), _object_path(new_key)
            if old_path == new_path or old_path is None:
                continue
            if new_path is None or len(new_path) != len(old_path) or old_path != paths[node_id]:
                raise Unsupported(f"renaming {key!r} to {new_key!r} would move the object to a different depth "
                                  "of the TF2 object graph",
                                  hint="rename objects at the same depth (e.g. model/dense1 -> model/encoder), add "
                                       "the same prefix to every name, or strip one (--keep '^model/' "
                                       "--strip-prefix model/ makes model the root)")
            parent = 0
            for depth, (old_local, new_local) in enumerate(zip(old_path, new_path)):
                if old_local != new_local:
                    seen = edge_renames.setdefault((parent, old_local), (new_local, key))
                    if seen[0] != new_local:
                        raise Refused(f"inconsistent object rename: {'/'.join(old_path[:depth + 1])} becomes "
                                      f"{seen[0]!r} for {seen[1]!r} but {new_local!r} for {key!r}")
                parent = next(c.node_id for c in graph.nodes[parent].children if c.local_name == old_local)
    for (parent, old_local), (new_local, _why) in edge_renames.items():
        children = graph.nodes[parent].children
        if any(c.local_name == new_local for c in children):
            raise Refused(f"object {new_local!r} already exists beside {old_local!r} in the object graph")
        for child in children:
            if child.local_name == old_local:
                child.local_name = new_local
    return graph.SerializeToString()


# -- plan and apply -------------------------------------------------------

def _checkpoint_exists(prefix: str) -> bool:
    return bool(_checkpoint_files(prefix))


def _checkpoint_files(prefix: str) -> list[str]:
    """The index and data shards (`.data-?????-of-?????`) of the checkpoint at `prefix`."""
    name = fs.basename(prefix)
    try:
        entries = fs.list_dir(fs.dirname(prefix))
    except (NotFound, FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.path for e in entries if e.name == name + ".index" or (
        e.name.startswith(name + ".data-") and _DATA_NAME_RE.fullmatch(e.name[len(name):])))


_FILE_SUFFIX_RE = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")
_DATA_NAME_RE = re.compile(r"\.data-\d{5}-of-\d{5}")


def _refuse_destination_in_source(source: str, source_files: list[str], destination: str) -> None:
    """SRC is never modified: refuse a DST that is SRC, or whose files would be SRC's files."""
    if _FILE_SUFFIX_RE.search(destination):
        raise Refused(f"destination {destination} is a checkpoint file name; give the prefix to write "
                      "(e.g. out/model.ckpt-1, without .index or .data-*)")
    refuse_writing_over_source([source, *source_files],
                               [destination] + [destination + path[len(source):] for path in source_files],
                               "rename-vars")


def plan_rename(source: str, destination: str, rules: RenameRules, overwrite: bool = False,
                link: bool = False) -> RenamePlan:
    target = resolve_target(source)
    if target.format != "v2":
        raise Unsupported("rename-vars writes the V2 format; the source is a V1 checkpoint",
                          hint="restore it with tf.compat.v1.train.Saver and re-save it first")
    if link and (fs.is_url(destination) or fs.is_url(target.prefix)):
        raise UsageProblem("--link needs SRC and DST on one local file system; a bucket has no hard links",
                           hint="leave out --link: within one bucket the shards are copied by the server")
    destination = fs.absolute(destination)
    if fs.is_url(destination):
        if fs.is_dir(destination):
            raise Refused(f"destination {destination} is a directory (objects live under it); "
                          "give a checkpoint prefix such as DIR/model.ckpt-1")
    else:
        if os.path.isdir(destination):
            raise Refused(f"destination {destination} is a directory; give a checkpoint prefix such as DIR/model.ckpt-1")
        check_parent_creatable(destination)  # missing directories are made when the checkpoint is written
    with open_bundle(target.prefix) as bundle:
        names = [v.name for v in bundle.variables if not v.internal]
        graph_bytes = bundle.object_graph_bytes()
        source_files = [target.prefix + ".index", target.prefix + ".meta"] + bundle.data_files()
    _refuse_destination_in_source(fs.absolute(target.prefix), [fs.absolute(f) for f in source_files], destination)
    if _checkpoint_exists(destination) and not overwrite:
        raise Refused(f"destination {destination} exists (use --overwrite to replace it)")
    mapping, dropped = compute_mapping(names, rules)
    renamed = tuple((old, new) for old, new in mapping.items() if old != new)
    if graph_bytes is not None and (renamed or dropped):
        rewrite_object_graph(graph_bytes, mapping, set(dropped))  # refuses here, before anything is written
    return RenamePlan(target.prefix, destination, mapping, renamed, tuple(dropped),
                      sum(1 for old, new in mapping.items() if old == new), graph_bytes is not None)


def _copy_shard(source: str, destination: str, length: int | None) -> int:
    """Copy a data shard (its first `length` bytes, or all of it) in the kernel,
    as coreutils' cp does (copy_file_range); bytes written."""
    with fs.open_input(source, "data shard") as src, open(destination, "wb") as dst:  # never a FIFO or device
        total = os.fstat(src.fileno()).st_size if length is None else length
        copied = 0
        try:
            while copied < total:
                n = os.copy_file_range(src.fileno(), dst.fileno(), total - copied)
                if n == 0:
                    break
                copied += n
        except OSError:  # no in-kernel copy between these files systems: plain read/write
            src.seek(copied)
            dst.seek(copied)
            while copied < total:
                chunk = src.read(min(total - copied, 16 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                copied += len(chunk)
    return copied


def _copy_object(source: str, destination: str) -> int:
    """One data shard to `destination`: by the server within one store, else streamed; bytes moved."""
    if fs.is_url(source) and fs.same_store(source, destination):
        from ckpttool.formats import remote

        found = fs.stat_path(source)
        if found is None:
            raise NotFound(f"missing data shard {source}")
        remote.copy_object(source, destination)
        return found.size
    copied = 0
    handle = fs.open_random_access(source, "data shard")
    try:
        with fs.atomic_output(destination, sync=False) as out:
            for chunk in handle.iter_range(0, handle.size):
                out.write(chunk)
                copied += len(chunk)
    finally:
        handle.close()
    return copied


def _apply_rename_with_a_bucket(plan: RenamePlan) -> RenameResult:
    """rename-vars when SRC or DST is in a bucket. Shards are copied by the server within one store
    (no download), else streamed; a rewritten object graph gets a shard of its own (an object cannot
    be appended to); the index, written last in one request, makes the checkpoint exist."""
    destination = plan.destination
    if not fs.is_url(destination):
        created_directories = make_parents(destination)
    written: list[str] = []
    try:
        with open_bundle(plan.source) as bundle:
            entries = _new_entries(bundle, plan)
            num_shards = bundle.header.num_shards
            new_graph = None
            if plan.object_graph and (plan.renamed or plan.dropped):
                new_graph = rewrite_object_graph(bundle.object_graph_bytes(), plan.mapping, set(plan.dropped))
            old = _checkpoint_files(destination)  # --overwrite: the old index goes first
            fs.remove_files([p for p in old if p.endswith(".index")] + [p for p in old if not p.endswith(".index")])
            out_shards = num_shards + (1 if new_graph is not None else 0)
            total = 0
            for shard_id, source_path in enumerate(bundle.data_files()):
                final = data_file_path(destination, shard_id, out_shards)
                written.append(final)
                total += _copy_object(source_path, final)
            if new_graph is not None:
                data, checksum = encode_strings([new_graph])
                final = data_file_path(destination, num_shards, out_shards)
                written.append(final)
                fs.write_atomic(final, data)
                total += len(data)
                entries[OBJECT_GRAPH_KEY.encode()] = make_entry(dtype_from_code(7), (), num_shards, 0, len(data),
                                                                 checksum)
            index = serialize_index(out_shards, entries)
            written.append(destination + ".index")
            fs.write_atomic(destination + ".index", index)
            total += len(index)
        _update_destination_state(destination)
        return RenameResult(plan, total)
    except BaseException:
        fs.remove_files(list(reversed(written)))  # the index (last written) first
        if not fs.is_url(destination):
            remove_empty(created_directories)
        raise


def _new_entries(bundle: Bundle, plan: RenamePlan) -> dict[bytes, pb.BundleEntryProto]:
    """Index entries under their new keys (slices re-keyed too); bytes stay where they are."""
    raw = bundle.raw_entries()
    entries: dict[bytes, pb.BundleEntryProto] = {}
    for var in bundle.variables:
        new = OBJECT_GRAPH_KEY if var.name == OBJECT_GRAPH_KEY else plan.mapping.get(var.name)
        if new is None:
            continue
        new_key = new.encode("utf-8", "surrogateescape")
        old_key = var.name.encode("utf-8", "surrogateescape")
        entries[new_key] = raw[old_key]
        for extents in var.slices:
            entries[encode_slice_key(new_key, extents)] = raw[encode_slice_key(old_key, extents)]
    return entries


def _update_destination_state(destination: str) -> None:
    from ckpttool.formats.state import read_state, write_state
    from ckpttool.ops.statefile import update_state

    directory, name = fs.dirname(destination), fs.basename(destination)

    def add(state: CheckpointState) -> CheckpointState:
        paths = [p for p in state.all_model_checkpoint_paths if fs.basename(p) != name]
        times_ok = len(state.all_model_checkpoint_timestamps) == len(state.all_model_checkpoint_paths)
        stamps = [t for p, t in zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps)
                  if fs.basename(p) != name] if times_ok else []
        return CheckpointState(name, tuple(paths + [name]),
                               tuple(stamps + [time.time()]) if times_ok else (), state.last_preserved_timestamp)

    try:
        existing = read_state(directory)
    except BadInput:
        existing = None  # an unparseable state file is replaced, as TensorFlow's next save would
    if existing is None or update_state(directory, add) is False:  # no usable state file: start one
        write_state(directory, CheckpointState(name, (name,), (time.time(),)))


_OUR_TEMP_RE = re.compile(r"\.data-\d{5}-of-\d{5}\.tempstate(?P<pid>\d{1,7})$")
_PID_MAX = 1 << 22  # Linux's largest pid; TensorFlow's own .tempstate suffixes are random 64-bit numbers


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temp_shards(destination: str) -> list[str]:
    """Delete the `DST.data-*.tempstate<pid>` files a killed rename-vars left for this DST
    (its process is gone); the paths removed."""
    import glob

    removed = []
    for path in glob.glob(glob.escape(destination) + ".data-?????-of-?????.tempstate*"):
        match = _OUR_TEMP_RE.search(path)
        if not match or int(match["pid"]) >= _PID_MAX or not os.path.isfile(path) or os.path.islink(path):
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _process_alive(pid):
            continue  # another rename-vars is writing this DST right now
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def apply_rename(plan: RenamePlan, link: bool = False) -> RenameResult:
    if fs.is_url(plan.destination) or fs.is_url(plan.source):
        return _apply_rename_with_a_bucket(plan)
    destination = plan.destination
    created_directories = make_parents(destination)  # as TensorFlow's BundleWriter makes its directory
    remove_stale_temp_shards(destination)
    written_files: list[str] = []
    temp_files: list[str] = []
    try:
        with open_bundle(plan.source) as bundle:
            entries = _new_entries(bundle, plan)
            num_shards = bundle.header.num_shards
            graph_part = None
            new_graph = None
            if plan.object_graph and (plan.renamed or plan.dropped):
                graph_var = bundle.variable(OBJECT_GRAPH_KEY)
                graph_part = graph_var.parts[0]
                new_graph = rewrite_object_graph(bundle.object_graph_bytes(), plan.mapping, set(plan.dropped))
            if _checkpoint_exists(destination):
                remove_checkpoint_files(destination)  # --overwrite: the old index goes first
            total = 0
            out_shards = num_shards + (1 if link and new_graph is not None else 0)
            for shard_id, source_path in enumerate(bundle.data_files()):
                if not os.path.exists(source_path):
                    raise NotFound(f"missing data shard {source_path}")
                final = data_file_path(destination, shard_id, out_shards)
                tmp = f"{final}.tempstate{os.getpid()}"
                temp_files.append(tmp)
                if link:
                    os.link(source_path, tmp)
                else:
                    graph_here = new_graph is not None and graph_part.shard_id == shard_id
                    graph_at_end = graph_here and graph_part.offset + graph_part.size == os.path.getsize(source_path)
                    total += _copy_shard(source_path, tmp, graph_part.offset if graph_at_end else None)
                    if graph_here:
                        data, checksum = encode_strings([new_graph])
                        with open(tmp, "ab") as handle:
                            offset = handle.tell()
                            handle.write(data)
                        total += len(data)
                        entries[OBJECT_GRAPH_KEY.encode()] = make_entry(dtype_from_code(7), (), shard_id, offset,
                                                                         len(data), checksum)
            if link and new_graph is not None:
                # Linked shards are never written through: the new graph gets a shard of its own.
                data, checksum = encode_strings([new_graph])
                final = data_file_path(destination, num_shards, out_shards)
                tmp = prepare_replacement(final, data)
                temp_files.append(tmp)
                total += len(data)
                entries[OBJECT_GRAPH_KEY.encode()] = make_entry(dtype_from_code(7), (), num_shards, 0, len(data),
                                                                 checksum)
            for shard_id, tmp in enumerate(temp_files):
                final = data_file_path(destination, shard_id, out_shards)
                commit_replacement(tmp, final)
                written_files.append(final)
            temp_files = []
            total += write_index(destination, out_shards, entries)
            written_files.append(destination + ".index")
        _update_destination_state(destination)
        return RenameResult(plan, total)
    except BaseException:
        # Nothing half-written may stay: the index is written last, so without
        # it TensorFlow never picks the destination up; remove what we made.
        for tmp in temp_files:
            discard_replacement(tmp)
        for path in written_files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        remove_empty(created_directories)
        raise
