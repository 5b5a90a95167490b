"""`export-json`: a MetaGraphDef, SavedModel or GraphDef as JSON (proto field
names) or pbtxt, whole or one part, parsed with TensorFlow's own protos."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ckpttool.errors import CorruptCheckpoint, NotFound, UsageProblem
from ckpttool.graph.runtime import quiet_stderr, tensorflow
from ckpttool.ops.targets import SAVED_MODEL_FILES, resolve_target

PARTS = {  # --part -> MetaGraphDef field
    "graph": "graph_def",
    "saver": "saver_def",
    "signatures": "signature_def",
    "collections": "collection_def",
    "meta_info": "meta_info_def",
}
MAP_PARTS = {"signatures", "collections"}


@dataclass(frozen=True)
class Export:
    source: str  # the file read
    kind: str  # "meta_graph" | "saved_model" | "graph_def"
    part: str | None
    format: str  # "json" | "pbtxt"
    text: str


def _locate(source: str) -> tuple[str, str]:
    """(file to read, kind)."""
    if os.path.isdir(source):
        for name in SAVED_MODEL_FILES:
            if os.path.isfile(os.path.join(source, name)):
                return os.path.join(source, name), "saved_model"
    elif os.path.isfile(source):
        base = os.path.basename(source)
        if base.startswith("saved_model."):
            return source, "saved_model"
        if base.endswith(".meta"):
            return source, "meta_graph"
        if base.endswith((".pb", ".pbtxt", ".graphdef")):
            return source, "graph_def"
    target = resolve_target(source)
    if target.meta_path is None:
        raise NotFound(f"no graph beside {target.prefix} (looked for {target.prefix}.meta)")
    return target.meta_path, "saved_model" if target.saved_model_dir else "meta_graph"


def _parse(path: str, message):
    from google.protobuf import text_format

    if path.endswith(".cpb"):
        raise CorruptCheckpoint(f"{path}: chunked SavedModels are not supported")
    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise NotFound(f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.endswith(".pbtxt"):
            text_format.Parse(data.decode("utf-8"), message)
        else:
            message.ParseFromString(data)
    except Exception as exc:  # DecodeError, ParseError, UnicodeDecodeError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptCheckpoint(f"{path}: unparseable {type(message).__name__} ({first})") from None
    return message


def _meta_graph_for_part(saved_model):
    graphs = list(saved_model.meta_graphs)
    if not graphs:
        raise CorruptCheckpoint("SavedModel has no meta graph")
    return next((g for g in graphs if "serve" in g.meta_info_def.tags), graphs[0])


def export_graph(source: str, *, fmt: str = "json", part: str | None = None) -> Export:
    if fmt not in ("json", "pbtxt"):
        raise UsageProblem(f"--format must be json or pbtxt, not {fmt!r}")
    if part is not None and part not in PARTS:
        raise UsageProblem(f"--part must be one of {', '.join(PARTS)}, not {part!r}")
    path, kind = _locate(source)
    with quiet_stderr():
        tensorflow()
        from google.protobuf import json_format, text_format
        from tensorflow.core.framework import graph_pb2
        from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

        message = _parse(path, {"saved_model": saved_model_pb2.SavedModel(), "meta_graph": meta_graph_pb2.MetaGraphDef(),
                                "graph_def": graph_pb2.GraphDef()}[kind])
    if part is not None:
        if kind == "graph_def":
            if part != "graph":
                raise UsageProblem(f"{path} is a GraphDef: only --part graph applies")
        else:
            meta = _meta_graph_for_part(message) if kind == "saved_model" else message
            if part in MAP_PARTS:
                field = getattr(meta, PARTS[part])
                if fmt == "json":
                    doc = {key: json_format.MessageToDict(field[key], preserving_proto_field_name=True)
                           for key in sorted(field)}
                    return Export(path, kind, part, fmt, json.dumps(doc, indent=2) + "\n")
                wrapper = type(meta)()
                getattr(wrapper, PARTS[part]).MergeFrom(field)
                message = wrapper  # pbtxt of map entries: parses back into a MetaGraphDef
            else:
                message = getattr(meta, PARTS[part])
    if fmt == "json":
        text = json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2) + "\n"
    else:
        text = text_format.MessageToString(message)
    return Export(path, kind, part, fmt, text)
