"""The fast read path answers as the plain one does: index entries decoded by hand
exactly as protobuf decodes them, CRCs of pieces joined into the CRC of the whole,
verify reading in parallel pieces reports what TensorFlow sees, statistics taken
in one pass per chunk match numpy, and listing or verifying a checkpoint imports
neither numpy nor protobuf."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckpttool.errors import CorruptCheckpoint
from ckpttool.formats.tf import crc32c, messages, parallel_check
from ckpttool.formats.tf.bundle import open_bundle
from ckpttool.formats.tf.protos import checkpoint_pb2 as pb
from ckpttool.formats.tf.table import read_table_file
from tests.conftest import assert_one_line_error, run_cli
from tests.test_damage import _flip

_INT32 = st.integers(-(2**31), 2**31 - 1)
_INT64 = st.one_of(st.integers(0, 300), st.integers(-(2**63), 2**63 - 1))


@st.composite
def _entries(draw) -> bytes:
    entry = pb.BundleEntryProto(dtype=draw(st.one_of(st.integers(0, 40), _INT32)),
                                shard_id=draw(st.one_of(st.integers(0, 3), _INT32)),
                                offset=draw(_INT64), size=draw(_INT64), crc32c=draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(0, 4))):
        entry.shape.dim.add(size=draw(_INT64), name=draw(st.sampled_from(["", "", "", "batch"])))
    entry.shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    if draw(st.booleans()):
        entry.ClearField("shape")
    for _ in range(draw(st.integers(0, 3))):
        extents = entry.slices.add()
        for _ in range(draw(st.integers(0, 3))):
            extent = extents.extent.add(start=draw(_INT64))
            if draw(st.booleans()):
                extent.length = draw(_INT64)
    return entry.SerializeToString()


_edits = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "append"]), st.integers(0, 200),
                            st.integers(0, 255)), max_size=3)


def _edited(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, at, value in edits:
        at %= len(out) + 1
        if kind == "flip" and at < len(out):
            out[at] ^= value or 1
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out.insert(at, value)
        else:  # a field protobuf merges with or keeps as unknown
            out += bytes([value, value & 0x7F])
    return bytes(out)


def _protobuf_reading(parse, data: bytes):
    try:
        return parse(data)
    except CorruptCheckpoint:
        return CorruptCheckpoint


@settings(max_examples=400, deadline=None)
@given(first=_entries(), second=st.one_of(st.just(b""), _entries()), edits=_edits)
def test_index_entries_decode_as_protobuf_does(first, second, edits):
    data = _edited(first + second, edits)  # two messages in a row merge, as protobuf defines
    expected = _protobuf_reading(lambda d: messages._entry_from_proto(d, "entry"), data)
    try:
        fast = messages._fast_entry(data)
    except messages._NotCanonical:
        fast = None
    if fast is not None:
        assert fast == expected
    got = _protobuf_reading(lambda d: messages.parse_entry(d, "entry"), data)
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(dtype=st.integers(0, 40), dims=st.lists(st.integers(0, 2**40), max_size=5), shard=st.integers(0, 100),
       offset=st.integers(0, 2**62), size=st.integers(0, 2**62), crc=st.integers(0, 2**32 - 1),
       slices=st.lists(st.lists(st.tuples(st.integers(0, 2**40), st.one_of(st.none(), st.integers(0, 2**40))),
                                max_size=3), max_size=3))
def test_entries_as_tensorflow_writes_them_take_the_fast_path(dtype, dims, shard, offset, size, crc, slices):
    entry = pb.BundleEntryProto(dtype=dtype, shard_id=shard, offset=offset, size=size, crc32c=crc)
    entry.shape.SetInParent()  # TensorFlow writes the shape even for scalars
    for dim in dims:
        entry.shape.dim.add(size=dim)
    for extents in slices:
        proto = entry.slices.add()
        for start, length in extents:
            extent = proto.extent.add(start=start)
            if length is not None:
                extent.length = length
    data = entry.SerializeToString()
    assert messages._fast_entry(data) == messages._entry_from_proto(data, "entry")


@settings(max_examples=300, deadline=None)
@given(num_shards=_INT32, endianness=st.integers(0, 2), producer=_INT32, min_consumer=_INT32,
       bad=st.lists(_INT32, max_size=3), extra=st.binary(max_size=6), edits=_edits)
def test_bundle_headers_decode_as_protobuf_does(num_shards, endianness, producer, min_consumer, bad, extra, edits):
    header = pb.BundleHeaderProto(num_shards=num_shards, endianness=endianness)
    header.version.producer = producer
    header.version.min_consumer = min_consumer
    header.version.bad_consumers.extend(bad)
    data = _edited(header.SerializeToString() + extra, edits)

    def fields(parse):
        try:
            return parse()
        except (CorruptCheckpoint, messages._NotCanonical) as exc:
            return type(exc)

    expected = fields(lambda: messages._header_from_proto(data, "index"))
    fast = fields(lambda: messages._fast_header(data))
    assert fast is messages._NotCanonical or fast == expected


def test_tensorflow_written_indexes_take_the_fast_path(fixtures_dir):
    indexes = sorted(fixtures_dir.rglob("*.index"))
    assert len(indexes) > 10
    for index in indexes:
        items = read_table_file(str(index))
        messages._fast_header(items[0][1])
        for key, value in items[1:]:
            assert messages._fast_entry(value) == messages._entry_from_proto(value, str(key)), (index, key)


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=3000), b=st.binary(max_size=3000))
def test_crc_of_pieces_joins_into_the_crc_of_the_whole(a, b):
    assert crc32c.combine(crc32c.crc32c(a), crc32c.crc32c(b), len(b)) == crc32c.crc32c(a + b)


def test_crc_join_over_long_pieces():
    head, tail = os.urandom(1000), bytes(5 << 20)
    assert crc32c.combine(crc32c.crc32c(head), crc32c.crc32c(tail), len(tail)) == crc32c.crc32c(head + tail)


# -- verify in parallel pieces ---------------------------------------------------------

def _verify_both_ways(monkeypatch, target) -> dict:
    """verify's JSON read in small pieces by three threads; asserted equal to one thread's."""
    monkeypatch.setattr(parallel_check, "WORKERS", 1)
    alone = run_cli("verify", "--json", target)
    monkeypatch.setattr(parallel_check, "WORKERS", 3)
    monkeypatch.setattr(parallel_check, "PIECE_BYTES", 4096)
    monkeypatch.setattr(parallel_check, "THREADED_MIN_BYTES", 0)
    shared = run_cli("verify", "--json", target)
    assert (shared.exit_code, shared.json()) == (alone.exit_code, alone.json())
    return shared.json()


def _tf_damaged(tf, prefix: str) -> set[str]:
    """Names TensorFlow cannot read; a reader each (after a failed read of a sliced tensor,
    TensorFlow's reader aborts the process on the next lookup)."""
    damaged = set()
    for name in tf.train.load_checkpoint(prefix).get_variable_to_shape_map():
        try:
            tf.train.load_checkpoint(prefix).get_tensor(name)
        except Exception:  # DataLossError and friends
            damaged.add(name)
    return damaged


def test_verify_in_pieces_finds_what_tensorflow_finds(copy_fixture, tf, monkeypatch):
    run = copy_fixture("every_dtype")
    prefix = str(run / "dtypes")
    with open_bundle(prefix) as bundle:
        parts = {v.name: v.parts[0] for v in bundle.variables}
    data = prefix + ".data-00000-of-00001"
    big = parts["big/matrix"]  # 240,000 bytes: dozens of pieces
    _flip(data, big.offset + big.size // 2 + 7)
    _flip(data, parts["f64"].offset + 3)
    _flip(data, parts["strings"].offset + parts["strings"].size - 1)
    doc = _verify_both_ways(monkeypatch, prefix)
    assert {e["name"] for e in doc["errors"]} == _tf_damaged(tf, prefix) == {"big/matrix", "f64", "strings"}
    assert {e["problem"] for e in doc["errors"]} == {"checksum"}
    assert doc["checked_tensors"] == len(parts) - 3


def test_verify_in_pieces_of_an_intact_checkpoint(fixtures_dir, monkeypatch):
    doc = _verify_both_ways(monkeypatch, fixtures_dir / "every_dtype" / "dtypes")
    assert doc["ok"] and doc["checked_bytes"] > 240_000


def test_verify_in_pieces_of_a_truncated_shard(copy_fixture, monkeypatch):
    run = copy_fixture("every_dtype")
    prefix = str(run / "dtypes")
    with open_bundle(prefix) as bundle:
        big = bundle.variable("big/matrix").parts[0]
    os.truncate(prefix + ".data-00000-of-00001", big.offset + big.size // 3)
    doc = _verify_both_ways(monkeypatch, prefix)
    # One problem for the one cause (issue 18), naming big/matrix among the tensors past the end.
    assert [(e["name"], e["problem"]) for e in doc["errors"]] == [("dtypes.data-00000-of-00001", "truncated")]
    assert "big/matrix" in doc["errors"][0]["tensors"]


def test_verify_in_pieces_across_shards(copy_fixture, tf, monkeypatch):
    run = copy_fixture("max_shard")  # a variable sliced over several shards
    prefix = str(next(run.glob("*.index")))[: -len(".index")]
    with open_bundle(prefix) as bundle:
        big = next(v for v in bundle.variables if v.partitioned)
        part = big.parts[-1]
        shard = bundle.shard_path(part.shard_id)
    assert _verify_both_ways(monkeypatch, prefix)["ok"]
    _flip(shard, part.offset + part.size - 2)
    doc = _verify_both_ways(monkeypatch, prefix)
    assert {e["name"] for e in doc["errors"]} == _tf_damaged(tf, prefix) == {big.name}
    os.remove(shard)
    doc = _verify_both_ways(monkeypatch, prefix)
    # One problem for the missing shard, naming the tensors it held.
    (missing,) = [e for e in doc["errors"] if e["problem"] == "missing_shard"]
    assert missing["name"] == os.path.basename(shard) and big.name in missing["tensors"]


# -- statistics ---------------------------------------------------------------------------

def _stats_match_numpy(tf, prefix: str, tensors: dict) -> str:
    """`tensors` saved by TensorFlow at `prefix`; inspect --stats of each is what numpy computes
    of what TensorFlow reads back (mean and std to 1e-9)."""
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors), shape_and_slices=[""] * len(tensors),
                      tensors=[tf.constant(v) for v in tensors.values()])
    reader = tf.train.load_checkpoint(prefix)
    doc = run_cli("inspect", "--json", "--stats", prefix).json()
    for var in doc["variables"]:
        ref = reader.get_tensor(var["name"]).astype(np.float64).ravel()
        finite = ref[np.isfinite(ref)]
        found = var["stats"]
        assert (found["count"], found["finite_count"]) == (ref.size, finite.size)
        assert found["nan_count"] == int(np.isnan(ref).sum()) and found["inf_count"] == int(np.isinf(ref).sum())
        assert found["zero_count"] == int((finite == 0).sum())
        if not finite.size:
            assert found["min"] is found["mean"] is found["std"] is None
            continue
        assert found["min"] == finite.min() and found["max"] == finite.max()
        assert found["mean"] == pytest.approx(finite.mean(), rel=1e-9, abs=1e-12)
        assert found["std"] == pytest.approx(finite.std(), rel=1e-9, abs=1e-12)
    return prefix


def test_stats_in_one_pass_match_numpy(tmp_path, tf):
    rng = np.random.default_rng(3)
    noisy = rng.standard_normal(700_000).astype(np.float32)
    noisy[[5, 300_001, 699_999]] = [np.nan, np.inf, -np.inf]
    tensors = {
        "offset": (1000 + rng.standard_normal(600_000) * 1e-3).astype(np.float32),  # mean far above std
        "huge": 1e155 + rng.standard_normal(200_000) * 1e147,  # squares overflow: summed from deviations
        "noisy": noisy,
        "all_nan": np.full(1000, np.nan, np.float32),
        "ints": rng.integers(-(2**40), 2**40, 300_000),
        "half": rng.standard_normal(200_000).astype(np.float16),
        "flags": rng.random(100_000) < 0.3,
        "empty": np.zeros((0, 4), np.float32),
    }
    prefix = _stats_match_numpy(tf, str(tmp_path / "stats"), tensors)
    with open_bundle(prefix) as bundle:
        noisy = bundle.variable("noisy").parts[0]
    _flip(prefix + ".data-00000-of-00001", noisy.offset + noisy.size // 2)  # found after the last chunk
    assert_one_line_error(run_cli("inspect", "--stats", prefix), 3)


def test_stats_in_pieces_match_numpy_and_a_flip_in_any_piece_is_found(tmp_path, tf, monkeypatch):
    """inspect --stats of large tensors over several blocks (--stats reads them in one thread,
    verify in many pieces by worker threads): the figures numpy gives, and one flipped byte found
    wherever it lies (first and last byte, either side of a piece border), by both alike."""
    monkeypatch.setattr(parallel_check, "WORKERS", 3)
    monkeypatch.setattr(parallel_check, "PIECE_BYTES", 64 << 10)
    rng = np.random.default_rng(5)
    tensors = {"w": rng.standard_normal((600, 1000)).astype(np.float32),
               "offset": (1000 + rng.standard_normal(300_000) * 1e-3).astype(np.float32),
               "ints": rng.integers(-(2**40), 2**40, 200_000)}
    prefix = _stats_match_numpy(tf, str(tmp_path / "pieces"), tensors)
    with open_bundle(prefix) as bundle:
        w = bundle.variable("w").parts[0]
    data = prefix + ".data-00000-of-00001"
    piece = parallel_check.PIECE_BYTES
    for at in (0, piece - 1, piece, 17 * piece + 5, w.size - 1):
        _flip(data, w.offset + at)
        assert _tf_damaged(tf, prefix) == {"w"}, at
        assert_one_line_error(run_cli("inspect", "--stats", "--filter", "^w$", prefix), 3)
        checked = run_cli("verify", "--json", prefix)
        assert checked.exit_code == 1 and [e["name"] for e in checked.json()["errors"]] == ["w"], at
        _flip(data, w.offset + at)  # back: the next byte is the only damage


# -- what the fast paths import -------------------------------------------------------------

_PROBE = """
import sys
from ckpttool.cli.entry import main  # as users run it: the quick path (cli/quick.py) or Typer
try:
    main()
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] if m == "numpy" or m.startswith("numpy.") else m
                for m in sys.modules if m == "numpy" or m.startswith("numpy.") or m == "google.protobuf"})
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [
    ["latest", "saver_run"], ["ls", "saver_run"], ["inspect", "--json", "saver_run"],
    ["inspect", "--json", "tf2_manager"], ["verify", "every_dtype/dtypes"], ["verify", "partitioned"],
])
def test_listing_and_verifying_import_neither_numpy_nor_protobuf(fixtures_dir, args):
    args = [*args[:-1], str(fixtures_dir / args[-1])]
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True)
    assert "HEAVY:\n" in proc.stderr, proc.stderr[-2000:]


def test_remote_input_hands_out_small_pieces_from_whole_gets(monkeypatch):
    fsspec = pytest.importorskip("fsspec")
    from ckpttool.storage import fs, remote
    data = os.urandom(3 * remote.READ_CHUNK + 12345)
    fsspec.filesystem("memory").pipe_file("/perf-test/blob", data)
    gets = []
    real_read_range = remote.read_range
    monkeypatch.setattr(remote, "read_range", lambda url, start, end: gets.append(end - start) or
                        real_read_range(url, start, end))
    handle = fs.open_random_access("memory://perf-test/blob")
    pieces = list(handle.iter_range(100, len(data) - 100, 256 << 10))
    assert b"".join(pieces) == data[100:]
    assert max(map(len, pieces)) == 256 << 10
    assert len(gets) == 4 and max(gets) == remote.READ_CHUNK  # one GET per READ_CHUNK, whatever the piece size
    assert b"".join(handle.iter_range(0, 50)) == data[:50]
