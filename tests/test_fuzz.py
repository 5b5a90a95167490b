"""Fuzzing the readers (issue 8 item 12): seeded mutants of TensorFlow-written
indexes, data shards, `.meta` graphs and state files, many of them with every
checksum recomputed so that they get past the CRCs to the parsers behind them,
each run through every read command (ls, latest, inspect with --stats --values
--slices --tree --meta, verify, diff). Only exits 0, 1 and 3 are accepted:
never 70, never a traceback, never "out of memory" (the commands run with their
address space capped, so an allocation sized by a lie fails visibly).

The same for the weights readers (issue 16): seeded mutants of safetensors,
`.npz`, `.weights.h5`, legacy Keras `.h5` and `.keras` files written by their own libraries
(safetensors.numpy, numpy.savez, h5py, Keras), raw and structured (a lying
header with its length right, a re-zipped member with its CRC right), read by
inspect, verify, diff and convert; and a handful of safetensors and TF bundle
mutants read from the moto S3 server (RemoteInput does not read `.npz`,
`.weights.h5` or `.keras` from buckets yet).

The same for graph constants (issue 20): seeded mutants of a GraphDef TensorFlow froze (constants in
every encoding), raw, or one Const's TensorProto lying (dtype, shape, tensor_content, typed values)
with every enclosing length right, or deeply nested fields; read by inspect (--values --stats --meta),
verify, diff and convert.

The same for PyTorch files (issue 28): seeded mutants of a zip and a legacy file torch wrote, raw,
or with the pickle lying (an integer of a shape, stride, offset or storage size set to an extreme,
a string changed, bytes flipped), re-zipped with its CRC right so that the unpickler and the
storage checks behind it are what is tested; read by inspect, verify, diff and convert.

The commands run in-process, in two worker subprocesses that hold the memory
cap; a failure names the mutant (seed, base, what was changed) and the command.
"""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ckpttool.errors import CkptError
from ckpttool.formats.tf import crc32c
from ckpttool.formats.tf.bundle import open_bundle
from ckpttool.formats.tf.bundle_writer import write_index
from ckpttool.formats.tf.protos import checkpoint_pb2 as pb
from ckpttool.formats.tf.table import build_table, read_table
from ckpttool.formats.tf.wire import decode_varint, encode_fixed32
from tests.hostile import MEMORY_CAP_MB, ROOT, snappy_table
from tests.test_graphdef import frozen  # noqa: F401 - a GraphDef TensorFlow froze
from tests.test_remote import servers  # noqa: F401 - the S3 server fixture

SEED = 20260817
PER_KIND = 200  # mutants of each file kind
WEIGHTS_PER_KIND = 40  # mutants of each weights format (each runs through 5 commands)
PYTORCH_MUTANTS = 80  # mutants of PyTorch files, zip and legacy alternately (5 commands each)
BUCKET_MUTANTS = 4  # mutants of each kind read from the S3 server
WORKERS = 2

_WORKER = r"""
import contextlib, io, json, resource, sys, traceback
cap = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
import typer
from ckpttool.cli.app import app, hoist_global_flags
command = typer.main.get_command(app)  # built once: typer rebuilds it on every app() call
failures = []
for job in json.load(open(sys.argv[2])):
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            command.main(hoist_global_flags(job["args"]), prog_name="ckpttool", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    except BaseException:
        code = "escaped"
        err.write(traceback.format_exc())
    text = err.getvalue()
    if code not in (0, 1, 3) or any(bad in text for bad in ("Traceback", "internal error", "out of memory")):
        failures.append({**job, "code": code, "stderr": text[-1500:]})
json.dump(failures, open(sys.argv[3], "w"))
"""

# Values that break sizes, counts and indexes: zero, edges of int32/int64, 10^12.
_EXTREMES = [0, 1, 2, 3, 7, 255, 256, 2**31 - 1, 2**31, 2**32 + 1, 2**53, 2**62, 2**63 - 1, 10**12, -1, -(2**31),
             -(2**63)]


class Mutator:
    """Seeded mutations of each file kind; every method returns (bytes, description)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def pick(self, options):
        return options[int(self.rng.integers(0, len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def raw(self, data: bytes, what: str = "bytes") -> tuple[bytes, str]:
        """Byte flips, stores, truncations and insertions."""
        data = bytearray(data)
        done = []
        for _ in range(int(self.rng.integers(1, 4))):
            if not data:
                break
            at = int(self.rng.integers(0, len(data)))
            op = self.pick(["flip", "set", "truncate", "insert"])
            if op == "flip":
                data[at] ^= 1 << int(self.rng.integers(0, 8))
            elif op == "set":
                data[at] = self.pick([0x00, 0x01, 0x7F, 0x80, 0xFF])
            elif op == "truncate":
                del data[at:]
            else:
                data[at:at] = bytes(self.rng.integers(0, 256, int(self.rng.integers(1, 9)), dtype=np.uint8))
            done.append(f"{op}@{at}")
        return bytes(data), f"{what}: " + ",".join(done)

    # -- tables ----------------------------------------------------------------
    def table(self, data: bytes) -> tuple[bytes, str]:
        """Half raw; half a valid table (every block CRC right) with lying entries."""
        if self.chance(0.4):
            return self.raw(data, "raw table")
        items = read_table(data)
        changes = [self._change_items(items) for _ in range(int(self.rng.integers(1, 4)))]
        unique = dict(sorted(items))
        rebuilt = build_table(sorted(unique.items()))
        if self.chance(0.3):
            rebuilt = snappy_table(rebuilt)
            changes.append("snappy")
        return rebuilt, "valid table: " + "; ".join(changes)

    def _change_items(self, items: list) -> str:
        at = int(self.rng.integers(0, len(items)))
        key, value = items[at]
        op = self.pick(["field", "field", "field", "value_bytes", "drop", "rename", "clone"])
        if op == "drop" and key:
            del items[at]
        elif op == "rename":
            items[at] = (self.raw(key or b"k")[0], value)
        elif op == "clone":
            items.append((key + self.pick([b"\x00", b"/x", b"\xff"]), value))
        elif op == "value_bytes" or not key:
            items[at] = (key, self.raw(value)[0] if key else self._header(value))
        else:
            items[at] = (key, self._entry(value))
        return f"{op} {key[:40]!r}"

    def _header(self, value: bytes) -> bytes:
        header = pb.BundleHeaderProto()
        header.ParseFromString(value)
        field = self.pick(["num_shards", "endianness", "producer", "min_consumer", "bad_consumers"])
        number = self.pick([n for n in _EXTREMES if -(2**31) <= n < 2**31])
        if field == "num_shards":
            header.num_shards = number
        elif field == "endianness":
            header.endianness = 1
        elif field == "bad_consumers":
            header.version.bad_consumers.append(1)
        else:
            setattr(header.version, field, number)
        return header.SerializeToString()

    def _entry(self, value: bytes) -> bytes:
        entry = pb.BundleEntryProto()
        try:
            entry.ParseFromString(value)
        except Exception:  # a V1 value, or already garbage: mutate its bytes
            return self.raw(value)[0]
        field = self.pick(["dtype", "shape", "shape", "shard_id", "offset", "size", "size", "crc32c", "slices"])
        try:
            if field == "dtype":
                entry.dtype = self.pick([0, 1, 7, 9, 14, 20, 21, 29, 33, 34, 99])
            elif field == "shape":
                dims = entry.shape.dim
                if dims and self.chance(0.3):
                    del dims[-1]
                else:
                    entry.shape.dim.add(size=self.pick([n for n in _EXTREMES if n >= -1]))
            elif field == "slices":
                extent = entry.slices.add().extent.add(start=self.pick(_EXTREMES[:8]))
                if self.chance(0.7):
                    extent.length = self.pick(_EXTREMES[:10])
            elif field == "crc32c":
                entry.crc32c = int(self.rng.integers(0, 2**32))
            else:
                setattr(entry, field, self.pick(_EXTREMES))
        except (ValueError, TypeError):  # out of the field's range
            pass
        return entry.SerializeToString()

    # -- data shards -----------------------------------------------------------
    def data(self, prefix: str) -> tuple[dict[str, bytes], str]:
        """A shard's bytes mutated; often with every tensor's CRC (and a string
        tensor's length CRC) recomputed in a rewritten index, so only the contents lie."""
        with open_bundle(prefix) as bundle:
            entries = bundle.raw_entries()
            num_shards = bundle.header.num_shards
            paths = bundle.data_files()
        path = self.pick(paths)
        mutated, what = self.raw(Path(path).read_bytes(), os.path.basename(path))
        data = bytearray(mutated)
        out = {}
        if self.chance(0.6):
            shard = paths.index(path)
            for entry in entries.values():
                if entry.shard_id == shard and entry.size and entry.offset + entry.size <= len(data):
                    entry.crc32c = _recompute_crc(entry, data)
            out[prefix + ".index"] = _index_bytes(prefix, num_shards, entries)
            what += ", CRCs recomputed"
        out[path] = bytes(data)
        return out, what

    # -- state files -----------------------------------------------------------
    def state(self, text: bytes) -> tuple[bytes, str]:
        if self.chance(0.25):
            return self.raw(text, "raw state")
        lines = text.decode("utf-8").splitlines()
        done = []
        for _ in range(int(self.rng.integers(1, 4))):
            op = self.pick(["delete", "duplicate", "value", "value", "garbage", "field"])
            at = int(self.rng.integers(0, max(1, len(lines))))
            if op == "delete" and lines:
                del lines[at]
            elif op == "duplicate" and lines:
                lines.insert(at, lines[at])
            elif op == "garbage":
                lines.insert(at, self.pick(["}", "{", "# comment", "all_model_checkpoint_paths: ['a', 'b']",
                                            "model_checkpoint_path: \"\\xff\\377\\u1234\"", "\x00\x01",
                                            "nonexistent_field: 1", "all_model_checkpoint_paths: " + "9" * 400]))
            elif op == "field":
                lines.insert(at, self.pick(["model_checkpoint_path", "all_model_checkpoint_paths",
                                            "all_model_checkpoint_timestamps", "last_preserved_timestamp"])
                             + ": " + self._state_value())
            elif lines:
                name = lines[at].partition(":")[0] or "model_checkpoint_path"
                lines[at] = f"{name}: {self._state_value()}"
            done.append(f"{op}@{at}")
        return "\n".join(lines).encode("utf-8", "surrogateescape"), "state: " + ",".join(done)

    def _state_value(self) -> str:
        return self.pick(['""', '"."', '".."', '"../x"', '"/"', '"/dev/zero"', '"/etc/passwd"', '"a/b"',
                          '"ckpt-999"', '"model.ckpt-50"', '"' + "y" * 5000 + '"', "nan", "inf", "-inf",
                          "1e400", "-1", "0", "1.5e9", "9" * 30, '"\\x00\\n"', "'x'", "\"\udcff\""])


    # -- graphs ---------------------------------------------------------------------
    def graph(self, data: bytes) -> tuple[bytes, str]:
        """Raw; or one Const node's tensor lying, re-serialized (every length right); or nested deep."""
        if self.chance(0.3):
            return self.raw(data, "raw graph")
        from tensorflow.core.framework import graph_pb2 as tf_graph

        graph_def = tf_graph.GraphDef.FromString(data)
        consts = [node for node in graph_def.node if node.op == "Const"]
        node = consts[int(self.rng.integers(0, len(consts)))]
        tensor = node.attr["value"].tensor
        op = self.pick(["dtype", "shape", "shape", "content", "content", "typed", "typed", "deep", "rename"])
        if op == "dtype":
            tensor.dtype = self.pick([0, 1, 2, 3, 7, 9, 10, 14, 18, 19, 20, 21, 23, 99])
        elif op == "shape":
            dims = tensor.tensor_shape.dim
            if dims and self.chance(0.3):
                del dims[-1]
            else:
                dims.add(size=self.pick([n for n in _EXTREMES if n >= -1]))
            tensor.tensor_shape.unknown_rank = self.chance(0.1)
        elif op == "content":
            content = tensor.tensor_content
            tensor.tensor_content = self.pick([b"", content[:-1], content + b"\0" * 3, content * 2, b"\xff" * 7])
        elif op == "typed":
            field = self.pick(["float_val", "double_val", "int_val", "int64_val", "half_val", "bool_val",
                               "string_val", "dcomplex_val", "scomplex_val", "uint32_val"])
            values = {"bool_val": [True], "string_val": [b"x" * 9]}.get(field, [1] * int(self.rng.integers(1, 5)))
            getattr(tensor, field).extend(values)
            if self.chance(0.5):
                tensor.tensor_content = b""
        elif op == "rename":
            node.name = self.pick([consts[0].name, "", "\x00", "a/" * 3000])
        data = graph_def.SerializeToString()
        if op == "deep":  # a node whose fields nest 20,000 levels deep (unknown field 99 in a node)
            nest = b""
            for _ in range(20000):
                nest = _key(99, 2) + _varint(len(nest)) + nest
            node_bytes = _key(1, 2) + _varint(5) + b"deep!" + _key(2, 2) + _varint(5) + b"Const" + nest
            data += _key(1, 2) + _varint(len(node_bytes)) + node_bytes
        return data, f"graph: {op} of {node.name[:40]!r}"

    # -- weights files -----------------------------------------------------------
    def safetensors(self, data: bytes) -> tuple[bytes, str]:
        """Raw, or the JSON header with one field lying (its length prefix right)."""
        if self.chance(0.3):
            return self.raw(data, "raw safetensors")
        length = struct.unpack_from("<Q", data)[0]
        header = json.loads(data[8:8 + length])
        body = data[8 + length:]
        name = self.pick(sorted(header))
        field = self.pick(["dtype", "shape", "shape", "data_offsets", "data_offsets", "drop", "metadata"])
        if name == "__metadata__" or field == "metadata":
            header["__metadata__"] = self.pick([{"format": "pt"}, {"x": 1}, [], "x", {"a": "\udcff"}])
        elif field == "drop":
            del header[name]
        elif field == "dtype":
            header[name]["dtype"] = self.pick(["F32", "F64", "BF16", "F8_E4M3", "I4", "BOOL", "U64", "X", 7, None])
        elif field == "shape":
            header[name]["shape"] = self.pick([[], [0], [-1], [2**31], [2**40, 2**40], [self.pick(_EXTREMES)],
                                               "3", [1.5], [None]])
        else:
            header[name]["data_offsets"] = [self.pick(_EXTREMES[:12]), self.pick(_EXTREMES[:12])]
        text = json.dumps(header).encode("utf-8", "surrogatepass")
        return struct.pack("<Q", len(text)) + text + body, f"safetensors: {field} of {name!r}"

    def npz(self, data: bytes) -> tuple[bytes, str]:
        """Raw, or one member's .npy header lying, re-zipped so that its CRC is right."""
        if self.chance(0.3):
            return self.raw(data, "raw npz")
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [(info.filename, archive.read(info)) for info in archive.infolist()]
        at = int(self.rng.integers(0, len(members)))
        name, member = members[at]
        header_end = member.index(b"\n") + 1
        header = member[:header_end].decode("latin-1")
        op = self.pick(["shape", "descr", "order", "bytes", "name"])
        if op == "shape":
            shape = self.pick(["()", "(0,)", "(-1,)", "(2**40,)", f"({2**62}, 4)", "(3, 3, 3, 3)", "'x'"])
            header = header[:header.index("'shape': ") + 9] + shape + "}" + " " * 8 + "\n"
        elif op == "descr":
            header = header.replace(header[header.index("'descr': "):header.index(",", header.index("'descr': "))],
                                    "'descr': " + self.pick(["'|O'", "'<V8'", "'>f4'", "'<U3'", "'<m8[s]'", "'x'"]))
        elif op == "order":
            header = header.replace("False", "True")
        if op == "bytes":
            member, what = self.raw(member, name)
        else:
            member = member[:6] + struct.pack("<H", len(header) - 10) + header[10:].encode("latin-1") \
                + member[header_end:]
            what = f"{name}: {op}"
        if op == "name":
            name = self.pick(["../x.npy", "a.npy", "\udcff.npy", "dir/", "x.txt", name + name])
            what = f"renamed to {name!r}"
        members[at] = (name, member)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for member_name, payload in members:
                archive.writestr(member_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                 payload)
        return out.getvalue(), "npz: " + what

    def hdf5(self, data: bytes) -> tuple[bytes, str]:
        """Byte mutations, mostly in the metadata HDF5 keeps ahead of small datasets."""
        if self.chance(0.7):
            head, what = self.raw(data[:4096], "hdf5 head")
            return head + data[4096:] if len(head) == min(len(data), 4096) else head, what
        return self.raw(data, "raw hdf5")

    def keras(self, data: bytes) -> tuple[bytes, str]:
        """Raw, or model.weights.h5 mutated and re-zipped (CRC right, so the HDF5 is what lies)."""
        if self.chance(0.3):
            return self.raw(data, "raw keras zip")
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                payload = source.read(info)
                if info.filename == "model.weights.h5":
                    payload, what = self.hdf5(payload)
                target.writestr(info.filename, payload)
        return out.getvalue(), "keras member " + what


    def pytorch(self, data: bytes) -> tuple[bytes, str]:
        """Raw; or the pickle lying (data.pkl re-zipped, CRC right; a legacy file's pickles in place)."""
        if self.chance(0.3):
            return self.raw(data, "raw pytorch")
        if not data.startswith(b"PK"):
            return self._pickle(data, "legacy")
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
            for info in source.infolist():
                payload = source.read(info)
                if info.filename.endswith("/data.pkl"):
                    payload, what = self._pickle(payload, "data.pkl")
                target.writestr(info.filename, payload)
        return out.getvalue(), what

    def _pickle(self, data: bytes, what: str) -> tuple[bytes, str]:
        """One opcode's argument changed: an integer to an extreme, a string to another; or raw bytes."""
        import pickletools

        ops = []
        stream = io.BytesIO(data)
        # A legacy file holds five pickles (then the storages): the first, the magic number, is left alone.
        for number in range(5 if what == "legacy" else 1):
            try:
                for op, arg, pos in pickletools.genops(stream):
                    if (number or what != "legacy") and isinstance(arg, (int, str)) and op.name not in (
                            "PROTO", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET", "GLOBAL"):
                        ops.append((op, arg, pos))
            except ValueError:
                break
        if not ops or self.chance(0.25):
            return self.raw(data, what)
        op, arg, pos = self.pick(ops)
        end = pos + 1 + (len(op.arg.name) and self._arg_length(data, op, pos))
        if isinstance(arg, int):
            value = self.pick(_EXTREMES)
            new = b"\x8a\x09" + value.to_bytes(9, "little", signed=True)  # LONG1 of 9 bytes holds them all
        else:
            text = self.pick(["", "storage", "0", "../x", "\udcff", "x" * 300, "cpu"])
            encoded = text.encode("utf-8", "surrogatepass")
            new = b"X" + struct.pack("<I", len(encoded)) + encoded
        return data[:pos] + new + data[end:], f"{what}: {op.name} {arg!r:.40} at {pos} -> {new[:24]!r}"

    @staticmethod
    def _arg_length(data: bytes, op, pos: int) -> int:
        """Bytes of the argument after the opcode byte at `pos`."""
        import pickletools

        stream = io.BytesIO(data[pos + 1:])
        op.arg.reader(stream)
        return stream.tell()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _recompute_crc(entry: pb.BundleEntryProto, data: bytearray) -> int:
    """The CRC TensorFlow would store for the entry's (mutated) bytes: plain for
    fixed-width tensors; for a string tensor over its length words and their own
    CRC, which is first rewritten into `data` to match the (mutated) lengths."""
    start, end = entry.offset, entry.offset + entry.size
    if entry.dtype == 7:
        count = 1
        for dim in entry.shape.dim:
            count *= max(dim.size, 0)
        lengths, pos = [], start
        try:
            for _ in range(min(count, entry.size)):
                length, pos = decode_varint(data, pos)
                lengths.append(length)
        except CkptError:
            pos = end  # framing beyond repair: a plain CRC of the bytes
        if len(lengths) == count and pos + 4 <= end:
            words = b"".join(n.to_bytes(4 if n <= 0xFFFFFFFF else 8, "little") for n in lengths)
            data[pos: pos + 4] = encode_fixed32(crc32c.mask(crc32c.crc32c(words)))
            return crc32c.mask(crc32c.extend(crc32c.crc32c(words), bytes(data[pos:end])))
    return crc32c.mask(crc32c.crc32c(bytes(data[start:end])))


def _index_bytes(prefix: str, num_shards: int, entries) -> bytes:
    write_index(prefix, num_shards, entries)
    return Path(prefix + ".index").read_bytes()


# (fixture, prefix inside it, kinds mutated there)
BASES = [
    ("saver_run", "model.ckpt-50", ("index", "data", "meta", "state")),
    ("partitioned", "model.ckpt-5", ("index", "data")),
    ("every_dtype", "dtypes", ("index", "data")),
    ("tf2_manager", "ckpt-3", ("index", "data", "state")),
    ("iterator_state", "ckpt", ("data",)),
    ("v1_format", "model.ckpt-3", ("index",)),
    ("tf2_saved_model", "model/variables/variables", ("meta",)),
]


def _commands(kind: str, run: Path, prefix: Path, reference: Path) -> list[list[str]]:
    if kind == "meta":
        target = run / "model" if (run / "model").is_dir() else prefix
        return [["inspect", "--meta", str(target)], ["inspect", "--meta", "--json", str(target)]]
    if kind == "state":
        return [["ls", "--json", str(run)], ["ls", str(run)], ["latest", str(run)], ["inspect", str(run)]]
    return [["ls", "--json", str(prefix.parent)], ["latest", str(prefix.parent)],
            ["inspect", "--json", "--all", "--stats", "--values", "--slices", str(prefix)],
            ["inspect", "--all", "--stats", "--slices", str(prefix)], ["inspect", "--tree", str(prefix)],
            ["verify", str(prefix)], ["diff", str(reference), str(prefix)]]


def _link_tree(source: Path, target: Path) -> None:
    for root, _dirs, files in os.walk(source):
        here = target / Path(root).relative_to(source)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(os.path.join(root, name), here / name)


def _replace(path: Path, data: bytes) -> None:
    path.unlink()  # a hard link to the fixture: never write through it
    path.write_bytes(data)


def _make_mutants(fixtures_dir: Path, work: Path) -> list[dict]:
    mutator = Mutator(SEED)
    jobs = []
    for kind in ("index", "data", "meta", "state"):
        bases = [base for base in BASES if kind in base[2]]
        for number in range(PER_KIND):
            fixture, prefix_name, _kinds = bases[number % len(bases)]
            run = work / f"{kind}-{number:03d}"
            _link_tree(fixtures_dir / fixture, run)
            prefix = run / prefix_name
            if kind == "index":
                index = prefix if fixture == "v1_format" else Path(str(prefix) + ".index")
                data, what = mutator.table(index.read_bytes())
                _replace(index, data)
            elif kind == "data":
                for path in [Path(str(prefix) + ".index")] + list(prefix.parent.glob(prefix.name + ".data-*")):
                    _replace(path, path.read_bytes())  # own copies: the mutator rewrites them
                files, what = mutator.data(str(prefix))
                for path, data in files.items():
                    Path(path).write_bytes(data)
            elif kind == "meta":
                graph = run / "model" / "saved_model.pb" if fixture == "tf2_saved_model" else Path(str(prefix) + ".meta")
                data, what = mutator.raw(graph.read_bytes(), graph.name)
                _replace(graph, data)
            else:
                data, what = mutator.state((run / "checkpoint").read_bytes())
                _replace(run / "checkpoint", data)
            for args in _commands(kind, run, prefix, fixtures_dir / fixture / prefix_name):
                jobs.append({"mutant": f"{fixture} {kind} #{number}: {what}", "args": args})
    return jobs


def _run_jobs(jobs: list[dict], tmp_path: Path, name: str = "jobs", env: dict | None = None) -> None:
    """Every job's command in the capped workers; fails naming the first failing runs."""
    workers = []
    for i in range(WORKERS):
        job_file, result_file = tmp_path / f"{name}{i}.json", tmp_path / f"{name}-failures{i}.json"
        job_file.write_text(json.dumps(jobs[i::WORKERS]))
        workers.append((subprocess.Popen([sys.executable, "-c", _WORKER, str(MEMORY_CAP_MB), str(job_file),
                                          str(result_file)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                         env={**os.environ, **(env or {})}),
                        result_file))
    failures = []
    for proc, result_file in workers:
        _out, err = proc.communicate(timeout=900)  # a hang guard, not a measurement
        assert proc.returncode == 0, err[-3000:]
        failures += json.loads(result_file.read_text())
    report = "\n".join(f"{f['mutant']}\n  ckpttool {' '.join(f['args'])} -> {f['code']}\n  {f['stderr'][-600:]}"
                       for f in failures[:10])
    assert not failures, f"{len(failures)} failing runs, the first:\n{report}"


def _mutant_jobs(mutate, seeds: list[Path], count: int, stem: Path, filename: str, commands) -> list[dict]:
    """`count` mutants of the seeds in turn, each in a directory of its own, with the jobs running
    `commands(target, seed, number)` on it."""
    jobs = []
    for number in range(count):
        seed = seeds[number % len(seeds)]
        data, what = mutate(seed.read_bytes())
        here = Path(f"{stem}-{number:03d}")
        here.mkdir(parents=True)
        (here / filename).write_bytes(data)
        jobs += [{"mutant": f"{seed.name} #{number}: {what}", "args": args}
                 for args in commands(here / filename, seed, number)]
    return jobs


def test_fuzzed_files_give_only_exit_0_1_or_3(fixtures_dir, tmp_path):
    jobs = _make_mutants(fixtures_dir, tmp_path / "mutants")
    assert len(jobs) > 4 * PER_KIND
    _run_jobs(jobs, tmp_path)


# -- weights files ------------------------------------------------------------------

def _weights_seeds(fixtures_dir: Path, work: Path) -> dict[str, list[Path]]:
    """Seed files of each weights format, written by the format's own library (and Keras)."""
    import h5py
    from safetensors.numpy import save_file

    work.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    arrays = {"dense/kernel": rng.standard_normal((4, 3)).astype(np.float32), "dense/bias": np.arange(3),
              "embedding": rng.standard_normal((40, 8)).astype(np.float16), "step": np.array(7, dtype=np.int32),
              "mask": np.array([True, False])}
    save_file(arrays, str(work / "seed.safetensors"))
    np.savez(work / "seed.npz", **arrays)
    with h5py.File(work / "seed.weights.h5", "w") as handle:
        for i, (name, value) in enumerate(arrays.items()):
            chunked = value.ndim == 2 and i % 2 == 0
            handle.create_dataset(f"layers/{name.replace('/', '_')}/vars/0", data=value,
                                  chunks=(2,) + value.shape[1:] if chunked else None,
                                  compression="gzip" if chunked else None)
    with h5py.File(work / "seed.h5", "w") as handle:  # laid out as a legacy Keras save_weights file
        handle.attrs["layer_names"] = np.array(["dense", "embedding"], dtype=h5py.string_dtype())
        for layer, names in (("dense", ["dense/kernel", "dense/bias"]), ("embedding", ["embedding", "step"])):
            group = handle.require_group(layer)
            group.attrs["weight_names"] = np.array([f"{n}:0" for n in names], dtype=h5py.string_dtype())
            for name in names:
                group.create_dataset(f"{name}:0", data=arrays[name])
    keras3 = fixtures_dir / "keras3"  # written by Keras 3 (tests/tf_fixtures.py)
    return {"safetensors": [work / "seed.safetensors"], "npz": [work / "seed.npz"],
            "hdf5": [work / "seed.weights.h5", keras3 / "m.weights.h5", work / "seed.h5"],
            "keras": [keras3 / "m.keras"]}


def _weights_commands(target: Path, seed: Path, number: int) -> list[list[str]]:
    out = target.parent / ("out.safetensors" if number % 2 else "out/model.ckpt-1")
    return [["inspect", "--json", "--stats", "--values", str(target)], ["inspect", "--values", "--tree", str(target)],
            ["verify", "--json", str(target)], ["diff", str(seed), str(target)], ["convert", str(target), str(out)]]


def _make_weights_mutants(fixtures_dir: Path, work: Path) -> list[dict]:
    seeds = _weights_seeds(fixtures_dir, work / "seeds")
    mutator = Mutator(SEED + 1)
    jobs = []
    for kind, paths in seeds.items():
        for number in range(WEIGHTS_PER_KIND):
            seed = paths[number % len(paths)]
            data, what = getattr(mutator, kind)(seed.read_bytes())
            here = work / f"{kind}-{number:03d}"
            here.mkdir()
            target = here / seed.name.replace("seed", "mutant").replace("m.", "mutant.", 1)
            target.write_bytes(data)
            for args in _weights_commands(target, seed, number):
                jobs.append({"mutant": f"{seed.name} #{number}: {what}", "args": args})
    return jobs


def test_fuzzed_pytorch_files_give_only_exit_0_1_or_3(torch_dir, tmp_path):
    """Mutants of a zip and a legacy file torch wrote, through the allowlisting unpickler, capped."""
    seeds = [torch_dir / "every_kind.pt", torch_dir / "every_kind_legacy.pt"]
    jobs = _mutant_jobs(Mutator(SEED + 4).pytorch, seeds, PYTORCH_MUTANTS, tmp_path / "pytorch", "mutant.pt",
                        _weights_commands)
    _run_jobs(jobs, tmp_path, "pytorch")


def test_pytorch_mutator_is_deterministic(torch_dir):
    for seed in (torch_dir / "every_kind.pt", torch_dir / "every_kind_legacy.pt"):
        data = seed.read_bytes()
        first, second = Mutator(7), Mutator(7)
        assert [first.pytorch(data) for _ in range(10)] == [second.pytorch(data) for _ in range(10)]


def test_fuzzed_weights_files_give_only_exit_0_1_or_3(fixtures_dir, tmp_path):
    jobs = _make_weights_mutants(fixtures_dir, tmp_path / "weights")
    assert len(jobs) == 4 * WEIGHTS_PER_KIND * 5
    _run_jobs(jobs, tmp_path, "weights")


@pytest.mark.parametrize("kind", ["safetensors", "npz", "hdf5", "keras"])
def test_weights_mutators_are_deterministic(kind, fixtures_dir, tmp_path):
    seed = _weights_seeds(fixtures_dir, tmp_path / "seeds")[kind][-1].read_bytes()
    first, second = Mutator(7), Mutator(7)
    assert [getattr(first, kind)(seed) for _ in range(10)] == [getattr(second, kind)(seed) for _ in range(10)]


# -- graph constants ------------------------------------------------------------------

GRAPH_MUTANTS = 60


def _graph_commands(target: Path, seed: Path, number: int) -> list[list[str]]:
    out = target.parent / ("out.safetensors" if number % 2 else "out/model.ckpt-1")
    return [["inspect", "--json", "--all", "--stats", "--values", str(target)], ["inspect", "--meta", str(target)],
            ["verify", "--json", str(target)], ["diff", "--min-elements", "0", str(seed), str(target)],
            ["convert", "--min-elements", "0", str(target), str(out)]]


def test_fuzzed_graphs_give_only_exit_0_1_or_3(frozen, tmp_path):  # noqa: F811
    jobs = _mutant_jobs(Mutator(SEED + 3).graph, [frozen], GRAPH_MUTANTS, tmp_path / "graph", "mutant.pb",
                        _graph_commands)
    _run_jobs(jobs, tmp_path, "graphs")


def test_graph_mutator_is_deterministic(frozen):  # noqa: F811
    seed = frozen.read_bytes()
    first, second = Mutator(7), Mutator(7)
    assert [first.graph(seed) for _ in range(10)] == [second.graph(seed) for _ in range(10)]


# -- in a bucket ----------------------------------------------------------------------

def test_fuzzed_files_in_a_bucket_give_only_exit_0_1_or_3(fixtures_dir, tmp_path, servers):
    """A handful of safetensors and TF bundle mutants read from moto's S3 server through the
    remote reader (ranged GETs). `.npz` and Keras files are left out: RemoteInput cannot read
    them from buckets yet."""
    from tests.remote_servers import upload_tree

    s3 = servers["s3"]
    mutator = Mutator(SEED + 2)
    seed = _weights_seeds(fixtures_dir, tmp_path / "seeds")["safetensors"][0]
    jobs = []
    for number in range(2 * BUCKET_MUTANTS):
        here = tmp_path / f"bucket-{number}"
        if number % 2:
            data, what = mutator.safetensors(seed.read_bytes())
            here.mkdir()
            (here / "mutant.safetensors").write_bytes(data)
            name = "mutant.safetensors"
        else:
            _link_tree(fixtures_dir / "saver_run", here)
            prefix = here / "model.ckpt-50"
            if number % 4:
                index = Path(str(prefix) + ".index")
                data, what = mutator.table(index.read_bytes())
                _replace(index, data)
            else:
                for path in [Path(str(prefix) + ".index")] + list(here.glob("model.ckpt-50.data-*")):
                    _replace(path, path.read_bytes())
                files, what = mutator.data(str(prefix))
                for path, data in files.items():
                    Path(path).write_bytes(data)
            name = "model.ckpt-50"
        url = upload_tree(s3, str(here), f"fuzz-{number}-{os.getpid()}") + "/" + name
        for args in (["inspect", "--json", "--stats", "--values", url], ["verify", "--json", url]):
            jobs.append({"mutant": f"bucket #{number}: {what}", "args": args})
    _run_jobs(jobs, tmp_path, "bucket")


@pytest.mark.parametrize("kind", ["index", "state"])
def test_mutators_are_deterministic(kind, fixtures_dir):
    """Same seed, same mutants: a failure reproduces."""
    source = (fixtures_dir / "saver_run" / ("model.ckpt-50.index" if kind == "index" else "checkpoint")).read_bytes()
    first, second = Mutator(7), Mutator(7)
    method = "table" if kind == "index" else "state"
    assert [getattr(first, method)(source) for _ in range(20)] == [getattr(second, method)(source) for _ in range(20)]


# -- Orbax metadata (issue 28) ----------------------------------------------------------

ORBAX_MUTANTS = 48
_HOSTILE_JSON = [None, True, -1, 2 ** 62, 1e308, "", "..", "../../etc", "a/b", "x" * 5000, [], {}, [2 ** 40] * 3,
                 [[[[[]]]]], {"key": "..", "key_type": 2}, {"id": "zstd", "level": 99}]


def _json_paths(value, path=()):
    """Every (path, value) inside a JSON document, containers included."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _json_paths(child, path + (key,))


def _orbax_json(mutator: Mutator, data: bytes, what: str) -> tuple[bytes, str]:
    """A JSON metadata file with one value replaced by a hostile one (a huge shape, a key that
    leaves the directory, a wrong type), or its bytes mutated."""
    if mutator.chance(0.3):
        return mutator.raw(data, what)
    doc = json.loads(data)
    paths = [p for p, _v in _json_paths(doc) if p]
    path = mutator.pick(paths)
    if what.endswith((".zarray", "zarr.json")) and mutator.chance(0.5):  # the shape or chunks, declared huge
        path = (mutator.pick(["shape", "chunks"]),) if ".zarray" in what else ("shape",)
    value = mutator.pick(_HOSTILE_JSON)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return json.dumps(doc).encode(), f"{what}: {'/'.join(map(str, path))} = {json.dumps(value)[:40]}"


def test_fuzzed_orbax_metadata_gives_only_exit_0_1_or_3(orbax_dir, tmp_path):
    mutator = Mutator(SEED + 4)
    seeds = {"zarr/7": ["default/_METADATA", "default/_strings.json", "default/params.dense.kernel/.zarray",
                        "default/params.bf16/.zarray", "default/step/.zarray"],
             "run/2": ["default/_METADATA", "_CHECKPOINT_METADATA"], "v1": ["state/_METADATA", "_CHECKPOINT_METADATA"]}
    jobs = []
    for number in range(ORBAX_MUTANTS):
        seed = list(seeds)[number % len(seeds)]
        member = seeds[seed][(number // len(seeds)) % len(seeds[seed])]
        here = tmp_path / f"orbax-{number:03d}"
        _link_tree(orbax_dir / seed, here)
        data, what = _orbax_json(mutator, (here / member).read_bytes(), member)
        _replace(here / member, data)
        out = here.parent / f"out-{number}" / ("w.safetensors" if number % 2 else "model.ckpt-1")
        for args in (["inspect", "--json", "--stats", "--values", str(here)], ["verify", "--json", str(here)],
                     ["diff", str(orbax_dir / seed), str(here)], ["convert", str(here), str(out)]):
            jobs.append({"mutant": f"orbax {seed} #{number}: {what}", "args": args})
    # TensorStore reads on a pool of threads; glibc reserves 64 MiB of address space for each thread's
    # malloc arena, which would spend the cap on reservations rather than on what is allocated.
    _run_jobs(jobs, tmp_path, "orbax", env={"MALLOC_ARENA_MAX": "2"})
