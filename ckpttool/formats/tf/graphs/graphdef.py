"""The constants of a TensorFlow graph as a checkpoint: a frozen GraphDef's weights are `Const`
nodes, readable without TensorFlow ("unfreezing").

A GraphDef (`frozen_graph.pb`), the graph of a MetaGraphDef (`.meta`) and that of a SavedModel's
first MetaGraph (`saved_model.pb`) are walked field by field over ranged reads, never parsed whole:
GraphDef.node (1) → NodeDef {name 1, op 2, attr 5: map<string, AttrValue>}, and the functions of
its library (2), where a TF2 SavedModel keeps its tf.functions and most of its constants (those are
named `<function>/<node>`); a Const node's attr
`value` holds AttrValue.tensor (8), a TensorProto {dtype 1, tensor_shape 2, tensor_content 4, the
typed *_val fields}. Listing reads each node's name, op and the tensor's header only; a value's
bytes are read when asked for (tensor_content straight from the file, in chunks; the typed fields,
small by nature, through protobuf and the V1 reader's decoder, whose repeat-the-last-value
expansion is bounded the same way: for the graph's constants together, by 64 MiB or the file's
size, whichever is larger).

Hostile files: every span must lie inside its parent (else exit 3), shapes are checked as bundle
shapes are, tensor_content must hold exactly the declared elements, and the walk is iterative
(the schema's depth is fixed: deep nesting costs nothing).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Iterator

from ckpttool.errors import CorruptCheckpoint, Unsupported
from ckpttool.formats.dtypes import STRING, check_bool_bytes, dtype_from_code
from ckpttool.formats.tf.messages import checked_shape
from ckpttool.formats.variables import StoredTensor, Variable
from ckpttool.storage import fs
from ckpttool.text import quote

if TYPE_CHECKING:
    import numpy as np

_WINDOW = 64 << 10  # bytes fetched at a time while walking field headers
_SMALL = 1 << 20  # a node, attribute or typed-value tensor read whole up to this size
_NAME_CAP = 64 << 10
DEFAULT_MIN_ELEMENTS = 2  # shapes, axes and scalars are graph plumbing, not weights


@dataclass(frozen=True)
class _Const:
    name: str
    dtype_code: int
    shape: tuple[int, ...]
    content: tuple[int, int] | None  # (offset, length) of tensor_content in the file
    proto: tuple[int, int]  # (offset, length) of the whole TensorProto


class _Input:
    """Field-by-field access to a file through a small read window."""

    def __init__(self, path: str):
        self.path = path
        self.file = fs.open_random_access(path, "graph")
        self.size = self.file.size
        self._start, self._data = 0, b""

    def byte(self, pos: int) -> int:
        if not self._start <= pos < self._start + len(self._data):
            if pos >= self.size:
                raise CorruptCheckpoint(f"{self.path} is cut short (a field runs past its end)")
            self._start, self._data = pos, self.file.read_at(pos, min(_WINDOW, self.size - pos))
        return self._data[pos - self._start]

    def read(self, pos: int, length: int) -> bytes:
        if self._start <= pos and pos + length <= self._start + len(self._data):
            return self._data[pos - self._start:pos - self._start + length]
        data = self.file.read_at(pos, length)
        if len(data) != length:
            raise CorruptCheckpoint(f"{self.path} is cut short")
        return data

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            if pos >= end:
                raise CorruptCheckpoint(f"{self.path}: a field runs past its message")
            byte = self.byte(pos)
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift >= 64:
                raise CorruptCheckpoint(f"{self.path}: malformed varint")

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(number, wire type, start, end) of each field of the message in [start, end): for
        length-delimited fields the payload's span, for others the encoded value's."""
        pos = start
        while pos < end:
            key, pos = self.varint(pos, end)
            number, wire_type = key >> 3, key & 7
            if wire_type == 2:
                length, value = self.varint(pos, end)
                pos = value + length
            elif wire_type == 0:
                value = pos
                pos = self.varint(pos, end)[1]
            elif wire_type in (1, 5):
                value = pos
                pos += 8 if wire_type == 1 else 4
            else:
                raise CorruptCheckpoint(f"{self.path}: not a protobuf message (wire type {wire_type})")
            if pos > end or number == 0:
                raise CorruptCheckpoint(f"{self.path}: a field runs past its message")
            yield number, wire_type, value, pos

    def int_at(self, start: int, end: int) -> int:
        return self.varint(start, end)[0]

    def text(self, start: int, end: int) -> str:
        if end - start > _NAME_CAP:
            raise CorruptCheckpoint(f"{self.path}: a name of {end - start} bytes")
        return self.read(start, end - start).decode("utf-8", "surrogateescape")

    def close(self) -> None:
        self.file.close()


def graph_kind(path: str) -> str:
    """"saved_model", "meta_graph" or "graph_def", by name (the bytes of the three are alike)."""
    name = fs.basename(path)
    if name in ("saved_model.pb",):
        return "saved_model"
    if name.endswith(".meta"):
        return "meta_graph"
    return "graph_def"


def _graph_span(source: _Input, kind: str) -> tuple[int, int]:
    if kind == "graph_def":
        return 0, source.size
    start, end = 0, source.size
    if kind == "saved_model":  # SavedModel.meta_graphs (2): the first MetaGraph
        start, end = next(((a, b) for n, w, a, b in source.fields(0, source.size) if n == 2 and w == 2),
                          (0, 0))
        if start == end:
            raise CorruptCheckpoint(f"{source.path} holds no MetaGraph")
    for number, wire_type, a, b in source.fields(start, end):  # MetaGraphDef.graph_def (2)
        if number == 2 and wire_type == 2:
            return a, b
    raise CorruptCheckpoint(f"{source.path} holds no graph")


def _shape(source: _Input, start: int, end: int, what: str) -> tuple[int, ...]:
    dims, unknown = [], False
    for number, wire_type, a, b in source.fields(start, end):
        if number == 2 and wire_type == 2:  # dim
            size = 0
            for n2, w2, c, d in source.fields(a, b):
                if n2 == 1 and w2 == 0:
                    size = source.int_at(c, d)
                    size = size - (1 << 64) if size >= 1 << 63 else size
            dims.append(size)
        elif number == 3 and wire_type == 0:
            unknown = bool(source.int_at(a, b))
    return checked_shape(tuple(dims), unknown, what)


def _const_of(source: _Input, name: str, start: int, end: int) -> _Const | None:
    """The Const node's tensor (attr `value`), None when it has none."""
    for number, wire_type, a, b in source.fields(start, end):
        if number != 5 or wire_type != 2:
            continue
        key, value = None, None
        for n2, w2, c, d in source.fields(a, b):  # map entry: key 1, value 2
            if n2 == 1 and w2 == 2:
                key = source.read(c, d - c) if d - c <= 64 else b""
            elif n2 == 2 and w2 == 2:
                value = (c, d)
        if key != b"value" or value is None:
            continue
        for n3, w3, e, f in source.fields(*value):  # AttrValue.tensor (8)
            if n3 == 8 and w3 == 2:
                return _tensor_header(source, name, e, f)
    return None


def _tensor_header(source: _Input, name: str, start: int, end: int) -> _Const:
    what = f"Const {quote(name)}"
    dtype_code, shape, content = 0, (), None
    for number, wire_type, a, b in source.fields(start, end):
        if number == 1 and wire_type == 0:
            dtype_code = source.int_at(a, b)
        elif number == 2 and wire_type == 2:
            shape = _shape(source, a, b, what)
        elif number == 4 and wire_type == 2:
            content = (a, b - a)
    return _Const(name, dtype_code, shape, content, (start, end - start))


def _node_const(source: _Input, start: int, end: int, prefix: str = "") -> _Const | None:
    """The constant of the NodeDef in [start, end) when it is a Const node, named `prefix` + its name."""
    name = op = None
    for number, wire_type, a, b in source.fields(start, end):
        if number == 1 and wire_type == 2:
            name = source.text(a, b)
        elif number == 2 and wire_type == 2:
            op = source.text(a, b)
    if op != "Const" or name is None:
        return None
    return _const_of(source, prefix + name, start, end)


def _function_constants(source: _Input, start: int, end: int) -> Iterator[_Const]:
    """The Const nodes of a FunctionDefLibrary's functions (a TF2 SavedModel keeps its tf.function
    bodies, and their constants, there), each named `<function>/<node>`: node names are unique
    within their function only. FunctionDefLibrary.function (1) → FunctionDef {signature 1: OpDef
    {name 1}, node_def 3: NodeDef}."""
    for number, wire_type, a, b in source.fields(start, end):
        if number != 1 or wire_type != 2:
            continue
        function, nodes = None, []
        for n2, w2, c, d in source.fields(a, b):
            if n2 == 1 and w2 == 2:
                function = next((source.text(e, f) for n3, w3, e, f in source.fields(c, d) if n3 == 1 and w3 == 2),
                                None)
            elif n2 == 3 and w2 == 2:
                nodes.append((c, d))
        if function is None:
            if nodes:
                raise CorruptCheckpoint(f"{source.path}: a library function without a name")
            continue
        for c, d in nodes:
            const = _node_const(source, c, d, function + "/")
            if const is not None:
                yield const


def scan_constants(source: _Input, kind: str) -> list[_Const]:
    """The graph's Const nodes (GraphDef.node, 1), then those of its function library (GraphDef.library, 2)."""
    start, end = _graph_span(source, kind)
    found, libraries = [], []
    for number, wire_type, a, b in source.fields(start, end):
        if number == 1 and wire_type == 2:
            const = _node_const(source, a, b)
            if const is not None:
                found.append(const)
        elif number == 2 and wire_type == 2:
            libraries.append((a, b))
    for a, b in libraries:  # one in a well-formed graph; protobuf merges repeated ones
        found.extend(_function_constants(source, a, b))
    return found


class GraphConstants:
    """A graph's Const nodes as a checkpoint reader (inspect, verify, diff, convert)."""

    format = "graphdef"

    def __init__(self, path: str, min_elements: int = DEFAULT_MIN_ELEMENTS):
        self.prefix = path
        self.kind = graph_kind(path)
        self._source = _Input(path)
        self._consts: dict[str, _Const] = {}
        self._budget = None  # the V1 reader's ExpansionBudget for repeated values, all constants together
        self.variables: list[Variable] = []
        self.left_out = 0  # small constants (shapes, axes, scalars) not listed
        try:
            self._list(min_elements)
        except BaseException:
            self._source.close()
            raise
        self.variables.sort(key=lambda v: v.parts[0].key)
        self._by_name = {v.name: v for v in self.variables}

    def _list(self, min_elements: int) -> None:
        seen = set()
        for const in scan_constants(self._source, self.kind):
            if const.name in seen:
                raise CorruptCheckpoint(f"{self.prefix}: two nodes are named {quote(const.name)}")
            seen.add(const.name)
            dtype = dtype_from_code(const.dtype_code)
            if prod(const.shape) < min_elements:
                self.left_out += 1
                continue
            self._check_content(const, dtype)
            self._consts[const.name] = const
            offset, size = const.content or const.proto
            part = StoredTensor(const.name.encode("utf-8", "surrogateescape"), dtype, const.shape, 0, offset, size, 0)
            self.variables.append(Variable(const.name, dtype, const.shape, (part,)))

    def _check_content(self, const: _Const, dtype) -> None:
        if const.content is None:
            return
        if not dtype.fixed_width:
            raise CorruptCheckpoint(f"Const {quote(const.name)}: {dtype.name} values in tensor_content")
        expected = prod(const.shape) * dtype.itemsize
        if const.content[1] != expected:
            raise CorruptCheckpoint(f"Const {quote(const.name)} declares shape {list(const.shape)} ({expected} "
                                    f"bytes of {dtype.name}) but holds {const.content[1]} bytes")

    def variable(self, name: str) -> Variable | None:
        return self._by_name.get(name)

    def data_files(self) -> list[str]:
        return [self.prefix]

    def _from_proto(self, var: Variable, decode: bool) -> np.ndarray:
        from ckpttool.formats.tf.messages import parse_message
        from ckpttool.formats.tf.protos import checkpoint_pb2 as pb
        from ckpttool.formats.tf.v1 import ExpansionBudget, tensor_from_proto

        const = self._consts[var.name]
        offset, size = const.proto
        if size > _SMALL * 64:
            raise CorruptCheckpoint(f"Const {quote(var.name)}: {size} bytes of typed values")
        proto = parse_message(pb.TensorProto, self._source.read(offset, size), f"Const {quote(var.name)}")
        if self._budget is None:
            self._budget = ExpansionBudget(self._source.size)
        return tensor_from_proto(proto, var.dtype.code, var.shape, f"Const {quote(var.name)}", self._budget,
                                 decode=decode)

    def iter_stored_bytes(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """The constant's elements as stored (little-endian, C order), in chunks."""
        const = self._consts[var.name]
        if const.content is None:
            import numpy as np

            if var.dtype.code == STRING:
                raise Unsupported(f"{var.name!r} is a string tensor, which has no fixed-width bytes")
            yield np.ascontiguousarray(self._from_proto(var, decode=False)).tobytes()
            return
        offset, remaining = const.content
        step = max(var.dtype.itemsize, (chunk_bytes or _SMALL) // var.dtype.itemsize * var.dtype.itemsize)
        while remaining:
            length = min(step, remaining)
            yield self._source.read(offset, length)
            offset += length
            remaining -= length

    def read(self, var: Variable) -> np.ndarray:
        import numpy as np

        if self._consts[var.name].content is None:
            return self._from_proto(var, decode=True)
        flat = np.frombuffer(b"".join(self.iter_stored_bytes(var)), dtype=np.dtype(var.dtype.storage))
        return var.dtype.decode(flat).reshape(var.shape)

    def iter_value_chunks(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        import numpy as np

        if self._consts[var.name].content is None:
            yield self._from_proto(var, decode=True).reshape(-1)
            return
        for chunk in self.iter_stored_bytes(var, chunk_bytes):
            yield var.dtype.decode(np.frombuffer(chunk, dtype=np.dtype(var.dtype.storage)))

    def check_variable(self, var: Variable) -> int:
        """Structural: the constant decodes to its declared shape (graphs carry no checksums)."""
        total = 0
        for chunk in self.iter_value_chunks(var):
            check_bool_bytes(var.name, var.dtype, chunk.tobytes() if var.dtype.name == "bool" else b"")
            total += chunk.size
        if total != var.num_elements:
            raise CorruptCheckpoint(f"Const {quote(var.name)} decodes to {total} elements, not {var.num_elements}")
        return var.size_bytes

    def object_graph_bytes(self) -> bytes | None:
        return None

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> "GraphConstants":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
