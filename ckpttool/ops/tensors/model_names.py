"""`--names model`: variables named by their path through the model instead of their checkpoint key.

In a TF2 checkpoint each variable is stored under the FIRST path a breadth-first walk of the object
graph finds, which may well go through the optimizer (Keras 3: `optimizer/_trainable_variables/0`).
Its model name is the least of its shortest paths that pass through no optimizer, without
`.ATTRIBUTES/VARIABLE_VALUE` (`model/_functional/_operations/1/_kernel`); optimizer state that
belongs to a model variable is named after it (`.../_kernel/m`). The names come from the graph's
structure and local names only (formats/tf/object_graph.model_names), so every checkpoint of one
run names its variables alike. Sources without a TF2 object graph (TF1 checkpoints, safetensors,
.npz, Keras files) keep their names, so a file converted with `--names model` compares with the
checkpoint it came from. Two variables given the same name are refused, naming both keys.
"""
from __future__ import annotations

from ckpttool.errors import Refused, UsageProblem
from ckpttool.formats.variables import OBJECT_GRAPH_KEY

NAMINGS = ("key", "model")  # --names: the checkpoint key as stored, or the path through the model
_SHOWN_CLASHES = 5


def check_naming(naming: str) -> str:
    if naming not in NAMINGS:
        raise UsageProblem(f"--names must be one of {', '.join(NAMINGS)}, not {naming!r}")
    return naming


def model_name_mapping(names: list[str], object_graph: bytes | None, unique: bool = True) -> dict[str, str]:
    """Stored name -> model name for each of `names`. A stored tensor that an attribute key only
    prefixes (a saveable with several tensors) keeps its suffix; names the graph does not know,
    and every name without a graph, stay as they are. Refused when two names meet (`unique`; a
    caller that drops some names first checks what it keeps, as compute_mapping does)."""
    mapping = {name: name for name in names}
    if object_graph is not None:
        # protobuf only now: `--names key` (the default) must not pay for it
        from ckpttool.formats.tf.object_graph import KeyObjectPaths, model_names, parse_object_graph

        by_key = model_names(parse_object_graph(object_graph))
        attribute_of = KeyObjectPaths({key: key for key in by_key})
        for name in names:
            if name == OBJECT_GRAPH_KEY:
                continue
            key = attribute_of.of(name)
            if key is not None:
                mapping[name] = by_key[key] + name[len(key):]
    if unique:
        check_unique(mapping)
    return mapping


def check_unique(mapping: dict[str, str]) -> None:
    """Refused (naming the clashing keys) when two stored names get the same new name."""
    sources: dict[str, list[str]] = {}
    for old, new in mapping.items():
        sources.setdefault(new, []).append(old)
    clashes = sorted((new, olds) for new, olds in sources.items() if len(olds) > 1)
    if clashes:
        shown = "; ".join(f"{new!r} <- " + ", ".join(repr(o) for o in sorted(olds)) for new, olds in
                          clashes[:_SHOWN_CLASHES])
        more = f" (and {len(clashes) - _SHOWN_CLASHES} more)" if len(clashes) > _SHOWN_CLASHES else ""
        raise Refused(f"--names model gives several variables one name: {shown}{more}",
                      hint="use --names key (the checkpoint keys), or rename the objects")


def reader_names(reader, naming: str) -> dict[str, str]:
    """Stored name -> shown name for every variable of an open reader (internal entries kept)."""
    names = [v.name for v in reader.variables]
    if check_naming(naming) == "key":
        return {name: name for name in names}
    graph = reader.object_graph_bytes() if reader.variable(OBJECT_GRAPH_KEY) is not None else None
    return model_name_mapping(names, graph)
