"""Reading graph files (SavedModel, MetaGraphDef, GraphDef; binary or pbtxt)
into TensorFlow's own proto classes, and choosing a SavedModel's meta graph
by its tags as TensorFlow's loaders do."""
from __future__ import annotations

from ckpttool.errors import BadInput, CorruptCheckpoint, Unsupported
from ckpttool.storage.fs import read_capped

# A serialized protobuf message cannot exceed 2 GiB; TensorFlow writes bigger
# SavedModels chunked (saved_model.cpb), which is refused before reading.
GRAPH_FILE_LIMIT = 2 << 30


def read_graph_file(path: str, message):
    """`message` (an empty proto) filled from `path`; one clear line if that fails."""
    from google.protobuf import text_format

    if path.endswith(".cpb"):
        raise Unsupported(f"{path}: chunked SavedModels (over 2 GB) are not supported")
    data = read_capped(path, GRAPH_FILE_LIMIT, "graph file")
    try:
        if path.endswith(".pbtxt"):
            text_format.Parse(data.decode("utf-8"), message)
        else:
            message.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError / ParseError, UnicodeDecodeError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptCheckpoint(f"{path}: unparseable {type(message).__name__} ({first})") from None
    return message


def read_saved_model(path: str):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = read_graph_file(path, saved_model_pb2.SavedModel())
    if not saved_model.meta_graphs:
        raise CorruptCheckpoint(f"{path}: SavedModel has no meta graph")
    return saved_model


def read_graph_def(path: str):
    from tensorflow.core.framework import graph_pb2

    return read_graph_file(path, graph_pb2.GraphDef())


def read_meta_graph(path: str):
    from tensorflow.core.protobuf import meta_graph_pb2

    return read_graph_file(path, meta_graph_pb2.MetaGraphDef())


def meta_graph_with_tags(saved_model, tags: list[str], source: str):
    """The meta graph whose tag set is exactly `tags` (TensorFlow's rule), else exit 3 listing them."""
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    available = "; ".join(",".join(m.meta_info_def.tags) or "(no tags)" for m in saved_model.meta_graphs)
    raise BadInput(f"{source} has no meta graph tagged {','.join(tags)}; it has: {available}",
                   hint="choose one with --tags")
