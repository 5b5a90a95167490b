"""Fuzzing the readers (issue 8 item 12): seeded mutants of TensorFlow-written
indexes, data shards, `.meta` graphs and state files, many of them with every
checksum recomputed so that they get past the CRCs to the parsers behind them,
each run through every read command (ls, latest, inspect with --stats --values
--slices --tree --meta, verify, diff). Only exits 0, 1 and 3 are accepted:
never 70, never a traceback, never "out of memory" (the commands run with their
address space capped, so an allocation sized by a lie fails visibly).

The commands run in-process, in two worker subprocesses that hold the memory
cap; a failure names the mutant (seed, base, what was changed) and the command.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
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

SEED = 20260817
PER_KIND = 200  # mutants of each file kind
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


def test_fuzzed_files_give_only_exit_0_1_or_3(fixtures_dir, tmp_path):
    jobs = _make_mutants(fixtures_dir, tmp_path / "mutants")
    assert len(jobs) > 4 * PER_KIND
    workers = []
    for i in range(WORKERS):
        job_file, result_file = tmp_path / f"jobs{i}.json", tmp_path / f"failures{i}.json"
        job_file.write_text(json.dumps(jobs[i::WORKERS]))
        workers.append((subprocess.Popen([sys.executable, "-c", _WORKER, str(MEMORY_CAP_MB), str(job_file),
                                          str(result_file)], cwd=ROOT, stderr=subprocess.PIPE, text=True),
                        result_file))
    failures = []
    for proc, result_file in workers:
        _out, err = proc.communicate(timeout=900)  # a hang guard, not a measurement
        assert proc.returncode == 0, err[-3000:]
        failures += json.loads(result_file.read_text())
    report = "\n".join(f"{f['mutant']}\n  ckpttool {' '.join(f['args'])} -> {f['code']}\n  {f['stderr'][-600:]}"
                       for f in failures[:10])
    assert not failures, f"{len(failures)} failing runs, the first:\n{report}"


@pytest.mark.parametrize("kind", ["index", "state"])
def test_mutators_are_deterministic(kind, fixtures_dir):
    """Same seed, same mutants: a failure reproduces."""
    source = (fixtures_dir / "saver_run" / ("model.ckpt-50.index" if kind == "index" else "checkpoint")).read_bytes()
    first, second = Mutator(7), Mutator(7)
    method = "table" if kind == "index" else "state"
    assert [getattr(first, method)(source) for _ in range(20)] == [getattr(second, method)(source) for _ in range(20)]
