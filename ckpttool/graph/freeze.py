"""`freeze`: a self-contained GraphDef with variables folded into constants.

TF1 graphs (a checkpoint with its .meta, or a TF1 SavedModel): import the
graph, restore the variables, graph_util.convert_variables_to_constants.
TF2 SavedModels: load, take the signature's concrete function and
convert_variables_to_constants_v2. `--check` runs the original and the
frozen graph on the same random inputs and compares.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

import numpy as np

from ckpttool.errors import BadInput, CorruptCheckpoint, NotFound, Refused, UnknownVariable, UsageProblem
from ckpttool.formats.atomic import write_bytes_atomic
from ckpttool.formats.meta import read_meta_summary
from ckpttool.graph.candidates import rank_output_candidates
from ckpttool.graph.runtime import quiet_stderr, tensorflow
from ckpttool.ops.targets import resolve_target

VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp", "AutoReloadVariable"}
INIT_SIGNATURE = "__saved_model_init_op"


@dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_diff: float
    equal: bool


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    inputs: dict[str, list[int]]
    outputs: tuple[OutputComparison, ...]


@dataclass(frozen=True)
class FreezeReport:
    source: str
    output: str
    kind: str  # "checkpoint" | "saved_model_v1" | "saved_model_v2"
    output_nodes: tuple[str, ...]
    nodes_before: int
    nodes_after: int
    variables_frozen: int
    bytes_written: int
    text: bool
    check: CheckResult | None = None
    warnings: tuple[str, ...] = field(default=())


def parse_input_shapes(specs: list[str]) -> dict[str, list[int]]:
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            if not sep:
                raise ValueError
            shapes[name.split(":")[0]] = [int(d) for d in dims.split(",")] if dims.strip() else []
        except ValueError:
            raise UsageProblem(f"--input-shape takes NAME=D1,D2,..., got {spec!r}") from None
    return shapes


def _random_value(dtype, shape, rng):
    np_dtype = np.dtype(dtype.as_numpy_dtype)
    if np_dtype.kind == "f":
        return rng.standard_normal(shape).astype(np_dtype)
    if np_dtype.kind in "iu":
        return rng.integers(0, 5, size=shape).astype(np_dtype)
    if np_dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise UsageProblem(f"--check cannot make random inputs of type {dtype.name}")


def _compare(name: str, original, frozen) -> OutputComparison:
    a, b = np.asarray(original), np.asarray(frozen)
    if a.shape != b.shape:
        return OutputComparison(name, float("inf"), False)
    if a.dtype.kind in "fc":
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        return OutputComparison(name, diff, bool(np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)))
    equal = bool(np.array_equal(a, b))
    return OutputComparison(name, 0.0 if equal else float("inf"), equal)


def _closest(name: str, names) -> str:
    matches = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f"; closest: {', '.join(matches)}" if matches else ""


def _graph_def_file_problem(path: str, tf) -> BadInput:
    """Why a bare .pb/.pbtxt cannot be frozen (already frozen, unparseable, no checkpoint)."""
    from google.protobuf import text_format

    graph_def = tf.compat.v1.GraphDef()
    try:
        data = open(path, "rb").read()
        if path.endswith(".pbtxt"):
            text_format.Parse(data.decode("utf-8"), graph_def)
        else:
            graph_def.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError / ParseError / UnicodeDecodeError
        return CorruptCheckpoint(f"{path}: unparseable GraphDef ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    if not any(node.op in VARIABLE_OPS for node in graph_def.node):
        return BadInput(f"{path} is already a frozen graph (no variables to freeze)")
    return BadInput(f"{path} is a GraphDef without its checkpoint",
                    hint="give the checkpoint (with its .meta) or the SavedModel directory")


def _check_inputs(placeholders, input_shapes) -> dict[str, list[int]]:
    shapes = {}
    for name, shape in placeholders.items():
        if name in input_shapes:
            shapes[name] = input_shapes[name]
        elif shape is not None and all(d >= 0 for d in shape):
            shapes[name] = shape
        else:
            shown = "?" if shape is None else "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"
            raise UsageProblem(f"--check needs a shape for input {name!r} (its shape is {shown})",
                               hint=f"add --input-shape {name}=D1,D2,...")
    return shapes


def _choose_tags(saved_model_dir: str, graph_path: str, tags: list[str] | None) -> list[str]:
    if tags:
        return tags
    graphs = read_meta_summary(graph_path).meta_graphs
    if len(graphs) == 1:
        return graphs[0].tags
    return ["serve"]


def _choose_signature(signatures: dict, requested: str | None, source: str):
    usable = {k: v for k, v in signatures.items() if k != INIT_SIGNATURE}
    if requested:
        if requested not in usable:
            raise UsageProblem(f"{source} has no signature {requested!r}; it has: {', '.join(sorted(usable)) or 'none'}")
        return requested, usable[requested]
    if "serving_default" in usable:
        return "serving_default", usable["serving_default"]
    if len(usable) == 1:
        return next(iter(usable.items()))
    return None, None


def _freeze_tf1(tf, target, kind, output_nodes, tags, signature, clear_devices, check, input_shapes):
    v1 = tf.compat.v1
    graph = tf.Graph()
    warnings = []
    with graph.as_default(), v1.Session(graph=graph) as sess:
        if kind == "saved_model_v1":
            meta = v1.saved_model.loader.load(sess, tags, target.saved_model_dir)
        else:
            saver = v1.train.import_meta_graph(target.meta_path, clear_devices=clear_devices)
            if saver is None:
                raise BadInput(f"{target.meta_path} has no variables to restore")
            saver.restore(sess, target.prefix)
            meta = v1.train.export_meta_graph(graph=graph)
        graph_def = graph.as_graph_def()
        names = {node.name for node in graph_def.node}
        output_tensors: list[str] = []
        if output_nodes:
            for spec in output_nodes:
                node = spec.lstrip("^").split(":")[0]
                if node not in names:
                    raise UnknownVariable(f"no node named {node!r} in the graph{_closest(node, names)}")
                output_tensors.append(spec if ":" in spec else f"{node}:0")
        else:
            chosen, sig = _choose_signature(dict(meta.signature_def), signature, target.prefix)
            if sig is None:
                ranked = rank_output_candidates(graph_def)
                raise UsageProblem("no --output-nodes and no signature to take them from; likely outputs: "
                                   + (", ".join(ranked) if ranked else "none found"),
                                   hint="rerun with --output-nodes " + (ranked[0] if ranked else "NAME"))
            output_tensors = [sig.outputs[k].name for k in sorted(sig.outputs)]
            warnings.append(f"output nodes from signature {chosen!r}")
        outputs = sorted({t.split(":")[0] for t in output_tensors})
        frozen = v1.graph_util.convert_variables_to_constants(sess, graph_def, outputs)
        if clear_devices:
            for node in frozen.node:
                node.device = ""
        variable_names = {n.name for n in graph_def.node if n.op in VARIABLE_OPS}
        frozen_variables = sum(1 for n in frozen.node if n.name in variable_names)
        result = None
        if check:
            placeholders = {}
            for node in frozen.node:
                if node.op == "Placeholder":
                    shape = node.attr["shape"].shape
                    placeholders[node.name] = None if shape.unknown_rank else [d.size for d in shape.dim]
            shapes = _check_inputs(placeholders, input_shapes)
            rng = np.random.default_rng(0)
            feeds = {f"{name}:0": _random_value(graph.get_tensor_by_name(f"{name}:0").dtype, shape, rng)
                     for name, shape in shapes.items()}
            original = sess.run(output_tensors, feeds)
            frozen_graph = tf.Graph()
            with frozen_graph.as_default():
                tf.graph_util.import_graph_def(frozen, name="")
                with v1.Session(graph=frozen_graph) as frozen_sess:
                    refrozen = frozen_sess.run(output_tensors, feeds)
            comparisons = tuple(_compare(n, a, b) for n, a, b in zip(output_tensors, original, refrozen))
            result = CheckResult(all(c.equal for c in comparisons), shapes, comparisons)
    return frozen, tuple(outputs), len(graph_def.node), frozen_variables, result, tuple(warnings)


def _freeze_tf2(tf, target, tags, signature, check, input_shapes):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    loaded = tf.saved_model.load(target.saved_model_dir, tags=tags)
    chosen, function = _choose_signature(dict(loaded.signatures), signature, target.saved_model_dir)
    if function is None:
        raise UsageProblem(f"{target.saved_model_dir} has no serving_default signature and several others; "
                           "choose one with --signature")
    try:
        frozen_function = convert_variables_to_constants_v2(function)
    except Exception as exc:  # TensorFlow's converter gives many error types
        raise BadInput(f"cannot freeze signature {chosen!r} of this TF2 SavedModel: {str(exc).splitlines()[0]}",
                       hint="serve the SavedModel as it is, or convert it with the TFLite converter") from None
    graph_def = frozen_function.graph.as_graph_def()
    outputs = tuple(t.name.split(":")[0] for t in frozen_function.outputs)
    result = None
    if check:
        specs = function.structured_input_signature[1]
        placeholders = {name: (None if spec.shape.rank is None else [-1 if d is None else d for d in spec.shape.as_list()])
                        for name, spec in specs.items()}
        shapes = _check_inputs(placeholders, input_shapes)
        rng = np.random.default_rng(0)
        feeds = {name: tf.constant(_random_value(specs[name].dtype, shape, rng)) for name, shape in shapes.items()}
        original = function(**feeds)
        refrozen = frozen_function(**feeds)
        if isinstance(refrozen, dict):
            pairs = [(k, original[k], refrozen[k]) for k in sorted(original)]
        else:
            flat = refrozen if isinstance(refrozen, (list, tuple)) else [refrozen]
            pairs = list(zip(sorted(original), [original[k] for k in sorted(original)], flat))
        comparisons = tuple(_compare(k, a.numpy(), b.numpy()) for k, a, b in pairs)
        result = CheckResult(all(c.equal for c in comparisons), shapes, comparisons)
    nodes_before = len(function.graph.as_graph_def().node)
    return graph_def, outputs, nodes_before, len(function.variables), result, (f"output nodes from signature {chosen!r}",)


def freeze(source: str, output: str, *, output_nodes: list[str] | None = None, tags: list[str] | None = None,
           signature: str | None = None, text: bool = False, clear_devices: bool = True, check: bool = False,
           input_shapes: dict[str, list[int]] | None = None, overwrite: bool = False) -> FreezeReport:
    output = os.path.abspath(output)
    if os.path.exists(output) and not overwrite:
        raise Refused(f"{output} exists (use --overwrite to replace it)")
    if not os.path.isdir(os.path.dirname(output)):
        raise NotFound(f"output directory {os.path.dirname(output)} does not exist")
    is_graph_file = os.path.isfile(source) and source.endswith((".pb", ".pbtxt")) and \
        not os.path.basename(source).startswith("saved_model.")
    if not is_graph_file:
        target = resolve_target(source)  # exit 3 with what was looked for
    with quiet_stderr():
        tf = tensorflow()
        if is_graph_file:
            raise _graph_def_file_problem(source, tf)
        if target.saved_model_dir:
            tags = _choose_tags(target.saved_model_dir, target.meta_path, tags)
            tf2 = bool(read_meta_summary(target.meta_path).meta_graphs[0].object_graph_nodes)
            kind = "saved_model_v2" if tf2 and not output_nodes else "saved_model_v1"
        else:
            if not target.meta_path:
                raise NotFound(f"no graph beside {target.prefix} (looked for {target.prefix}.meta)",
                               hint="freeze needs the .meta that tf.compat.v1.train.Saver writes, or a SavedModel")
            kind = "checkpoint"
        try:
            if kind == "saved_model_v2":
                frozen, outputs, before, variables, result, notes = _freeze_tf2(
                    tf, target, tags, signature, check, input_shapes or {})
            else:
                frozen, outputs, before, variables, result, notes = _freeze_tf1(
                    tf, target, kind, output_nodes, tags, signature, clear_devices, check, input_shapes or {})
        except tf.errors.OpError as exc:
            raise BadInput(f"TensorFlow could not load or run the graph: {exc.message.splitlines()[0]}") from None
        if text:
            from google.protobuf import text_format

            data = text_format.MessageToString(frozen).encode("utf-8")
        else:
            data = frozen.SerializeToString()
    write_bytes_atomic(output, data)
    return FreezeReport(source, output, kind, outputs, before, len(frozen.node), variables, len(data), text,
                        result, notes)
