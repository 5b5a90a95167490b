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

from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from os.path import commonprefix
from typing import Iterator

from ckpttool.formats.messages import parse_message
from ckpttool.formats.protos import checkpoint_pb2 as pb

MAX_SHOWN_DEPTH = 64
ELLIPSIS = "\u2026"


def parse_object_graph(data: bytes) -> pb.TrackableObjectGraph:
    return parse_message(pb.TrackableObjectGraph, data, "object graph")


class NodePaths(Mapping):
    """node id -> tuple of local names on the shortest path from the root (node 0),
    for every reachable node; stored as parent links, spelled out on access."""

    def __init__(self, graph: pb.TrackableObjectGraph):
        self._links: dict[int, tuple[int, str]] = {}  # node -> (parent, local name); the root -> (-1, "")
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
