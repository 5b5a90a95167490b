"""`ckpttool inspect TARGET`: variables, statistics, values, object tree, graph summary."""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.options import Json, Quiet, TargetArg

if TYPE_CHECKING:  # the ops (and numpy) are imported only when the command runs
    from ckpttool.ops.inspect import InspectReport, VariableReport


def _variable_document(v: "VariableReport") -> dict:
    doc = {"name": v.name, "dtype": v.dtype, "shape": list(v.shape), "num_elements": v.num_elements,
           "size_bytes": v.size_bytes, "partitioned": v.partitioned}
    if v.slices is not None:
        doc["slices"] = [{"slice": s.spec, "shape": list(s.shape), "shard_id": s.shard_id} for s in v.slices]
    if v.object_path is not None:
        doc["object_path"] = v.object_path
    if v.stats is not None:
        doc["stats"] = asdict(v.stats)
    if v.value is not None:
        doc["value"] = v.value
    return doc


def _meta_document(report: "InspectReport") -> dict | None:
    return asdict(report.meta) if report.meta else None


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _stat(value, digits: int = 6) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _print_table(report: "InspectReport", with_stats: bool) -> None:
    columns = ["name", "dtype", "shape", "elements", "bytes"]
    if with_stats:
        columns += ["min", "max", "mean", "std", "nan", "inf", "zeros"]
    rows = []
    for v in report.variables:
        shape = _shape_text(v.shape) + (f" ({v.num_slices} slices)" if v.partitioned else "")
        row = [v.name, v.dtype, shape, v.num_elements, render.human_bytes(v.size_bytes)]
        if with_stats:
            s = v.stats
            row += ["-"] * 7 if s is None else [_stat(s.min), _stat(s.max), _stat(s.mean), _stat(s.std),
                                                  s.nan_count, s.inf_count, s.zero_count]
        rows.append(row)
        for sl in v.slices or ():
            rows.append([f"  └ slice {sl.spec}", "", _shape_text(sl.shape), "", f"shard {sl.shard_id}"]
                        + ([""] * 7 if with_stats else []))
    render.print_table(columns, rows, right=["elements", "bytes", "nan", "inf", "zeros"])


# Deeper paths show their remaining components as one label: the tree's
# indentation grows with depth, so a 30,000-level path must not nest 30,000 times.
_TREE_DEPTH = 32


def _print_tree(report: "InspectReport") -> None:
    from rich.text import Text
    from rich.tree import Tree

    by_object = report.has_object_graph and any(v.object_path for v in report.variables)
    root = Tree(Text(render.for_people(report.checkpoint) + ("  (TF2 object graph)" if by_object else "")))
    children: dict[int, dict[str, Tree]] = {}  # id(tree node) -> its subtrees by name
    for v in report.variables:
        path = (v.object_path if by_object and v.object_path else v.name).split("/")
        if len(path) > _TREE_DEPTH:
            path[_TREE_DEPTH - 1:] = ["/".join(path[_TREE_DEPTH - 1:])]
        node = root
        for component in path[:-1]:
            below = children.setdefault(id(node), {})
            if component not in below:
                below[component] = node.add(Text(render.for_people(component + "/")))
            node = below[component]
        label = f"{path[-1]}  {v.dtype} {_shape_text(v.shape)}"
        if by_object and v.object_path:
            label += f"  <- {v.name}"
        node.add(Text(render.for_people(label)))
    render.console().print(root)


def _print_values(report: "InspectReport") -> None:
    import numpy as np

    for v in report.variables:
        if v.value is None:
            continue
        render.print_lines([f"{v.name} ({v.dtype} {_shape_text(v.shape)}):",
                            *np.array2string(np.asarray(v.value), threshold=1000, separator=", ").split("\n"), ""])


def _print_meta(report: "InspectReport") -> None:
    meta = report.meta
    lines = [f"graph: {meta.path} ({meta.kind}, {len(meta.meta_graphs)} meta graph(s))"]
    for graph in meta.meta_graphs:
        lines.append(f"  tags: {', '.join(graph.tags) or '-'}   tensorflow: {graph.tensorflow_version or '-'}")
        top_ops = ", ".join(f"{op} x{n}" for op, n in list(graph.op_counts.items())[:8])
        lines.append(f"  nodes: {graph.num_nodes}   functions: {graph.num_functions}   ops: {top_ops or '-'}")
        if graph.collections:
            lines.append("  collections: " + ", ".join(f"{k} ({n})" for k, n in graph.collections.items()))
        if graph.saver_def:
            s = graph.saver_def
            lines.append(f"  saver: {s['version']}, restore op {s['restore_op_name']}, "
                         f"max_to_keep {s['max_to_keep']}, sharded {s['sharded']}")
        for sig in graph.signatures:
            ins = ", ".join(f"{t.key}={t.name} {t.dtype}{t.shape}" for t in sig.inputs)
            outs = ", ".join(f"{t.key}={t.name} {t.dtype}{t.shape}" for t in sig.outputs)
            lines.append(f"  signature {sig.name} ({sig.method_name}): {ins} -> {outs}")
    render.print_lines(lines)


def command(
    target: TargetArg,
    filter_: Annotated[Optional[str], typer.Option("--filter", "-f", help="Only variables whose name matches this regular expression.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also internal entries such as _CHECKPOINTABLE_OBJECT_GRAPH.")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="min/max/mean/std and NaN/Inf/zero counts, streamed in bounded memory.")] = False,
    values: Annotated[bool, typer.Option("--values", help="Print the tensors themselves.")] = False,
    tree: Annotated[bool, typer.Option("--tree", help="Group by scope, or by the TF2 object graph.")] = False,
    slices: Annotated[bool, typer.Option("--slices", help="Show the stored slices of partitioned variables.")] = False,
    meta: Annotated[bool, typer.Option("--meta", help="Summarise the .meta / SavedModel graph.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """List the variables of a checkpoint: name, dtype, shape, elements, bytes."""
    from ckpttool.cli.progress import byte_progress
    from ckpttool.ops.inspect import inspect_checkpoint
    from ckpttool.ops.verify import total_bytes

    with byte_progress("statistics", total_bytes(target) if stats and not json_out else 0, json_out) as advance:
        report = inspect_checkpoint(target, pattern=filter_, include_internal=all_, with_stats=stats,
                                    with_values=values, with_slices=slices, with_meta=meta, with_object_paths=tree,
                                    on_progress=advance)
    render.warn_all(report.all_warnings)
    if meta and report.meta is None:
        render.warn(f"no .meta or SavedModel graph beside {report.checkpoint}")
    if json_out:
        doc = {"checkpoint": report.checkpoint, "format": report.format, "num_variables": report.num_variables,
               "total_elements": report.total_elements, "total_bytes": report.total_bytes,
               "variables": [_variable_document(v) for v in report.variables]}
        if meta:
            doc["meta"] = _meta_document(report)
        render.emit_json("inspect", doc)
        return 0
    if quiet:
        render.print_lines(v.name for v in report.variables)
        return 0
    if tree:
        _print_tree(report)
    else:
        _print_table(report, stats)
    if values:
        _print_values(report)
    if report.meta:
        _print_meta(report)
    render.print_lines([f"{report.num_variables} variables, {report.total_elements} elements, "
                        f"{render.human_bytes(report.total_bytes)} ({report.format})"])
    return 0
