"""Reader of the old V1 checkpoint format: one table file per checkpoint.

Key "" holds SavedTensorSliceMeta (names, dtypes, shapes, stored slices);
every other key is a slice key whose value is a SavedSlice with a
TensorProto (FORMAT.md §7). Like tf.train.load_checkpoint we read variables
stored as one full slice and refuse sliced (partitioned) ones.

A TensorProto may hold fewer values than its shape: the last one is then
repeated (TensorFlow's own V1 writer never does this, it stores every
value). Expanding that shorthand is capped for the whole file (ExpansionBudget):
its tensors together expand to at most V1_EXPANSION_CAP bytes or the size of
the file, whichever is larger, counted in the bytes they hold (a string's
bytes included), so a 149-byte file claiming [3e8] floats, a 4 KB one whose
4,000-byte string fills [400000] (1.6 GB), or one of many tensors each just
under the cap are refused (exit 3), not grown to gigabytes. A graph's
constants (formats/tf/graphs/graphdef.py) share this rule.
"""
from __future__ import annotations

import os
from math import prod
from typing import Iterator

import numpy as np

from ckpttool.errors import CorruptCheckpoint, Unsupported
from ckpttool.storage import fs
from ckpttool.formats.dtypes import STRING, check_bool_bytes, dtype_from_code
from ckpttool.formats.tf.messages import extents_of, parse_message, shape_of
from ckpttool.formats.tf.ordered_code import decode_slice_key
from ckpttool.formats.tf.protos import checkpoint_pb2 as pb
from ckpttool.formats.tf.shards import v1_shard_names
from ckpttool.formats.tf.table import read_table_file
from ckpttool.text import quote
from ckpttool.formats.variables import Variable

V1_EXPANSION_CAP = 64 << 20

# TensorProto's typed field for each dtype kind, when tensor_content is empty.
_TYPED_FIELDS = {
    1: "float_val", 2: "double_val", 3: "int_val", 4: "int_val", 5: "int_val", 6: "int_val",
    7: "string_val", 8: "scomplex_val", 9: "int64_val", 10: "bool_val", 11: "int_val", 12: "int_val",
    13: "int_val", 14: "half_val", 15: "int_val", 16: "int_val", 17: "int_val", 18: "dcomplex_val",
    19: "half_val", 22: "uint32_val", 23: "uint64_val",
}


class ExpansionBudget:
    """What the repeat-the-last-value shorthand may expand one file's tensors to, all together: at
    most V1_EXPANSION_CAP bytes or the file's size, whichever is larger. Each tensor counts once,
    however often it is read."""

    def __init__(self, file_bytes: int):
        self.cap = max(V1_EXPANSION_CAP, file_bytes)
        self._spent: dict[str, int] = {}
        self._total = 0

    def charge(self, what: str, stored: int, count: int, shape: tuple[int, ...], element_bytes: int) -> None:
        """Account for `what` growing from `stored` values to `count` of about `element_bytes` each;
        CorruptCheckpoint if the file's tensors together would pass the cap."""
        if what in self._spent:
            return
        expanded = count * element_bytes
        if self._total + expanded > self.cap:
            earlier = f" after {self._total} for its other tensors" if self._total else ""
            raise CorruptCheckpoint(f"{what}: stores {stored} value{'s' if stored != 1 else ''} for shape "
                                    f"{list(shape)}; expanding them would take {expanded} bytes{earlier}, more than "
                                    f"ckpttool allows ({self.cap}) for a file this size")
        self._spent[what] = expanded
        self._total += expanded


def _is_full(extents, shape) -> bool:
    return all(length == -1 or (start == 0 and length == size) for (start, length), size in zip(extents, shape))


def tensor_from_proto(proto: pb.TensorProto, dtype_code: int, shape: tuple[int, ...], what: str,
                      budget: ExpansionBudget, decode: bool = True) -> np.ndarray:
    """The tensor a TensorProto holds; `budget`, its file's, bounds what its repeat-the-last-value
    shorthand may grow to. `decode=False` keeps the storage dtype (bfloat16 as its 16 bits), as
    conversion needs."""
    dtype = dtype_from_code(dtype_code)
    decoder = dtype.decode if decode else (lambda raw: raw)
    count = prod(shape)
    if dtype.code == STRING:
        values = list(proto.string_val)
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif proto.tensor_content:
        if len(proto.tensor_content) % dtype.itemsize:
            raise CorruptCheckpoint(f"{what}: {len(proto.tensor_content)} bytes of values are not a whole "
                                    f"number of {dtype.name} elements")
        array = decoder(np.frombuffer(proto.tensor_content, dtype=np.dtype(dtype.storage)))
    else:
        field = _TYPED_FIELDS.get(dtype.code)
        if field is None:
            raise Unsupported(f"{what}: V1 values of dtype {dtype.name} are not supported")
        raw = list(getattr(proto, field))
        if dtype.kind == "complex":
            # (real, imaginary) pairs; an odd last float is no value (TensorFlow drops it too)
            pairs = np.array(raw[: len(raw) // 2 * 2], dtype=np.float64).reshape(-1, 2)
            array = (pairs[:, 0] + 1j * pairs[:, 1]).astype(dtype.storage)
        elif field == "half_val":
            array = decoder(np.array(raw, dtype=np.uint16).view(dtype.storage))
        else:
            array = np.array(raw).astype(dtype.storage)
    if array.size != count:
        if array.size == 0 or array.size > count:
            raise CorruptCheckpoint(f"{what}: holds {array.size} values for shape {list(shape)}")
        # a string element costs its bytes (written out whole) besides its slot
        element = array.itemsize + (max(len(v) for v in array) if dtype.code == STRING else 0)
        budget.charge(what, array.size, count, shape, element)
        # TensorProto repeats its last value to fill the shape.
        array = np.concatenate([array, np.repeat(array[-1:], count - array.size)])
    return array.reshape(shape)


class V1Checkpoint:
    """An open V1 checkpoint: one file, or every shard `P-SSSSS-of-NNNNN` of a sharded save named by
    its pattern `P-?????-of-NNNNN` (read whole: these files predate large models)."""

    format = "v1"

    def __init__(self, prefix: str):
        self.prefix = prefix
        directory = fs.dirname(prefix)
        self._files = [fs.join(directory, name) if directory else name for name in v1_shard_names(fs.basename(prefix))]
        self._slices: dict[str, list[tuple[tuple, bytes]]] = {}
        metas: dict[str, tuple[int, tuple[int, ...], list]] = {}  # name -> (dtype code, shape, slices)
        total = 0
        for path in self._files:
            items = read_table_file(path, "V1 checkpoint")
            total += sum(len(key) + len(value) for key, value in items)
            self._add_shard(fs.basename(path), items, metas)
        self._budget = ExpansionBudget(total)
        self.variables = []
        for name, (code, shape, slices) in metas.items():
            partitioned = not (len(slices) == 1 and _is_full(slices[0], shape))
            self.variables.append(Variable(name, dtype_from_code(code), shape, (), tuple(slices) if partitioned else ()))
        self.variables.sort(key=lambda v: v.name.encode("utf-8", "surrogateescape"))
        self._by_name = {v.name: v for v in self.variables}

    def _add_shard(self, source: str, items: list[tuple[bytes, bytes]], metas: dict) -> None:
        """One table's tensors. Each shard's header lists the tensors (and slices) stored in it: a
        variable partitioned across devices has slices in several shards."""
        if not items or items[0][0] != b"":
            raise CorruptCheckpoint(f"{source}: no V1 checkpoint header")
        header = parse_message(pb.SavedTensorSlices, items[0][1], source)
        for key, value in items[1:]:
            name, extents = decode_slice_key(key)
            self._slices.setdefault(name.decode("utf-8", "surrogateescape"), []).append((extents, value))
        for meta in header.meta.tensor:
            shape = shape_of(meta.shape, f"{source}: tensor {quote(meta.name)}")
            code, known_shape, slices = metas.setdefault(meta.name, (meta.type, shape, []))
            if (code, known_shape) != (meta.type, shape):
                raise CorruptCheckpoint(f"{source}: tensor {quote(meta.name)} has another dtype or shape "
                                        "than in the other shards")
            slices.extend(extents_of(s) for s in meta.slice)

    def variable(self, name: str) -> Variable | None:
        return self._by_name.get(name)

    def data_files(self) -> list[str]:
        return list(self._files)

    def read(self, var: Variable) -> np.ndarray:
        if var.partitioned:
            raise Unsupported(
                f"{quote(var.name)} is sliced (partitioned) in a V1 checkpoint; like TensorFlow's reader, "
                "ckpttool reads only unsliced V1 tensors",
                hint="restore it with tf.compat.v1.train.Saver and re-save in the V2 format",
            )
        stored = self._slices.get(var.name)
        what = f"{os.path.basename(self.prefix)}: tensor {quote(var.name)}"
        if not stored:
            raise CorruptCheckpoint(f"{what} has no data")
        saved = parse_message(pb.SavedTensorSlices, stored[0][1], what).data
        return tensor_from_proto(saved.data, var.dtype.code, var.shape, what, self._budget)

    def iter_value_chunks(self, var: Variable, chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
        yield self.read(var).reshape(-1)

    def check_variable(self, var: Variable) -> int:
        """Decode the variable (the table's CRCs were checked on open); bytes checked."""
        if var.partitioned:
            return 0
        value = self.read(var)
        check_bool_bytes(var.name, var.dtype, value.tobytes() if var.dtype.name == "bool" else b"")
        return value.nbytes if value.dtype != object else sum(len(v) for v in value.reshape(-1))

    def object_graph_bytes(self) -> bytes | None:
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> "V1Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
