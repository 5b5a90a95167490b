"""`ckpttool inspect TARGET`: variables, statistics, values, object tree, graph summary (its options and
help: cli/commands/inspect.py)."""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from ckpttool.cli import render
from ckpttool.errors import UsageProblem

if TYPE_CHECKING:  # the ops (and numpy) are imported only when the command runs
    from ckpttool.ops.tensors.inspect import InspectReport, VariableReport


def _variable_document(v: "VariableReport", with_values: bool) -> dict:
    doc = {"name": v.name, "dtype": v.dtype, "shape": list(v.shape), "num_elements": v.num_elements,
           "size_bytes": v.size_bytes, "partitioned": v.partitioned}
    if v.slices is not None:
        doc["slices"] = [{"slice": s.spec, "shape": list(s.shape), "shard_id": s.shard_id} for s in v.slices]
    if v.checkpoint_key is not None:
        doc["checkpoint_key"] = v.checkpoint_key
    if v.object_path is not None:
        doc["object_path"] = v.object_path
        doc["object_paths"] = list(v.object_paths or (v.object_path,))
    if v.stats is not None:
        doc["stats"] = asdict(v.stats)
    if v.sha256 is not None:
        doc["sha256"] = v.sha256
    if with_values:
        doc["value"] = v.value  # null: left out by --limit
    return doc


def _meta_document(report: "InspectReport") -> dict | None:
    return asdict(report.meta) if report.meta else None


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _stat(value, digits: int = 6) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _short_stat(cell: str) -> str:
    """A statistic in 4 significant digits, for narrow terminals."""
    try:
        return f"{float(cell):.4g}" if "." in cell or "e" in cell else cell
    except ValueError:
        return cell


def _print_table(report: "InspectReport", with_stats: bool, with_hash: bool = False) -> None:
    columns = [render.Column("name", kind=render.NAME), render.Column("dtype"), render.Column("shape"),
               render.Column("elements", right=True, drop=1), render.Column("bytes", right=True)]
    if with_hash:
        columns.append(render.Column("sha256"))
    if with_stats:
        columns += [render.Column(h, shorten=_short_stat, stack=True) for h in ("min", "max", "mean", "std")]
        columns += [render.Column(h, right=True, stack=True) for h in ("nan", "inf", "zeros")]
    rows = []
    for v in report.variables:
        shape = _shape_text(v.shape) + (f" ({v.num_slices} slices)" if v.partitioned else "")
        row = [v.name, v.dtype, shape, v.num_elements, render.human_bytes(v.size_bytes)]
        if with_hash:
            row.append(v.sha256 or "-")
        if with_stats:
            s = v.stats
            row += ["-"] * 7 if s is None else [_stat(s.min), _stat(s.max), _stat(s.mean), _stat(s.std),
                                                  s.nan_count, s.inf_count, s.zero_count]
        rows.append(row)
        for sl in v.slices or ():
            rows.append([f"  └ slice {sl.spec}", "", _shape_text(sl.shape), "", f"shard {sl.shard_id}"]
                        + ([""] if with_hash else []) + ([""] * 7 if with_stats else []))
    render.print_table(columns, rows)


# Deeper paths show their remaining components as one label: the tree's
# indentation grows with depth, so a 30,000-level path must not nest 30,000 times.
_TREE_DEPTH = 32


def _print_tree(report: "InspectReport") -> None:
    from rich.text import Text
    from rich.tree import Tree

    by_model = any(v.checkpoint_key is not None for v in report.variables)
    by_object = not by_model and report.has_object_graph and any(v.object_path for v in report.variables)
    title = "  (names through the model)" if by_model else "  (TF2 object graph: every path)" if by_object else ""
    root = Tree(Text(render.for_people(report.checkpoint) + title))
    children: dict[int, dict[str, Tree]] = {}  # id(tree node) -> its subtrees by name
    for v in report.variables:
        # A variable the object graph reaches through several paths shows under each of them.
        if by_model:
            shown, key = (v.name,), v.checkpoint_key
        elif by_object and v.object_path:
            shown, key = v.object_paths or (v.object_path,), v.name
        else:
            shown, key = (v.name,), None
        for text in shown:
            path = text.split("/")
            if len(path) > _TREE_DEPTH:
                path[_TREE_DEPTH - 1:] = ["/".join(path[_TREE_DEPTH - 1:])]
            node = root
            for component in path[:-1]:
                below = children.setdefault(id(node), {})
                if component not in below:
                    # a name's newline or tab escaped: one line of the tree each, none forged
                    below[component] = node.add(Text(render.for_people(component + "/", field=True)))
                node = below[component]
            label = f"{render.for_people(path[-1], field=True)}  {v.dtype} {_shape_text(v.shape)}"
            if key is not None and key != text:
                label += f"  <- {render.for_people(key, field=True)}"
            node.add(Text(label))
    render.console(unbounded=True).print(root)  # names are never wrapped


def _print_values(report: "InspectReport", full: bool) -> None:
    from ckpttool.ops.tensors.values import format_values

    for v in report.variables:
        head = f"{v.name} ({v.dtype} {_shape_text(v.shape)})"
        if v.value is None:
            render.print_lines([f"{head}: value left out (over --limit)", ""])
            continue
        if v.value_summarized:
            head += f", {render.plural(v.num_elements, 'element')}, summarised (--full prints all)"
        render.print_lines([f"{head}:", *format_values(v.value, v.value_summarized, full).split("\n"), ""])


def _tensor_text(spec) -> str:
    """One input or output of a signature: `x: float32 [?, 4] (serving_default_x:0)`;
    an operation (the init op's output, which is no tensor): `op NoOp`."""
    if spec.dtype == "invalid":
        return f"{spec.key}: op {spec.name}"
    shape = "unknown shape" if spec.shape is None else _shape_text("?" if d < 0 else d for d in spec.shape)
    return f"{spec.key}: {spec.dtype} {shape} ({spec.name})"


def _print_file_metadata(metadata: dict) -> None:
    """A safetensors __metadata__ (strings), or a .keras archive's summary (with its layers)."""
    layers = metadata.get("layers") if isinstance(metadata.get("layers"), list) else None
    lines = [f"{key}: {value}" for key, value in metadata.items() if key != "layers" or layers is None]
    render.print_wrapped(["metadata:"] + [f"  {line}" for line in lines] if lines else ["metadata: (none)"])
    if layers:
        render.print_table(["layer", "class"], [(layer["name"], layer["class_name"]) for layer in layers])


def _print_meta(report: "InspectReport") -> None:
    meta = report.meta
    count = "" if meta.kind == "graph_def" else f", {render.plural(len(meta.meta_graphs), 'meta graph')}"
    lines = [f"graph: {meta.path} ({meta.kind}{count})"]
    for graph in meta.meta_graphs:
        if meta.kind != "graph_def":
            lines.append(f"  tags: {', '.join(graph.tags) or '-'}   tensorflow: {graph.tensorflow_version or '-'}")
        in_functions = f" ({graph.num_function_nodes} nodes)" if graph.num_functions else ""
        lines.append(f"  nodes: {graph.num_nodes}   functions: {graph.num_functions}{in_functions}")
        ops = ", ".join(f"{op} x{n}" for op, n in graph.op_counts.items())
        lines.append(f"  ops ({len(graph.op_counts)} types, functions included): {ops or '-'}")
        lines += [f"  input  {_tensor_text(t)}" for t in graph.inputs]
        if graph.likely_outputs:
            lines.append(f"  likely outputs: {', '.join(graph.likely_outputs)}")
        if graph.collections:
            lines.append("  collections: " + ", ".join(f"{k} ({n})" for k, n in graph.collections.items()))
        if graph.saver_def:
            s = graph.saver_def
            lines.append(f"  saver: {s['version']}, restore op {s['restore_op_name']}, "
                         f"max_to_keep {s['max_to_keep']}, sharded {s['sharded']}")
        for sig in graph.signatures:
            lines.append(f"  signature {sig.name}" + (f" ({sig.method_name})" if sig.method_name else "") + ":")
            lines += [f"    input  {_tensor_text(t)}" for t in sig.inputs]
            lines += [f"    output {_tensor_text(t)}" for t in sig.outputs]
    render.print_wrapped(lines)


JSON_VALUES_WARNING = 100 << 20  # --json --values past this many stored bytes: say so, and how to cap it


def _values_warning(total: int) -> None:
    if total > JSON_VALUES_WARNING:
        render.warn(f"--values puts {render.human_bytes(total)} of tensors into the JSON document (several times "
                    "that as text); `--limit BYTES` caps it")


def run(target: str, *, filter_: str | None = None, name: list[str] | None = None, all_: bool = False,
        stats: bool = False, values: bool = False, full: bool = False, limit: str | None = None, tree: bool = False,
        slices: bool = False, hash_: bool = False, meta: bool = False, graph: bool = False,
        min_elements: int | None = None, names: str = "key", json_out: bool = False, quiet: bool = False) -> int:
    from ckpttool.cli.progress import byte_progress, showing
    from ckpttool.ops.tensors.inspect import VALUES_FULL, VALUES_SUMMARY, inspect_checkpoint
    from ckpttool.ops.patterns import compile_optional
    from ckpttool.ops.targets import resolve_target

    if (full or limit is not None) and not values:
        raise UsageProblem(f"{'--full' if full else '--limit'} goes with --values")
    compile_optional(filter_, "--filter")  # a bad pattern is a usage error before anything is read
    values_limit = None
    if limit is not None:
        from ckpttool.ops.tensors.convert import parse_size

        values_limit = parse_size(limit)
    if min_elements is None and all_:
        min_elements = 0
    resolved = resolve_target(target, graph_only_ok=True, graph=graph, min_elements=min_elements)
    render.say_resolved(target, resolved, header=not quiet)
    mode = (VALUES_FULL if full or json_out else VALUES_SUMMARY) if values else None
    passes = int(stats) + int(hash_)  # each reads every value once
    total = 0
    if passes and showing(json_out):  # only a progress bar needs the total (reading the index once more)
        from ckpttool.ops.tensors.verify import total_bytes

        total = total_bytes(resolved) * passes
    with byte_progress("reading", total, json_out) as advance:
        report = inspect_checkpoint(resolved, pattern=filter_, names=tuple(name or ()), include_internal=all_,
                                    with_stats=stats, values=mode, values_limit=values_limit,
                                    on_values=_values_warning if json_out and limit is None else None,
                                    with_slices=slices, with_meta=meta, with_object_paths=tree, on_progress=advance,
                                    naming=names, with_hash=hash_)
    if filter_ is not None and not report.filter_matches:
        render.warn(f"--filter {filter_!r} matches no variable")
    render.warn_all(report.warnings)
    if meta and report.meta is None and report.file_metadata is None:
        render.warn(f"no .meta or SavedModel graph beside {report.checkpoint}")
    if json_out:
        doc = {"checkpoint": report.checkpoint, "format": report.format, "num_variables": report.num_variables,
               "total_elements": report.total_elements, "total_bytes": report.total_bytes,
               "variables": [_variable_document(v, values) for v in report.variables]}
        if values:
            doc.update(values_limit_bytes=values_limit, values_omitted=report.values_omitted)
        if meta:
            doc["meta"] = _meta_document(report)
            if report.file_metadata is not None:
                doc["file_metadata"] = report.file_metadata
        render.emit_json("inspect", doc)
        return 0
    if quiet:
        render.print_lines(v.name for v in report.variables)
        return 0
    if tree:
        _print_tree(report)
    else:
        _print_table(report, stats, hash_)
    if values:
        _print_values(report, full)
    if report.meta:
        _print_meta(report)
    if report.file_metadata is not None:
        _print_file_metadata(report.file_metadata)
    render.print_wrapped([f"{render.plural(report.num_variables, 'variable')}, "
                        f"{render.plural(report.total_elements, 'element')}, "
                        f"{render.human_bytes(report.total_bytes)} ({report.format})"])
    return 0

