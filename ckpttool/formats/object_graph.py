"""The TF2 object graph stored under `_CHECKPOINTABLE_OBJECT_GRAPH` (FORMAT.md §5).

Maps each checkpoint key to the object path TensorFlow restores it through
(`model/dense1/kernel`), which `inspect --tree` groups by.
"""
from __future__ import annotations

from collections import deque

from ckpttool.formats.messages import parse_message
from ckpttool.formats.protos import checkpoint_pb2 as pb


def parse_object_graph(data: bytes) -> pb.TrackableObjectGraph:
    return parse_message(pb.TrackableObjectGraph, data, "object graph")


def node_paths(graph: pb.TrackableObjectGraph) -> dict[int, tuple[str, ...]]:
    """Shortest path of local names from the root (node 0) to every reachable node."""
    paths: dict[int, tuple[str, ...]] = {0: ()} if graph.nodes else {}
    queue = deque([0] if graph.nodes else [])
    while queue:
        node_id = queue.popleft()
        for child in graph.nodes[node_id].children:
            if child.node_id not in paths and 0 <= child.node_id < len(graph.nodes):
                paths[child.node_id] = paths[node_id] + (child.local_name,)
                queue.append(child.node_id)
    return paths


def key_object_paths(graph: pb.TrackableObjectGraph) -> dict[str, str]:
    """checkpoint_key -> readable object path (`model/dense1/kernel`, slots as `.../<slot m>`).

    A saveable with several tensors stores them under its key plus a suffix;
    `object_path_of` resolves those."""
    paths = node_paths(graph)
    result: dict[str, str] = {}
    for node_id, path in paths.items():
        for attribute in graph.nodes[node_id].attributes:
            suffix = () if attribute.name == "VARIABLE_VALUE" else (attribute.name,)
            result[attribute.checkpoint_key] = "/".join(path + suffix) or attribute.name
    # Slot variables are reachable only through the optimizer's slot table.
    for node in graph.nodes:
        for slot in node.slot_variables:
            owner = paths.get(slot.original_variable_node_id)
            slot_node = slot.slot_variable_node_id
            if owner is None or not 0 <= slot_node < len(graph.nodes):
                continue
            for attribute in graph.nodes[slot_node].attributes:
                result.setdefault(attribute.checkpoint_key, "/".join(owner + (f"<slot {slot.slot_name}>",)))
    return result


def object_path_of(stored_key: str, paths: dict[str, str]) -> str | None:
    """Object path of a stored tensor: its attribute's, found exactly or as the longest key prefix."""
    if stored_key in paths:
        return paths[stored_key]
    best = max((k for k in paths if stored_key.startswith(k)), key=len, default=None)
    return paths[best] if best else None
