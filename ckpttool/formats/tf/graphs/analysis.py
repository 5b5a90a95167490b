"""What a graph is, without TensorFlow: its likely outputs (for `freeze` without --output-nodes
and `inspect --meta`), its inputs, and every op type it uses.

Pure logic over a GraphDef, ours (protos/graph.proto) or TensorFlow's (the same field names):
likely outputs are sink nodes outside the save/restore, init, training, summary and
moving-average subgraphs, preferring nodes a person named over auto-named ones, and demoting
the loss (the op whose gradient is seeded by `gradients/grad_ys_0`).
"""
from __future__ import annotations

import re
from collections import Counter

_EXCLUDED_SCOPE = re.compile(
    r"^(save(_\d+)?|init(_\d+)?|gradients(_\d+)?|train(_\d+)?|report_uninitialized_\w+|summaries|"
    r"ExponentialMovingAverage|\w*Optimizer\w*|GradientDescent|Adam|Momentum|RMSProp|Adagrad|Ftrl|"
    r"beta[12]_power|global_step|Merge(Summary)?(_\d+)?)(/|$)")
_EXCLUDED_OPS = {
    "NoOp", "SaveV2", "RestoreV2", "SaveSlices", "RestoreSlice", "MergeV2Checkpoints", "ShardedFilename",
    "StringJoin", "Assign", "AssignAdd", "AssignSub", "AssignVariableOp", "AssignAddVariableOp",
    "AssignSubVariableOp", "VariableV2", "Variable", "VarHandleOp", "VarIsInitializedOp", "IsVariableInitialized",
    "ReadVariableOp", "Placeholder", "PlaceholderWithDefault", "Const", "ScalarSummary", "HistogramSummary",
    "MergeSummary", "ImageSummary", "TensorSummaryV2", "Assert", "Print", "PrintV2",
}
_GRAD_SEED = re.compile(r"^gradients(_\d+)?/(grad_ys_\d+|Fill|ones)$")
_GRAD_OF = re.compile(r"^gradients(_\d+)?/(?P<forward>.+?)_grad/")
_INITIALIZER_OPS = {"Assign", "AssignVariableOp"}
# TF2 graphs save and restore through functions called with this placeholder (the SavedModel's saver).
_SAVER_FILENAME = "saver_filename"


def _node_name(input_name: str) -> str:
    return input_name.lstrip("^").split(":")[0]


def _auto_named(name: str, op: str) -> bool:
    """True for names TensorFlow made up from the op type (`Square`, `add_1`, `MatMul`)."""
    base = re.sub(r"_\d+$", "", name.rsplit("/", 1)[-1])
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()
    return base in (op, snake, op.lower()) or base in ("add", "mul", "sub", "truediv", "Identity")


def _excluded(node) -> bool:
    return (node.op in _EXCLUDED_OPS or any(_node_name(i) == _SAVER_FILENAME for i in node.input) or node.op.startswith(("Apply", "ResourceApply")) or bool(_EXCLUDED_SCOPE.match(node.name))
            or "/ExponentialMovingAverage" in node.name or "_grad/" in node.name or node.name.endswith("/read"))


def _is_scalar(node) -> bool:
    shapes = node.attr["_output_shapes"].list.shape if "_output_shapes" in node.attr else []
    if shapes:
        return not shapes[0].unknown_rank and len(shapes[0].dim) == 0
    return node.op in ("Mean", "Sum") and "keep_dims" in node.attr and not node.attr["keep_dims"].b


def rank_output_candidates(graph_def, limit: int = 8) -> list[str]:
    nodes = {node.name: node for node in graph_def.node}
    consumers: dict[str, list[str]] = {name: [] for name in nodes}
    for node in graph_def.node:
        for inp in node.input:
            source = _node_name(inp)
            if source in consumers:
                consumers[source].append(node.name)
    # The loss is the forward op whose gradient nodes take the gradient seed.
    losses = set()
    for node in graph_def.node:
        match = _GRAD_OF.match(node.name)
        if match and any(_GRAD_SEED.match(_node_name(i)) for i in node.input):
            losses.add(match["forward"])
    loss_region: set[str] = set()
    stack = list(losses)
    while stack:
        name = stack.pop()
        if name in loss_region or name not in nodes:
            continue
        loss_region.add(name)
        stack.extend(_node_name(i) for i in nodes[name].input)
    scored = []
    for name, node in nodes.items():
        if _excluded(node):
            continue
        if any(nodes[c].op in _INITIALIZER_OPS for c in consumers[name]):
            continue  # an initial value
        live = [c for c in consumers[name] if not _excluded(nodes[c])]
        if not live:
            score = 2.0
        elif all(c in loss_region for c in live):
            score = 1.0  # feeds only the loss: a model output the loss is computed from
        else:
            continue
        if not _auto_named(name, node.op):
            score += 1.5
        if name in losses or (name in loss_region and _is_scalar(node)):
            score -= 2.0
        scored.append((-score, name))
    return [name for _score, name in sorted(scored)[:limit]]


def op_counts(graph_def) -> dict[str, int]:
    """Every op type used, with counts: the graph's nodes and those of its function library (TF2
    graphs keep most of their ops in functions), most used first."""
    ops = Counter(node.op for node in graph_def.node)
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return dict(sorted(ops.items(), key=lambda item: (-item[1], item[0])))


def placeholders(graph_def) -> list[tuple[str, int, list[int] | None]]:
    """(name, dtype code, shape) of each Placeholder of the graph (its inputs); shape None when the
    rank is unknown, -1 for an unknown dimension."""
    found = []
    for node in graph_def.node:
        if node.op not in ("Placeholder", "PlaceholderWithDefault") or node.name == _SAVER_FILENAME or \
                _EXCLUDED_SCOPE.match(node.name):
            continue  # the saver's file name (save/filename, saver_filename) is no input of the model
        shape = node.attr["shape"].shape if "shape" in node.attr else None
        dims = None if shape is None or shape.unknown_rank else [d.size for d in shape.dim]
        found.append((node.name, node.attr["dtype"].type if "dtype" in node.attr else 0, dims))
    return found
