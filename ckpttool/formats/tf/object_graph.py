"""The TF2 object graph stored under `_CHECKPOINTABLE_OBJECT_GRAPH` (FORMAT.md §5).

Maps each checkpoint key to the object path TensorFlow restores it through
(`model/dense1/kernel`), which `inspect --tree` groups by.

Every cost here is linear in the graph: paths are kept as parent links and
spelled out only for the nodes that need them (a 30,000-node chain must not
hold 30,000 copies of ever longer paths), and a shown path is cut to its last
MAX_SHOWN_DEPTH components (deeper object graphs are not written by
TensorFlow; a hostile one must not make each of its keys 30,000 names long).
"""
from __future__ import annotations

import bisect
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from os.path import commonprefix
from typing import Iterator

from ckpttool.errors import Refused, Unsupported
from ckpttool.formats.tf.messages import parse_message
from ckpttool.formats.variables import OBJECT_GRAPH_KEY
from ckpttool.formats.tf.protos import checkpoint_pb2 as pb

MAX_SHOWN_DEPTH = 64
ELLIPSIS = "\u2026"


def parse_object_graph(data: bytes) -> pb.TrackableObjectGraph:
    return parse_message(pb.TrackableObjectGraph, data, "object graph")


class NodePaths(Mapping):
    """node id -> tuple of local names on the shortest path from the root (node 0),
    for every reachable node; stored as parent links, spelled out on access."""

    def __init__(self, graph: pb.TrackableObjectGraph | None, links: dict[int, tuple[int, str]] | None = None):
        self._links: dict[int, tuple[int, str]] = {}  # node -> (parent, local name); the root -> (-1, "")
        if links is not None:  # paths chosen elsewhere (model_names)
            self._links = links
            return
        count = len(graph.nodes)
        if count:
            self._links[0] = (-1, "")
        queue = deque([0] if count else [])
        while queue:
            node_id = queue.popleft()
            for child in graph.nodes[node_id].children:
                if child.node_id not in self._links and 0 <= child.node_id < count:
                    self._links[child.node_id] = (node_id, child.local_name)
                    queue.append(child.node_id)

    def __getitem__(self, node_id: int) -> tuple[str, ...]:
        return self._walk(node_id, None)[0]

    def shown(self, node_id: int) -> tuple[str, ...]:
        """The path, or its last MAX_SHOWN_DEPTH - 1 names after an ellipsis when deeper."""
        names, cut = self._walk(node_id, MAX_SHOWN_DEPTH - 1)
        return (ELLIPSIS,) + names if cut else names

    def _walk(self, node_id: int, limit: int | None) -> tuple[tuple[str, ...], bool]:
        """The last `limit` names of the path (all with None), and whether more were left out."""
        parent, name = self._links[node_id]  # KeyError for unreachable nodes, as a Mapping should
        names = []
        while parent != -1:
            if limit is not None and len(names) == limit:
                return tuple(reversed(names)), True
            names.append(name)
            parent, name = self._links[parent]
        return tuple(reversed(names)), False

    def __contains__(self, node_id) -> bool:
        return node_id in self._links

    def __iter__(self) -> Iterator[int]:
        return iter(self._links)

    def __len__(self) -> int:
        return len(self._links)


def node_paths(graph: pb.TrackableObjectGraph) -> NodePaths:
    """Shortest path of local names from the root (node 0) to every reachable node."""
    return NodePaths(graph)


class KeyObjectPaths:
    """checkpoint key -> readable object path, with the longest-prefix lookup
    that multi-tensor saveables need (see `of`)."""

    def __init__(self, paths: dict[str, str]):
        self._paths = paths
        self._keys = sorted(key for key in paths if key)

    def __bool__(self) -> bool:
        return bool(self._paths)

    def of(self, stored_key: str) -> str | None:
        """Object path of a stored tensor: its attribute's, found exactly or as the
        longest key that prefixes it (`it/.ATTRIBUTES/ITERATOR` for
        `it/.ATTRIBUTES/ITERATOR_STATE`), by bisection, not a scan of every key."""
        exact = self._paths.get(stored_key)
        if exact is not None:
            return exact
        probe = stored_key
        while True:
            at = bisect_right(self._keys, probe) - 1
            if at < 0:
                return None
            candidate = self._keys[at]
            if stored_key.startswith(candidate):
                return self._paths[candidate]
            # A prefix of stored_key sorting at or below `candidate` is a
            # prefix of what the two share, which is shorter than `probe`.
            probe = commonprefix([candidate, stored_key])
            if not probe:
                return None


def key_object_paths(graph: pb.TrackableObjectGraph) -> KeyObjectPaths:
    """checkpoint_key -> readable object path (`model/dense1/kernel`, slots as `.../<slot m>`)."""
    paths = node_paths(graph)
    result: dict[str, str] = {}
    for node_id in paths:
        attributes = graph.nodes[node_id].attributes
        if not attributes:
            continue
        shown = paths.shown(node_id)
        for attribute in attributes:
            suffix = () if attribute.name == "VARIABLE_VALUE" else (attribute.name,)
            result[attribute.checkpoint_key] = "/".join(shown + suffix) or attribute.name
    # Slot variables are reachable only through the optimizer's slot table.
    seen_slots: set[int] = set()
    count = len(graph.nodes)
    for node in graph.nodes:
        for slot in node.slot_variables:
            slot_node = slot.slot_variable_node_id
            if (slot.original_variable_node_id not in paths or slot_node in seen_slots
                    or not 0 <= slot_node < count):
                continue
            seen_slots.add(slot_node)  # the first owner names it, as each key keeps its first path
            owner = paths.shown(slot.original_variable_node_id)
            for attribute in graph.nodes[slot_node].attributes:
                result.setdefault(attribute.checkpoint_key, "/".join(owner + (f"<slot {slot.slot_name}>",)))
    return KeyObjectPaths(result)


# Which keys are optimizer state (--drop-optimizer), decided on the graph, not on key names: each
# variable is stored once, under the FIRST path a breadth-first walk finds, and Keras 3 optimizers
# track the model's variables (`optimizer/_trainable_variables/N`), so a model weight's key may well
# be an optimizer path.
_OPTIMIZER_STEP = frozenset({"_iterations", "iterations", "iter"})
_OPTIMIZER_STATE = frozenset({"_learning_rate", "learning_rate", "_variables", "_trainable_variables",
                              "_momentums", "_velocities", "beta_1", "decay"})
_OPTIMIZER_ROOT_NAMES = frozenset({"optimizer", "opt"})  # tf.train.Checkpoint(optimizer=...) by convention


@dataclass(frozen=True)
class OptimizerKeys:
    state: frozenset[str]  # attribute keys of optimizer state: slots, step, learning rate, moments
    trained: frozenset[str]  # attribute keys of the variables an optimizer trains (state too if only it reaches them)

    def split(self, names) -> tuple[frozenset[str], frozenset[str]]:
        """(state, trained) among stored names, each found as its attribute's key or the longest
        one prefixing it (a saveable with several tensors)."""
        state, trained = KeyObjectPaths(dict.fromkeys(self.state, "")), KeyObjectPaths(dict.fromkeys(self.trained, ""))
        return (frozenset(n for n in names if state.of(n) is not None),
                frozenset(n for n in names if trained.of(n) is not None))


def _is_optimizer(graph, node_id: int) -> bool:
    """A node holding slot variables, or a Keras optimizer's own tracked state (its step counter
    beside its learning rate or variable lists)."""
    node = graph.nodes[node_id]
    if node.slot_variables:
        return True
    names = {child.local_name for child in node.children}
    return bool(names & _OPTIMIZER_STEP) and bool(names & _OPTIMIZER_STATE)


def _optimizer_nodes(graph) -> set[int]:
    """Nodes that are optimizers: by their contents, or by their conventional name at the root."""
    count = len(graph.nodes)
    optimizers = {i for i in range(1, count) if _is_optimizer(graph, i)}
    optimizers |= {c.node_id for c in graph.nodes[0].children if c.local_name in _OPTIMIZER_ROOT_NAMES
                   and 0 < c.node_id < count} if count else set()
    return optimizers


def _reach(graph, starts, blocked: set[int]) -> set[int]:
    """Nodes reachable from `starts` through children, never entering `blocked`."""
    count = len(graph.nodes)
    seen = {s for s in starts if 0 <= s < count and s not in blocked}
    queue = deque(seen)
    while queue:
        for child in graph.nodes[queue.popleft()].children:
            if 0 <= child.node_id < count and child.node_id not in seen and child.node_id not in blocked:
                seen.add(child.node_id)
                queue.append(child.node_id)
    return seen


def optimizer_keys(graph: pb.TrackableObjectGraph) -> OptimizerKeys:
    """The optimizer's state and the variables it trains. A variable is the model's when it is
    reachable from the root without passing through an optimizer node; optimizer state is what is
    reachable only through an optimizer, plus the slot variables. Linear in the graph."""
    count = len(graph.nodes)
    optimizers = _optimizer_nodes(graph)
    model = _reach(graph, [0], optimizers) if count else set()
    slots = [s for node in graph.nodes for s in node.slot_variables]
    state = _reach(graph, list(optimizers) + [s.slot_variable_node_id for s in slots], model)
    trained = {s.original_variable_node_id for s in slots}
    lists = {c.node_id for o in optimizers for c in graph.nodes[o].children  # Keras 3's list of what it trains
             if c.local_name == "_trainable_variables" and 0 <= c.node_id < count}
    trained |= {c.node_id for node_id in lists for c in graph.nodes[node_id].children}
    trained = {t for t in trained if 0 <= t < count}

    def keys(nodes: set[int]) -> frozenset[str]:
        return frozenset(a.checkpoint_key for n in nodes for a in graph.nodes[n].attributes)

    return OptimizerKeys(keys(state), keys(trained))


# -- every path to a variable (inspect --tree) ----------------------------
MAX_PATHS = 8  # per variable: the object graphs TensorFlow writes reach a variable through a few
_PATH_SEARCH_STEPS = 4096  # per variable: a hostile graph of diamonds has exponentially many paths
_PATH_SEARCH_TOTAL = 200_000  # per graph: past it, each variable shows its shortest path only


def _parents(graph, reachable) -> dict[int, list[tuple[int, str]]]:
    """node -> its (parent, local name) links from reachable parents, in the graph's order."""
    count = len(graph.nodes)
    parents: dict[int, list[tuple[int, str]]] = {}
    for node_id in reachable:
        for child in graph.nodes[node_id].children:
            if 0 <= child.node_id < count and child.node_id != 0:
                parents.setdefault(child.node_id, []).append((node_id, child.local_name))
    return parents


def _paths_to(node_id: int, parents, first: tuple[str, ...], budget: list[int]) -> list[tuple[str, ...]]:
    """Up to MAX_PATHS simple paths from the root to `node_id`: `first` (the shortest), then others
    found walking parent links back to the root, each at most MAX_SHOWN_DEPTH long, shortest first.
    `budget`: [steps left for the whole graph], spent here."""
    found: set[tuple[str, ...]] = {first}
    stack = [(node_id, (), frozenset((node_id,)))]
    steps = 0
    while stack and steps < _PATH_SEARCH_STEPS and budget[0] > 0 and len(found) < MAX_PATHS:
        steps += 1
        budget[0] -= 1
        at, suffix, on_path = stack.pop()
        if at == 0:
            found.add(suffix)
            continue
        if len(suffix) >= MAX_SHOWN_DEPTH:
            continue
        for parent, name in reversed(parents.get(at, ())):
            if parent not in on_path:
                stack.append((parent, (name,) + suffix, on_path | {parent}))
    others = sorted(found - {first}, key=lambda p: (len(p), p))
    return [first] + others


def key_all_paths(graph: pb.TrackableObjectGraph) -> KeyObjectPaths:
    """checkpoint key -> every readable object path that reaches it (a tuple, the shortest first;
    at most MAX_PATHS), for `inspect --tree`. Slot variables hang under each path of their variable."""
    paths = node_paths(graph)
    parents = _parents(graph, paths)
    result: dict[str, tuple[str, ...]] = {}
    spelled: dict[int, list[tuple[str, ...]]] = {}
    budget = [_PATH_SEARCH_TOTAL]

    def of_node(node_id: int) -> list[tuple[str, ...]]:
        if node_id not in spelled:
            spelled[node_id] = _paths_to(node_id, parents, paths.shown(node_id), budget)
        return spelled[node_id]

    for node_id in paths:
        for attribute in graph.nodes[node_id].attributes:
            suffix = () if attribute.name == "VARIABLE_VALUE" else (attribute.name,)
            result[attribute.checkpoint_key] = tuple("/".join(p + suffix) or attribute.name for p in of_node(node_id))
    count = len(graph.nodes)
    for node in graph.nodes:
        for slot in node.slot_variables:
            owner, slot_node = slot.original_variable_node_id, slot.slot_variable_node_id
            if owner not in paths or not 0 <= slot_node < count:
                continue
            for attribute in graph.nodes[slot_node].attributes:
                result.setdefault(attribute.checkpoint_key, tuple(
                    "/".join(p + (f"<slot {slot.slot_name}>",)) for p in of_node(owner)))
    return KeyObjectPaths(result)


# -- names through the model (--names model) ------------------------------
# A Keras 3 optimizer keeps its per-variable state in lists parallel to `_trainable_variables`
# (Adam: `_momentums`, `_velocities`): element i belongs to trainable variable i, and is named
# after it: `<variable>/m`. Other lists are named by their attribute without the underscore.
_KERAS_STATE_LISTS = {"_momentums": "m", "momentums": "m", "_velocities": "v", "velocities": "v"}
_NOT_STATE_LISTS = frozenset({"_variables", "_trainable_variables", "_trainable_variables_indices"})


def _least_shortest_paths(graph, blocked: set[int]) -> dict[int, tuple[int, str]]:
    """node -> (parent, local name) on the least (by local names) of the shortest paths from the root
    that enter no `blocked` node. Decided level by level on names alone, never on node ids or the
    order of children, so the same objects get the same paths in every checkpoint of a run."""
    count = len(graph.nodes)
    if not count:
        return {}
    links: dict[int, tuple[int, str]] = {0: (-1, "")}
    level = [0]  # this depth's nodes, in the order of their paths
    while level:
        best: dict[int, tuple[int, str, int]] = {}  # child -> (rank of parent, name, parent)
        for rank, node_id in enumerate(level):
            for child in graph.nodes[node_id].children:
                target = child.node_id
                if not 0 <= target < count or target in links or target in blocked:
                    continue
                candidate = (rank, child.local_name, node_id)
                if target not in best or candidate < best[target]:
                    best[target] = candidate
        level = sorted(best, key=lambda n: best[n][:2])
        for node_id in level:
            links[node_id] = (best[node_id][2], best[node_id][1])
    return links


def _numbered_children(graph, node_id: int) -> list[int] | None:
    """The elements of a tracked list (children named 0, 1, ... n-1), in order; None otherwise."""
    children = graph.nodes[node_id].children
    by_index = {c.local_name: c.node_id for c in children}
    if len(by_index) != len(children) or set(by_index) != {str(i) for i in range(len(children))}:
        return None
    return [by_index[str(i)] for i in range(len(children))]


def _state_owners(graph, optimizers: set[int]) -> dict[int, tuple[int, str]]:
    """Optimizer state node -> (the variable it belongs to, what to call it): slot variables, and the
    elements of a Keras 3 optimizer's per-variable lists."""
    count = len(graph.nodes)
    owners: dict[int, tuple[int, str]] = {}
    for node in graph.nodes:
        for slot in node.slot_variables:
            if 0 <= slot.slot_variable_node_id < count and 0 <= slot.original_variable_node_id < count:
                owners.setdefault(slot.slot_variable_node_id, (slot.original_variable_node_id, slot.slot_name))
    for optimizer in sorted(optimizers):
        children = {c.local_name: c.node_id for c in graph.nodes[optimizer].children if 0 <= c.node_id < count}
        trained = _numbered_children(graph, children["_trainable_variables"]) if "_trainable_variables" in children \
            else None
        if not trained:
            continue
        for name, list_node in sorted(children.items()):
            elements = None if name in _NOT_STATE_LISTS else _numbered_children(graph, list_node)
            if elements is None or len(elements) != len(trained):
                continue
            label = _KERAS_STATE_LISTS.get(name, name.lstrip("_") or name)
            for element, variable in zip(elements, trained):
                if 0 <= element < count and 0 <= variable < count:
                    owners.setdefault(element, (variable, label))
    return owners


def model_names(graph: pb.TrackableObjectGraph) -> dict[str, str]:
    """Attribute checkpoint key -> the variable's name through the model: the least of its shortest
    paths that pass through no optimizer, without `.ATTRIBUTES/VARIABLE_VALUE`
    (`model/layer_with_weights-0/kernel`); optimizer state that belongs to a model variable is named
    after it (`.../kernel/m`), other state by its shortest path (`optimizer/iter`). Unique names are
    the caller's to check. Unsupported for paths deeper than MAX_SHOWN_DEPTH (no TensorFlow writes them)."""
    optimizers = _optimizer_nodes(graph)
    model = NodePaths(None, _least_shortest_paths(graph, optimizers))
    anywhere = NodePaths(None, _least_shortest_paths(graph, set()))
    owners = _state_owners(graph, optimizers)

    def spelled(paths: NodePaths, node_id: int) -> tuple[str, ...]:
        names = paths.shown(node_id)
        if names[:1] == (ELLIPSIS,):
            raise Unsupported(f"an object path of the TF2 object graph is deeper than {MAX_SHOWN_DEPTH - 1}: "
                              f"{'/'.join(names[:4])}/...; it cannot name a variable")
        return names

    result: dict[str, str] = {}
    for node_id, node in enumerate(graph.nodes):
        if not node.attributes:
            continue
        owner = owners.get(node_id)
        if node_id in model:
            path = spelled(model, node_id)
        elif owner is not None and owner[0] in model:
            path = spelled(model, owner[0]) + (owner[1],)
        elif node_id in anywhere:
            path = spelled(anywhere, node_id)
        else:
            continue  # reached by nothing: keeps its key
        for attribute in node.attributes:
            suffix = () if attribute.name == "VARIABLE_VALUE" else (attribute.name,)
            result[attribute.checkpoint_key] = "/".join(path + suffix) or attribute.name
    return result


# Rewriting the graph for renamed checkpoint keys (rename-vars, convert to a TF checkpoint).
_ATTRIBUTES = "/.ATTRIBUTES/"


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
        try:
            attribute.checkpoint_key = new
        except (UnicodeEncodeError, ValueError):  # protobuf strings are UTF-8: a lone surrogate is none
            raise Unsupported(f"the new name of {old!r}, {new!r}, is not UTF-8 text, which a TF2 checkpoint's "
                              "object graph holds its keys as", hint="rename it to text") from None
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
