"""`freeze`: a self-contained GraphDef with variables folded into constants.

TF1 graphs (a checkpoint with its .meta, or a TF1 SavedModel): import the
graph, restore the variables, graph_util.convert_variables_to_constants. A
checkpoint's (or TF1 SavedModel's) graph is imported without the file's Saver
and restored with one ckpttool builds, and values are read with ckpttool's
own ops: no node of the file runs unless --check asks (README "What freeze
executes").
TF2 SavedModels: load, take the signature's concrete function and
convert_variables_to_constants_v2; when tf.saved_model.load cannot revive
the objects (Keras SavedModels of TF 2.0-2.4 carrying optimizer slots), the
TF1 loader and the signature do the job instead. Device placements are
cleared at load (a model exported on GPUs freezes on a CPU-only machine).
`--check` runs the original and the frozen graph on the same random inputs
and compares.
"""
from __future__ import annotations

import contextlib
import difflib
import os
from dataclasses import dataclass, field

import numpy as np

from ckpttool.errors import BadInput, NotFound, UnknownVariable, UsageProblem
from ckpttool.storage import fs
from ckpttool.formats.tf.graphs.analysis import rank_output_candidates
from ckpttool.graph.check import CheckResult, check_result, compare, input_shapes_for_check, random_value
from ckpttool.graph.custom_ops import require_registered_ops
from ckpttool.graph.library import refuse_recursive_functions
from ckpttool.graph.protos import meta_graph_with_tags, read_graph_def, read_meta_graph, read_saved_model
from ckpttool.graph.runtime import quiet_stderr, tensorflow, tensorflow_errors
from ckpttool.ops.destination import check_destination, files_read, refuse_writing_over_source, write_destination
from ckpttool.ops.fetch import local_target
from ckpttool.ops.targets import Target, resolve_target

VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp", "AutoReloadVariable"}
INIT_SIGNATURE = "__saved_model_init_op"


@dataclass(frozen=True)
class FreezeReport:
    source: str
    output: str
    kind: str  # "checkpoint" | "saved_model_v1" | "saved_model_v2" (how it was loaded)
    output_nodes: tuple[str, ...]
    nodes_before: int
    nodes_after: int
    variables_frozen: int
    bytes_written: int
    text: bool
    check: CheckResult | None = None
    signature: str | None = None  # the signature the outputs came from
    signature_outputs: dict[str, str] | None = None  # its output names -> tensors of the frozen graph
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class _Frozen:
    graph_def: object
    output_nodes: tuple[str, ...]
    nodes_before: int
    variables_frozen: int
    check: CheckResult | None
    signature: str | None
    signature_outputs: dict[str, str] | None


@dataclass(frozen=True)
class _Options:
    output_nodes: list[str] | None
    tags: list[str]
    signature: str | None
    clear_devices: bool
    check: bool
    input_shapes: dict[str, list[int]]


def _closest(name: str, names) -> str:
    matches = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f"; closest: {', '.join(matches)}" if matches else ""


def _graph_def_file_problem(path: str) -> BadInput:
    """Why a bare .pb/.pbtxt cannot be frozen (already frozen, or no checkpoint beside it)."""
    graph_def = read_graph_def(path)
    if not any(node.op in VARIABLE_OPS for node in graph_def.node):
        return BadInput(f"{path} is already a frozen graph (no variables to freeze)")
    return BadInput(f"{path} is a GraphDef without its checkpoint",
                    hint="give the checkpoint (with its .meta) or the SavedModel directory")


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


def _tensor_names(info) -> list[str]:
    """The graph tensors behind a signature's TensorInfo (a sparse or composite one has several)."""
    encoding = info.WhichOneof("encoding")
    if encoding == "coo_sparse":
        sparse = info.coo_sparse
        return [sparse.indices_tensor_name, sparse.values_tensor_name, sparse.dense_shape_tensor_name]
    if encoding == "composite_tensor":
        return [name for component in info.composite_tensor.components for name in _tensor_names(component)]
    return [info.name]


def _tf1_output_tensors(graph_def, meta_graph, options: _Options, source: str):
    """(output tensors, signature name, signature output -> tensor names) for the TF1 path."""
    if options.output_nodes:
        names = {node.name for node in graph_def.node}
        tensors = []
        for spec in options.output_nodes:
            node = spec.lstrip("^").split(":")[0]
            if node not in names:
                raise UnknownVariable(f"no node named {node!r} in the graph{_closest(node, names)}")
            tensors.append(spec if ":" in spec else f"{node}:0")
        return tensors, None, None
    chosen, sig = _choose_signature(dict(meta_graph.signature_def), options.signature, source)
    if sig is None:
        raise _no_outputs(graph_def)
    mapping = {key: _tensor_names(sig.outputs[key]) for key in sorted(sig.outputs)}
    tensors = [name for names in mapping.values() for name in names]
    return tensors, chosen, {key: ", ".join(names) for key, names in mapping.items()}


def _no_outputs(graph_def) -> UsageProblem:
    ranked = rank_output_candidates(graph_def)
    return UsageProblem("no --output-nodes and no signature to take them from; likely outputs: "
                        + (", ".join(ranked) if ranked else "none found"),
                        hint="rerun with --output-nodes " + (ranked[0] if ranked else "NAME"))


def _suggest_outputs_without_tensorflow(target: Target, tags: list[str] | None, signature: str | None) -> None:
    """No --output-nodes, and the graph has no signature to take them from: the likely outputs are
    ranked from the file with ckpttool's own protos (formats/tf/graphs/analysis.py), before TensorFlow
    is imported. Anything less clear-cut is left to the TensorFlow path."""
    from ckpttool.formats.tf.graphs.meta import read_meta_graphs

    if signature or target.meta_path is None or target.meta_path.endswith((".pbtxt", ".cpb")):
        return
    _kind, metas = read_meta_graphs(target.meta_path)
    if tags:
        metas = [m for m in metas if set(m.meta_info_def.tags) == set(tags)]
    elif len(metas) > 1:
        metas = [m for m in metas if set(m.meta_info_def.tags) == {"serve"}]
    if len(metas) == 1 and not any(name != INIT_SIGNATURE for name in metas[0].signature_def):
        raise _no_outputs(metas[0].graph_def)


def _refuse_variables_with_inputs(graph_def, source: str) -> None:
    """A variable node takes no input: one with an input or a control input (crafted) would run
    other nodes of the file whenever the variable is restored or read."""
    for node in graph_def.node:
        if node.op in VARIABLE_OPS and node.input:
            raise BadInput(f"{source}: variable {node.name!r} has inputs ({', '.join(node.input[:3])}); a variable "
                           "takes none, and freeze runs no other node of the file")


def _without_saver(meta_graph):
    """The meta graph without its Saver: the file's saver_def names a restore op, which is the file's
    own code (a crafted one can do anything an op can: write files, ...)."""
    stripped = type(meta_graph)()
    stripped.CopyFrom(meta_graph)
    stripped.ClearField("saver_def")
    if "savers" in stripped.collection_def:
        del stripped.collection_def["savers"]
    return stripped


_ASSIGN_OPS = {"Assign", "AssignVariableOp"}


def _saved_names(meta_graph) -> dict[str, str]:
    """Variable node -> the key the file's Saver stores it under (`Saver({"old/name": var})` saves
    under another name than the variable's), read from the restore subgraph the saver_def names,
    never run: each assignment's value traced through Identity nodes to `RestoreV2:i`, whose key
    is entry i of RestoreV2's constant tensor_names. Empty when the graph is not laid out so."""
    nodes = {node.name: node for node in meta_graph.graph_def.node}

    def node_of(name: str):
        return nodes.get(name.lstrip("^").split(":")[0])

    def output_index(name: str) -> int:
        return int(name.rpartition(":")[2]) if ":" in name else 0

    names: dict[str, str] = {}
    seen, pending = set(), [meta_graph.saver_def.restore_op_name]
    while pending:
        node = node_of(pending.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op in _ASSIGN_OPS and len(node.input) >= 2:
            value = node.input[1]
            while (source := node_of(value)) is not None and source.op == "Identity" and source.input:
                value = source.input[0]
            keys = node_of(source.input[1]) if source is not None and source.op == "RestoreV2" and \
                len(source.input) >= 2 else None
            index = output_index(value)
            if keys is not None and keys.op == "Const" and index < len(keys.attr["value"].tensor.string_val):
                key = keys.attr["value"].tensor.string_val[index].decode("utf-8", "surrogateescape")
                names[node.input[0].split(":")[0]] = key
            continue
        pending.extend(node.input)
    return names


def _restore_variables(tf, sess, target: Target, saved_names: dict[str, str]) -> None:
    """Restore the graph's variables that the checkpoint holds, with a Saver ckpttool builds over
    them (its RestoreV2 and assignments are ckpttool's ops, never the file's restore op)."""
    v1 = tf.compat.v1
    with tensorflow_errors(f"read the variable list of {target.prefix}"):
        held = set(tf.train.load_checkpoint(target.prefix).get_variable_to_shape_map())
    variables = v1.global_variables()
    if not variables:
        raise BadInput(f"{target.meta_path} has no variables to restore")
    var_list: dict = {}
    for var in variables:
        info = var._save_slice_info  # a partitioned variable's part: saved under its whole name
        name = info.full_name if info else saved_names.get(var.op.name, var.op.name)
        if name not in held:
            continue  # not saved by this checkpoint's Saver: left as it is, as that Saver left it
        if var.op.type not in VARIABLE_OPS or list(var.op.inputs) or var.op.control_inputs:
            raise BadInput(f"{target.meta_path}: {var.op.name!r} is listed as a variable but is a {var.op.type} "
                           "node with inputs; freeze runs no other node of the file")
        if info:
            var_list.setdefault(name, []).append(var)
        else:
            var_list[name] = var
    if not var_list:
        raise BadInput(f"{target.prefix} holds none of the variables of {target.meta_path}")
    with tensorflow_errors(f"restore {target.prefix}"):
        v1.train.Saver(var_list=var_list).restore(sess, target.prefix)


class _VariableReads:
    """The session convert_variables_to_constants reads the variables' values through. It asks for
    a resource variable's `<name>/Read/ReadVariableOp:0`, a node of the file that may carry control
    inputs of its own; each read here is an op ckpttool adds on the variable's handle instead (a
    reference variable's value is the variable node's own output, checked to take no input)."""

    _READ = "/Read/ReadVariableOp:0"

    def __init__(self, tf, sess):
        self._tf, self._sess = tf, sess

    def run(self, names):
        graph, fetches = self._sess.graph, []
        with graph.as_default():
            for name in names:
                if name.endswith(self._READ):
                    handle = graph.get_tensor_by_name(name[: -len(self._READ)] + ":0")
                    fetches.append(self._tf.raw_ops.ReadVariableOp(resource=handle,
                                                                    dtype=handle.op.get_attr("dtype")))
                else:
                    fetches.append(graph.get_tensor_by_name(name))
        return self._sess.run(fetches)


def _freeze_tf1(tf, target: Target, kind: str, meta_graph, options: _Options) -> _Frozen:
    v1 = tf.compat.v1
    graph = tf.Graph()
    # Placements on devices this machine lacks (kept by --keep-devices) fall back to the CPU.
    config = v1.ConfigProto(allow_soft_placement=True)
    with graph.as_default(), v1.Session(graph=graph, config=config) as sess:
        # A TF1 SavedModel is restored as a checkpoint is, unless --check asks for TensorFlow's loader
        # (which runs the SavedModel's restore and init ops, as serving would); a TF2 one needs that loader.
        own_restore = kind == "checkpoint" or not options.check and not meta_graph.object_graph_def.nodes
        if own_restore:
            with tensorflow_errors(f"import the graph {target.meta_path}"):
                v1.train.import_meta_graph(_without_saver(meta_graph), clear_devices=options.clear_devices)
            if target.format != "none":  # a graph-only SavedModel has no variables to restore
                _restore_variables(tf, sess, target, _saved_names(meta_graph))
        else:
            with tensorflow_errors(f"load the SavedModel {target.saved_model_dir}"):
                v1.saved_model.loader.load(sess, options.tags, target.saved_model_dir,
                                           clear_devices=options.clear_devices)
        graph_def = graph.as_graph_def()
        # The graph as the file has it, not counting the Saver nodes ckpttool added.
        nodes_before = len(meta_graph.graph_def.node) if own_restore else len(graph_def.node)
        output_tensors, signature, signature_outputs = _tf1_output_tensors(
            graph_def, meta_graph, options, target.meta_path or target.prefix)
        outputs = sorted({t.split(":")[0] for t in output_tensors})
        with tensorflow_errors("freeze the graph"):
            frozen = v1.graph_util.convert_variables_to_constants(_VariableReads(tf, sess), graph_def, outputs)
        if options.clear_devices:
            for node in frozen.node:
                node.device = ""
        variable_names = {n.name for n in graph_def.node if n.op in VARIABLE_OPS}
        frozen_variables = sum(1 for n in frozen.node if n.name in variable_names)
        result = None
        if options.check:
            declared = {node.name: None if node.attr["shape"].shape.unknown_rank
                        else [d.size for d in node.attr["shape"].shape.dim]
                        for node in frozen.node if node.op == "Placeholder"}
            dtypes = {node.name: tf.dtypes.as_dtype(node.attr["dtype"].type)
                      for node in frozen.node if node.op == "Placeholder"}
            shapes = input_shapes_for_check(declared, options.input_shapes)
            rng = np.random.default_rng(0)
            feeds = {f"{name}:0": random_value(dtypes[name], shape, rng) for name, shape in shapes.items()}
            with tensorflow_errors("run the original graph for --check"):
                original = sess.run(output_tensors, feeds)
            with tensorflow_errors("run the frozen graph for --check"), tf.Graph().as_default() as frozen_graph:
                tf.graph_util.import_graph_def(frozen, name="")
                with v1.Session(graph=frozen_graph, config=config) as frozen_sess:
                    refrozen = frozen_sess.run(output_tensors, feeds)
            result = check_result(shapes, (compare(n, a, b) for n, a, b in zip(output_tensors, original, refrozen)))
    return _Frozen(frozen, tuple(outputs), nodes_before, frozen_variables, result, signature, signature_outputs)


def _load_tf2(tf, target: Target, tags: list[str]):
    with tensorflow_errors("load the SavedModel with tf.saved_model.load"):
        return tf.saved_model.load(target.saved_model_dir, tags=tags)


def _freeze_tf2(tf, loaded, target: Target, options: _Options) -> _Frozen:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    chosen, function = _choose_signature(dict(loaded.signatures), options.signature, target.saved_model_dir)
    if function is None:
        raise UsageProblem(f"{target.saved_model_dir} has no serving_default signature and several others; "
                           "choose one with --signature")
    with tensorflow_errors(f"freeze signature {chosen!r} of this TF2 SavedModel",
                           hint="serve the SavedModel as it is, or convert it with the TFLite converter"):
        frozen_function = convert_variables_to_constants_v2(function)
        graph_def = frozen_function.graph.as_graph_def()
    output_names = [t.name for t in frozen_function.outputs]
    # Flat outputs follow the structured outputs' keys in sorted order (tf.nest's order for dicts).
    structured = function.structured_outputs
    signature_outputs, position = {}, 0
    for key in sorted(structured):
        count = len(tf.nest.flatten(structured[key], expand_composites=True))
        signature_outputs[key] = ", ".join(output_names[position:position + count])
        position += count
    result = None
    if options.check:
        specs = function.structured_input_signature[1]
        declared = {name: None if spec.shape.rank is None else [-1 if d is None else d for d in spec.shape.as_list()]
                    for name, spec in specs.items()}
        shapes = input_shapes_for_check(declared, options.input_shapes)
        rng = np.random.default_rng(0)
        feeds = {name: tf.constant(random_value(specs[name].dtype, shape, rng)) for name, shape in shapes.items()}
        with tensorflow_errors("run the signature and its frozen graph for --check"):
            original = function(**feeds)
            refrozen = frozen_function(**feeds)
        if isinstance(refrozen, dict):
            pairs = [(k, original[k], refrozen[k]) for k in sorted(original)]
        else:
            flat = refrozen if isinstance(refrozen, (list, tuple)) else [refrozen]
            pairs = list(zip(sorted(original), [original[k] for k in sorted(original)], flat))
        result = check_result(shapes, (compare(k, a.numpy(), b.numpy()) for k, a, b in pairs))
    nodes_before = len(function.graph.as_graph_def().node)
    return _Frozen(graph_def, tuple(name.split(":")[0] for name in output_names), nodes_before,
                   len(function.variables), result, chosen, signature_outputs)


def _saved_model_graph(target: Target, tags: list[str] | None):
    """(tags, meta graph) of the SavedModel, chosen as the loaders will."""
    if target.meta_path is None:
        raise NotFound(f"SavedModel {target.saved_model_dir} has no saved_model.pb: no graph to freeze",
                       hint="freeze needs the graph; only inspect, verify and diff can use the variables alone")
    saved_model = read_saved_model(target.meta_path)
    if not tags:
        graphs = saved_model.meta_graphs
        tags = list(graphs[0].meta_info_def.tags) if len(graphs) == 1 else ["serve"]
    return tags, meta_graph_with_tags(saved_model, tags, target.saved_model_dir)


def _freeze_saved_model(tf, target: Target, options: _Options, meta_graph) -> tuple[str, _Frozen, list[str]]:
    """(kind, result, warnings): TF2 SavedModels through tf.saved_model.load, falling back to the TF1 loader."""
    if not meta_graph.object_graph_def.nodes or options.output_nodes:
        return "saved_model_v1", _freeze_tf1(tf, target, "saved_model_v1", meta_graph, options), []
    try:
        loaded = _load_tf2(tf, target, options.tags)
    except BadInput as load_error:
        reason = load_error.message.partition(": ")[2]
        try:
            frozen = _freeze_tf1(tf, target, "saved_model_v1", meta_graph, options)
        except BadInput as fallback_error:
            raise BadInput(f"{load_error.message}; the TF1 loader failed too: {fallback_error.message}",
                           hint=fallback_error.hint) from None
        return "saved_model_v1", frozen, [f"tf.saved_model.load failed ({reason}); froze with the TF1 loader "
                                          f"and the signature instead"]
    return "saved_model_v2", _freeze_tf2(tf, loaded, target, options), []


def freeze(source: str, output: str, *, output_nodes: list[str] | None = None, tags: list[str] | None = None,
           signature: str | None = None, text: bool = False, clear_devices: bool = True, check: bool = False,
           input_shapes: dict[str, list[int]] | None = None, overwrite: bool = False) -> FreezeReport:
    output = check_destination(output, overwrite)
    is_graph_file = fs.is_file(source) and source.endswith((".pb", ".pbtxt")) and \
        not fs.basename(source).startswith("saved_model.")
    target = None if is_graph_file else resolve_target(source, graph_only_ok=True)  # exit 3: what was looked for
    refuse_writing_over_source([source] if target is None else files_read(target, source), [output], "freeze")
    with local_target(target) if target is not None else contextlib.nullcontext() as local:
        return _freeze(source, output, local, output_nodes, tags, signature, text, clear_devices, check,
                       input_shapes)


def _freeze(source, output, target, output_nodes, tags, signature, text, clear_devices, check,
            input_shapes) -> FreezeReport:
    if target is not None and target.format == "graphdef":  # a .meta alone: no variables to restore
        raise NotFound(f"no checkpoint beside {source}: nothing to freeze into its graph",
                       hint="give the checkpoint (with its .meta) or the SavedModel directory")
    if target is not None and not output_nodes:
        _suggest_outputs_without_tensorflow(target, tags, signature)
    with quiet_stderr():
        tf = tensorflow()
        if target is None:
            raise _graph_def_file_problem(source)
        if target.saved_model_dir:
            tags, meta_graph = _saved_model_graph(target, tags)
        elif target.meta_path:
            meta_graph = read_meta_graph(target.meta_path)
        else:
            raise NotFound(f"no graph beside {target.prefix} (looked for {target.prefix}.meta)",
                           hint="freeze needs the .meta that tf.compat.v1.train.Saver writes, or a SavedModel")
        require_registered_ops(meta_graph.graph_def, target.meta_path)
        refuse_recursive_functions(meta_graph.graph_def, target.meta_path)
        _refuse_variables_with_inputs(meta_graph.graph_def, target.meta_path)
        options = _Options(output_nodes, tags or [], signature, clear_devices, check, input_shapes or {})
        if target.saved_model_dir:
            kind, frozen, warnings = _freeze_saved_model(tf, target, options, meta_graph)
        else:
            kind, frozen, warnings = "checkpoint", _freeze_tf1(tf, target, "checkpoint", meta_graph, options), []
        if text:
            from google.protobuf import text_format

            data = text_format.MessageToString(frozen.graph_def).encode("utf-8")
        else:
            data = frozen.graph_def.SerializeToString()
    write_destination(output, data)
    return FreezeReport(source, output, kind, frozen.output_nodes, frozen.nodes_before, len(frozen.graph_def.node),
                        frozen.variables_frozen, len(data), text, frozen.check, frozen.signature,
                        frozen.signature_outputs, tuple(warnings))
