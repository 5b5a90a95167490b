"""Summaries of graphs, read with our own protos (no TensorFlow): `P.meta`
(MetaGraphDef), SavedModel's `saved_model.pb` / `.pbtxt`, and a GraphDef
(`frozen.pb`, `.pbtxt`): inputs (placeholders), likely outputs (the ranking
freeze uses, graph_analysis.py), signatures, and every op type used with counts,
the function library's included.

A binary graph is read field by field (formats/tf/graphs/graphdef.py's reader, over
ranged reads): each node is parsed on its own, and a node too large to be
anything but a constant keeps its name, op, inputs and small attributes, never
its tensor; so summarising a 100 MB frozen graph costs its structure, not its
weights. A text graph (`.pbtxt`) is read whole, up to GRAPH_FILE_CAP: protobuf
cannot parse a message over 2 GiB (bigger SavedModels are chunked into `.cpb`
files), so nothing larger can be a graph. Running out of memory while parsing
is said as such, never reported as a corrupt file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from ckpttool.errors import BadInput, CorruptCheckpoint, Unsupported
from ckpttool.formats.dtypes import dtype_from_code
from ckpttool.storage.fs import describe_size, read_capped
from ckpttool.formats.tf.graphs.analysis import op_counts, placeholders, rank_output_candidates
from ckpttool.formats.tf.proto_errors import decode_error_text, text_format_error_text

GRAPH_FILE_CAP = 2 << 30


@dataclass(frozen=True)
class TensorSpec:
    key: str
    name: str
    dtype: str
    shape: list[int] | None  # None when the rank is unknown; -1 for unknown dimensions


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass(frozen=True)
class MetaGraphSummary:
    tags: list[str]
    tensorflow_version: str
    num_nodes: int
    num_functions: int
    op_counts: dict[str, int]  # every op type used, in the graph and its function library, most used first
    collections: dict[str, int]  # name -> number of items
    saver_def: dict | None
    signatures: list[Signature] = field(default_factory=list)
    object_graph_nodes: int = 0  # TF2 SavedModels carry a SavedObjectGraph
    inputs: list[TensorSpec] = field(default_factory=list)  # the graph's placeholders
    likely_outputs: list[str] = field(default_factory=list)  # ranked as freeze ranks them
    num_function_nodes: int = 0  # nodes inside the function library


@dataclass(frozen=True)
class MetaSummary:
    path: str
    kind: str  # "meta_graph" | "saved_model" | "graph_def"
    meta_graphs: list[MetaGraphSummary]


def _dtype_name(code: int) -> str:
    try:
        return dtype_from_code(code).name
    except Unsupported:
        return {0: "invalid", 20: "resource"}.get(code, f"dtype_{code}")


def _tensor_spec(key: str, info) -> TensorSpec:
    shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
    name = info.name if info.WhichOneof("encoding") == "name" else info.WhichOneof("encoding") or ""
    return TensorSpec(key, name, _dtype_name(info.dtype), shape)


def _collection_size(collection) -> int:
    kind = collection.WhichOneof("kind")
    return len(getattr(collection, kind).value) if kind else 0


def summarize_graph_def(graph_def, meta=None) -> MetaGraphSummary:
    """A GraphDef's summary; `meta`, the MetaGraphDef holding it (tags, saver, signatures ...)."""
    graph = MetaGraphSummary(
        tags=[], tensorflow_version="", num_nodes=len(graph_def.node), num_functions=len(graph_def.library.function),
        op_counts=op_counts(graph_def), collections={}, saver_def=None,
        inputs=[TensorSpec(name, f"{name}:0", _dtype_name(dtype), shape)
                for name, dtype, shape in placeholders(graph_def)],
        likely_outputs=rank_output_candidates(graph_def),
        num_function_nodes=sum(len(f.node_def) for f in graph_def.library.function))
    return graph if meta is None else _with_meta(graph, meta)


def summarize_meta_graph(meta) -> MetaGraphSummary:
    return summarize_graph_def(meta.graph_def, meta)


def _with_meta(graph: MetaGraphSummary, meta) -> MetaGraphSummary:
    saver = None
    if meta.HasField("saver_def"):
        s = meta.saver_def
        saver = {
            "filename_tensor_name": s.filename_tensor_name,
            "save_tensor_name": s.save_tensor_name,
            "restore_op_name": s.restore_op_name,
            "max_to_keep": s.max_to_keep,
            "sharded": s.sharded,
            "keep_checkpoint_every_n_hours": s.keep_checkpoint_every_n_hours,
            "version": ["LEGACY", "V1", "V2"][s.version] if 0 <= s.version <= 2 else s.version,
        }
    signatures = [
        Signature(
            name,
            sig.method_name,
            [_tensor_spec(k, sig.inputs[k]) for k in sorted(sig.inputs)],
            [_tensor_spec(k, sig.outputs[k]) for k in sorted(sig.outputs)],
        )
        for name, sig in sorted(meta.signature_def.items())
    ]
    return replace(
        graph,
        tags=list(meta.meta_info_def.tags),
        tensorflow_version=meta.meta_info_def.tensorflow_version,
        collections={name: _collection_size(c) for name, c in sorted(meta.collection_def.items())},
        saver_def=saver,
        signatures=signatures,
        object_graph_nodes=len(meta.object_graph_def.nodes),
    )


def _parse_into(message, path: str):
    data = read_capped(path, GRAPH_FILE_CAP, "graph file")
    text = path.endswith(".pbtxt")
    try:
        if text:
            from google.protobuf import text_format

            text_format.Parse(data.decode("utf-8"), message, allow_unknown_field=True)
        else:
            message.ParseFromString(data)
    except UnicodeDecodeError:
        raise CorruptCheckpoint(f"{path}: unparseable {type(message).__name__} (not UTF-8 text)") from None
    except Exception as exc:  # protobuf's DecodeError / ParseError, MemoryError
        raise _parse_error(exc, path, message, len(data), text) from None
    return message


def _parse_error(exc: Exception, path: str, message, size: int, text: bool) -> BadInput:
    if isinstance(exc, MemoryError) or "Arena alloc failed" in str(exc):  # upb out of memory: not the file's fault
        return _out_of_memory(path, size)
    reason = text_format_error_text(exc) if text else decode_error_text(exc)
    return CorruptCheckpoint(f"{path}: unparseable {type(message).__name__} ({reason})")


def _out_of_memory(path: str, size: int) -> BadInput:
    return BadInput(f"not enough memory to parse {path} ({describe_size(size)}): the graph is larger than "
                    "this process may allocate", hint="raise the memory limit (ulimit -v) or free memory")


_WHOLE = 64 << 10  # a node or attribute parsed whole up to this size; larger ones hold a constant's bytes


def _key(number: int) -> bytes:
    """A length-delimited field's key, to hand protobuf one field of a message at a time."""
    return bytes([number << 3 | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes([value])


class _Streamed:
    """Our protos filled field by field from a binary graph file (no whole read)."""

    def __init__(self, path: str):
        from ckpttool.formats.tf.graphs.graphdef import _Input

        self.path = path
        self.source = _Input(path)

    def merge(self, message, number: int, start: int, end: int) -> None:
        """Field `number` of `message`, whose payload is [start, end) of the file."""
        data = self.source.read(start, end - start)
        try:
            message.MergeFromString(_key(number) + _varint(len(data)) + data)
        except Exception as exc:  # protobuf's DecodeError, MemoryError
            raise _parse_error(exc, self.path, message, self.source.size, False) from None

    def graph_def(self, graph, start: int, end: int) -> None:
        for number, wire_type, a, b in self.source.fields(start, end):
            if wire_type != 2:
                continue
            if number == 1 and b - a > _WHOLE:
                self._large_node(graph.node.add(), a, b)
            elif number in (1, 2, 4):  # node, library, versions
                self.merge(graph, number, a, b)

    def _large_node(self, node, start: int, end: int) -> None:
        """A node of over 64 KiB: a constant. Its fields but a large attribute (the tensor)."""
        for number, wire_type, a, b in self.source.fields(start, end):
            if wire_type == 2 and number in (1, 2, 3, 4, 5) and (number != 5 or b - a <= _WHOLE):
                self.merge(node, number, a, b)

    def meta_graph(self, meta, start: int, end: int) -> None:
        for number, wire_type, a, b in self.source.fields(start, end):
            if wire_type != 2:
                continue
            if number == 2:
                self.graph_def(meta.graph_def, a, b)
            elif number in (1, 3, 4, 5, 7):  # meta_info_def, saver_def, collections, signatures, object graph
                self.merge(meta, number, a, b)

    def close(self) -> None:
        self.source.close()


def _read_streamed(path: str, kind: str):
    """The file's message ("saved_model", "meta_graph" or "graph_def"), read field by field."""
    from ckpttool.formats.tf.protos import graph_pb2

    reader = _Streamed(path)
    try:
        if kind == "graph_def":
            message = graph_pb2.GraphDef()
            reader.graph_def(message, 0, reader.source.size)
        elif kind == "meta_graph":
            message = graph_pb2.MetaGraphDef()
            reader.meta_graph(message, 0, reader.source.size)
        else:
            message = graph_pb2.SavedModel()
            for number, wire_type, a, b in reader.source.fields(0, reader.source.size):
                if number == 2 and wire_type == 2:
                    reader.meta_graph(message.meta_graphs.add(), a, b)
        return message
    finally:
        reader.close()


def _read_graph_file(path: str, kind: str):
    if path.endswith(".pbtxt"):
        from ckpttool.formats.tf.protos import graph_pb2

        empty = {"saved_model": graph_pb2.SavedModel, "meta_graph": graph_pb2.MetaGraphDef,
                 "graph_def": graph_pb2.GraphDef}[kind]()
        return _parse_into(empty, path)
    return _read_streamed(path, kind)


def read_meta_graphs(path: str) -> tuple[str, list]:
    """(kind, the MetaGraphDefs, as our protos) of a SavedModel's graph file or a `.meta`."""
    from ckpttool.formats.tf.protos import graph_pb2

    if os.path.basename(path).startswith("saved_model."):
        if path.endswith(".cpb"):
            raise Unsupported(f"{path}: chunked SavedModels (over 2 GiB) are not supported")
        return "saved_model", list(_read_graph_file(path, "saved_model").meta_graphs)
    return "meta_graph", [_read_graph_file(path, "meta_graph")]


def read_meta_summary(path: str) -> MetaSummary:
    if os.path.basename(path).startswith("saved_model.") or path.endswith(".meta"):
        kind, metas = read_meta_graphs(path)
        return MetaSummary(path, kind, [summarize_meta_graph(m) for m in metas])
    return MetaSummary(path, "graph_def", [summarize_graph_def(_read_graph_file(path, "graph_def"))])
