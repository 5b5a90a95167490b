"""`export-json`: a MetaGraphDef, SavedModel or GraphDef as JSON (proto field
names) or pbtxt, whole or one part, parsed with TensorFlow's own protos.

Messages packed in an `Any` whose type TensorFlow's descriptor pool does not
know (a TF1 session bundle's `tensorflow.serving.Signatures` collection) are
kept as `{"@type": ..., "value": {"base64": ...}}` rather than failing; the
pbtxt form prints them as type_url and bytes, which parse back unchanged.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

from ckpttool.errors import NotFound, Unsupported, UsageProblem
from ckpttool.graph.protos import read_graph_def, read_meta_graph, read_saved_model
from ckpttool.graph.runtime import first_line, quiet_stderr, tensorflow
from ckpttool.ops.targets import SAVED_MODEL_FILES, resolve_target

PARTS = {  # --part -> MetaGraphDef field
    "graph": "graph_def",
    "saver": "saver_def",
    "signatures": "signature_def",
    "collections": "collection_def",
    "meta_info": "meta_info_def",
}
MAP_PARTS = {"signatures", "collections"}
_READERS = {"saved_model": read_saved_model, "meta_graph": read_meta_graph, "graph_def": read_graph_def}


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
        if target.saved_model_dir:
            raise NotFound(f"SavedModel {target.saved_model_dir} has no saved_model.pb: no graph to export")
        raise NotFound(f"no graph beside {target.prefix} (looked for {target.prefix}.meta)")
    return target.meta_path, "saved_model" if target.saved_model_dir else "meta_graph"


def _meta_graph_for_part(saved_model):
    graphs = list(saved_model.meta_graphs)
    return next((g for g in graphs if "serve" in g.meta_info_def.tags), graphs[0])


class _MapKey(str):
    """A map key in a path (a plain str step is a field name)."""


def _unknown_anys(message, pool, path=()):
    """(path, Any) for each Any below `message` whose type `pool` cannot resolve;
    a path is field names, list indexes and map keys, as they appear in the JSON."""
    from google.protobuf.message import Message

    if message.DESCRIPTOR.full_name == "google.protobuf.Any":
        try:
            pool.FindMessageTypeByName(message.type_url.rpartition("/")[2])
        except KeyError:
            yield path, message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if isinstance(value, Message):
            yield from _unknown_anys(value, pool, path + (field.name,))
        elif field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key in value:
                    yield from _unknown_anys(value[key], pool, path + (field.name, _MapKey(key)))
        else:
            for index, item in enumerate(value):
                yield from _unknown_anys(item, pool, path + (field.name, index))


def message_to_dict(message) -> dict:
    """json_format.MessageToDict with proto field names, tolerating Anys of unknown types."""
    from google.protobuf import descriptor_pool, json_format

    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except TypeError as exc:  # "Can not find message descriptor by type_url: ..."
        unknown = list(_unknown_anys(message, descriptor_pool.Default()))
        failure = exc
    stripped = type(message)()
    stripped.CopyFrom(message)
    for path, _any in unknown:
        _follow(stripped, path).Clear()  # json_format writes an empty Any as {}
    try:
        doc = json_format.MessageToDict(stripped, preserving_proto_field_name=True)
    except TypeError:  # not (only) unknown Anys where this walk looks for them
        raise Unsupported(f"this {type(message).__name__} cannot be written as JSON ({first_line(failure)})",
                          hint="try --format pbtxt") from failure
    for path, any_ in unknown:
        parent = doc
        for step in path[:-1]:
            parent = parent[step] if isinstance(step, int) else parent.setdefault(step, {})
        parent[path[-1]] = {"@type": any_.type_url, "value": {"base64": base64.b64encode(any_.value).decode("ascii")}}
    return doc


def _follow(message, path):
    for step in path:
        message = message[step] if isinstance(step, (int, _MapKey)) else getattr(message, step)
    return message


def export_graph(source: str, *, fmt: str = "json", part: str | None = None) -> Export:
    if fmt not in ("json", "pbtxt"):
        raise UsageProblem(f"--format must be json or pbtxt, not {fmt!r}")
    if part is not None and part not in PARTS:
        raise UsageProblem(f"--part must be one of {', '.join(PARTS)}, not {part!r}")
    path, kind = _locate(source)
    with quiet_stderr():
        tensorflow()
        from google.protobuf import text_format

        message = _READERS[kind](path)
    if part is not None:
        if kind == "graph_def":
            if part != "graph":
                raise UsageProblem(f"{path} is a GraphDef: only --part graph applies")
        else:
            meta = _meta_graph_for_part(message) if kind == "saved_model" else message
            if part in MAP_PARTS:
                field = getattr(meta, PARTS[part])
                if fmt == "json":
                    doc = {key: message_to_dict(field[key]) for key in sorted(field)}
                    return Export(path, kind, part, fmt, _json_text(doc))
                wrapper = type(meta)()
                getattr(wrapper, PARTS[part]).MergeFrom(field)
                message = wrapper  # pbtxt of map entries: parses back into a MetaGraphDef
            else:
                message = getattr(meta, PARTS[part])
    if fmt == "json":
        text = _json_text(message_to_dict(message))
    else:
        text = text_format.MessageToString(message)
    return Export(path, kind, part, fmt, text)


def _json_text(doc) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
