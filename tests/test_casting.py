"""`convert --dtype` against numpy's astype and ml_dtypes on TensorFlow-read values: floating variables
cast with one rounding to nearest even (float64 -> bfloat16 too, where `tf.cast` rounds twice),
integers, strings and step counters kept, --keep-dtype exempting more, overflow to inf counted and
named."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli

NP = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16, "float32": np.float32, "float64": np.float64}


BF16_MAX = (2 - 2 ** -7) * 2.0 ** 127
# Where rounding twice (float64 -> float32 -> bfloat16, as tf.cast does) and once differ: just past a
# bfloat16 tie whose lower neighbour is even, by less than float32 resolves, so float32 makes it the
# tie and the tie goes down. Normal numbers of both signs, a subnormal tie, and the last one below
# bfloat16's overflow threshold (once: the largest finite bfloat16; twice: inf).
DOUBLE_ROUNDING_TRAPS = [1 + 2 ** -8 + 2 ** -30, -(1 + 2 ** -8 + 2 ** -40), (1 + 2 ** -8 + 2 ** -52) * 2.0 ** -100,
                         2.0 ** -134 + 2.0 ** -160, -(2.0 ** -134 + 2.0 ** -170),
                         (BF16_MAX + 2.0 ** 119) * (1 - 2 ** -40)]
# NaNs with payloads, signalling and quiet, of both signs: bfloat16 keeps a quiet NaN of the same sign
NAN_PAYLOADS = {"float64": [0x7FF0000000000001, 0xFFF8000000000123, 0x7FF4000000000000, 0x7FF7FFFFFFFFFFFF],
                "float32": [0x7F800001, 0xFFC00001, 0x7FA00000, 0x7FBFFFFF],
                "float16": [0x7C01, 0xFE01, 0x7D00], "bfloat16": [0x7F81, 0xFFC1, 0x7FA0]}


def _values(dtype, rng):
    """Random values, ties at every rounding (and values just past them by less than float32
    resolves), the edges of each format (subnormals, overflow), NaNs with payloads and infinities."""
    base = rng.standard_normal(400) * 10.0 ** rng.integers(-40, 40, 400)
    edges = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 65504.0, 65520.0, 1e5, -1e5, 3.4e38, 1e39, -1e39,
             BF16_MAX, BF16_MAX + 2.0 ** 119, 1e-8, 6e-8, 1e-45, 2.0 ** -133, 3 * 2.0 ** -134, 2.0 ** -149,
             2.0 ** -150, 1e-300, 1e300, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 - 2 ** -40,
             1 + 3 * 2 ** -8 + 2 ** -40, 1 + 2 ** -11, 1 + 2 ** -11 + 2 ** -40, 1 + 2 ** -24, 1 + 3 * 2 ** -24,
             *DOUBLE_ROUNDING_TRAPS]
    with np.errstate(over="ignore"):
        values = np.concatenate([base, edges]).astype(NP[dtype])
    payloads = np.array(NAN_PAYLOADS[dtype], dtype=f"u{values.itemsize}").view(values.dtype)
    return np.concatenate([values, payloads])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import tensorflow as tf

    rng = np.random.default_rng(4)
    path = tmp_path_factory.mktemp("cast") / "ck"
    tf_dtypes = {"bfloat16": tf.bfloat16, "float16": tf.float16, "float32": tf.float32, "float64": tf.float64}
    variables = {f"v_{d}": tf.Variable(tf.constant(_values(d, rng), dtype=tf_dtypes[d])) for d in NP}
    variables["layer_norm_gamma"] = tf.Variable(rng.standard_normal(5).astype(np.float32))
    variables["step"] = tf.Variable(7, dtype=tf.int64)
    variables["global_step"] = tf.Variable(4097.0, dtype=tf.float32)  # a float step counter: kept
    variables["count"] = tf.Variable([1, 2, 3], dtype=tf.int32)
    variables["label"] = tf.Variable(b"text")
    tf.train.Checkpoint(**variables).write(str(path))
    return path


@pytest.mark.parametrize("target", list(NP))
def test_cast_equals_astype_of_tensorflow_values(checkpoint, tmp_path, tf, target):
    out = tmp_path / "out" / "ck-1"
    result = run_cli("convert", str(checkpoint), str(out), "--dtype", target, "--keep-dtype", "norm", "--json")
    assert result.exit_code == 0, result.stderr
    src, dst = tf.train.load_checkpoint(str(checkpoint)), tf.train.load_checkpoint(str(out))
    dtypes = dst.get_variable_to_dtype_map()
    for name, dtype in src.get_variable_to_dtype_map().items():
        if name.startswith("_CHECKPOINTABLE"):
            continue
        value = src.get_tensor(name)
        if name.startswith("v_"):
            with np.errstate(over="ignore", invalid="ignore"):
                expected = value.astype(NP[target])
            got = dst.get_tensor(name)
            assert dtypes[name].name == target, name
            # bit-exact, NaN included (both are quiet NaNs of the same sign)
            assert got.view(f"u{got.itemsize}").tobytes() == expected.view(f"u{expected.itemsize}").tobytes(), name
        else:  # integers, strings, the step counter and what --keep-dtype names keep dtype and bits
            assert dtypes[name] == dtype, name
            assert np.asarray(dst.get_tensor(name)).tobytes() == np.asarray(value).tobytes(), name
    # overflow to inf is counted and named: finite values out of the target's range
    overflowed = {o["name"]: o["count"] for o in json.loads(result.stdout)["overflowed"]}
    for name in (n for n in src.get_variable_to_dtype_map() if n.startswith("v_")):
        with np.errstate(over="ignore", invalid="ignore"):  # NaNs with payloads cast without a word
            value = src.get_tensor(name).astype(np.float64)
            count = int(np.count_nonzero(np.isfinite(value) & np.isinf(value.astype(NP[target]).astype(np.float64))))
        assert overflowed.get(name, 0) == count, name
        if count:
            assert f"{name}: {count} finite value" in result.stderr


def test_cast_to_safetensors_loads_in_the_library(checkpoint, tmp_path, tf):
    from safetensors.numpy import load_file

    out = tmp_path / "o.safetensors"
    assert run_cli("convert", str(checkpoint), str(out), "--dtype", "float16").exit_code == 0
    loaded = load_file(str(out))
    src = tf.train.load_checkpoint(str(checkpoint))
    with np.errstate(over="ignore"):
        assert loaded["v_float64/.ATTRIBUTES/VARIABLE_VALUE"].tobytes() == \
            src.get_tensor("v_float64/.ATTRIBUTES/VARIABLE_VALUE").astype(np.float16).tobytes()
    assert loaded["step/.ATTRIBUTES/VARIABLE_VALUE"].dtype == np.int64


def test_dry_run_plan_shows_the_casts_and_bad_options(checkpoint, tmp_path):
    result = run_cli("convert", str(checkpoint), str(tmp_path / "o.npz"), "--dtype", "float16", "-n", "--json")
    transformed = {t["source"]: t["transforms"] for t in json.loads(result.stdout)["transformed"]}
    assert transformed["v_float32/.ATTRIBUTES/VARIABLE_VALUE"] == ["cast float32 -> float16"]
    assert "step/.ATTRIBUTES/VARIABLE_VALUE" not in transformed
    assert_one_line_error(run_cli("convert", str(checkpoint), str(tmp_path / "o.npz"), "--dtype", "int8"), 2)
    assert_one_line_error(run_cli("convert", str(checkpoint), str(tmp_path / "o.npz"), "--keep-dtype", "x"), 2)
    assert_one_line_error(run_cli("convert", str(checkpoint), str(tmp_path / "o.npz"), "--dtype", "float16",
                                  "--keep-dtype", "("), 2)


def test_tf_cast_rounds_float64_to_bfloat16_twice_where_convert_rounds_once(checkpoint, tmp_path, tf):
    """What README says of tf.cast: it takes a float64 to bfloat16 through float32 (two roundings),
    so on these values it differs from ml_dtypes and numpy's one rounding, which convert follows."""
    traps = np.array(DOUBLE_ROUNDING_TRAPS)
    once = traps.astype(ml_dtypes.bfloat16)
    with np.errstate(over="ignore"):
        twice = traps.astype(np.float32).astype(ml_dtypes.bfloat16)
    assert (once.view(np.uint16) != twice.view(np.uint16)).all()  # each is a trap: the roundings differ
    by_tf = tf.cast(tf.constant(traps, tf.float64), tf.bfloat16).numpy()
    assert by_tf.view(np.uint16).tolist() == twice.view(np.uint16).tolist()
    assert float(by_tf[0]) == 1.0 and float(once[0]) == 1.0078125
    out = tmp_path / "ck"
    assert run_cli("convert", checkpoint, out, "--dtype", "bfloat16").exit_code == 0
    name = "v_float64/.ATTRIBUTES/VARIABLE_VALUE"
    source = tf.train.load_checkpoint(str(checkpoint)).get_tensor(name)
    got = tf.train.load_checkpoint(str(out)).get_tensor(name)
    at_traps = np.isin(source, traps)
    assert np.count_nonzero(at_traps) == len(traps)
    assert got[at_traps].view(np.uint16).tolist() == once.view(np.uint16).tolist()  # in the order written


@pytest.mark.parametrize("source", ["float64", "float32", "float16"])
def test_bfloat16_cast_rounds_once_on_random_bits(source):
    """Any bit pattern (every exponent, mantissas at and near ties, subnormals, NaN payloads, inf),
    streamed in chunks that end inside an element, comes out as ml_dtypes' one rounding."""
    from ckpttool.ops.tensors.casting import cast_stream

    rng = np.random.default_rng(24)
    width = np.dtype(source).itemsize * 8
    bits = rng.integers(0, 2 ** width, 200_000, dtype=np.uint64).astype(f"u{width // 8}")
    low = {64: 45, 32: 16}.get(width)  # the bits a bfloat16 drops
    if width > 16:
        one = np.array(1, bits.dtype)
        ties = bits[:50_000] & ~((one << low) - one) | (one << (low - 1))  # exactly on a tie
        bits[:50_000] = ties
        bits[50_000:100_000] = ties[:50_000] | rng.integers(0, 2, 50_000).astype(bits.dtype)  # just past one
    values = bits.view(source)
    stored = values.astype(values.dtype.newbyteorder("<")).tobytes()  # as checkpoints store them
    chunks = [stored[i:i + 4097] for i in range(0, len(stored), 4097)]
    overflow = [0]
    # each piece is copied before the next is asked for, as convert's writers do (it may be a view)
    got = np.frombuffer(b"".join(bytes(c) for c in cast_stream(iter(chunks), source, "bfloat16", overflow)), "<u2")
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(ml_dtypes.bfloat16)
        assert got.tolist() == expected.view(np.uint16).tolist()
        assert overflow[0] == np.count_nonzero(np.isfinite(values) & np.isinf(expected.astype(np.float32)))


@pytest.mark.parametrize("chunk", [6, 4097, 262147])
def test_float32_to_bfloat16_finite_chunks_take_the_short_path(chunk, monkeypatch):
    """Finite float32 values (ties, values next to ties, subnormals, the largest that stay finite),
    with a NaN and values that overflow in a few chunks only, streamed in pieces that end inside an
    element: ml_dtypes' rounding, the overflows counted; the chunks without a NaN or an overflow went
    the in-place integer way, the others cast_values' way."""
    from ckpttool.ops.tensors import casting

    rng = np.random.default_rng(29)
    bits = rng.integers(0, 0x7F7F7FFF, 300_000, dtype=np.uint32) | (rng.integers(0, 2, 300_000, np.uint32) << 31)
    bits[:40_000] = bits[:40_000] & 0xFFFF0000 | 0x8000  # exactly on a tie
    bits[40_000:80_000] = bits[40_000:80_000] & 0xFFFF0000 | rng.choice([0x7FFF, 0x8001], 40_000)  # next to one
    bits[80_000:90_000] &= 0x807FFFFF  # subnormals (and zeros) of both signs
    bits[90_000:90_004] = [0x7F7F7FFF, 0xFF7F7FFF, 0x7F7F8000, 0xFF7F8000]  # the last finite; the first inf
    bits[200_000] = 0x7FC00001  # a NaN with a payload
    values = bits.view("<f4")
    stored = values.tobytes()
    calls = []
    short_path = casting.float32_to_bfloat16_finite
    monkeypatch.setattr(casting, "float32_to_bfloat16_finite",
                        lambda data, work, written: calls.append((bytes(data), short_path(data, work, written)))
                        or calls[-1][1])
    overflow = [0]
    pieces = casting.cast_stream(iter([stored[i:i + chunk] for i in range(0, len(stored), chunk)]), "float32",
                                 "bfloat16", overflow)
    got = np.frombuffer(b"".join(bytes(c) for c in pieces), "<u2")  # each copied before the next, as the writers do
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(ml_dtypes.bfloat16)
        overflows = np.isfinite(values) & np.isinf(expected.astype(np.float32))
    assert got.tolist() == expected.view(np.uint16).tolist()
    assert overflow[0] == np.count_nonzero(overflows) >= 2
    for data, result in calls:  # the short way exactly where nothing is NaN or overflows
        piece = np.frombuffer(data, "<f4")
        with np.errstate(over="ignore"):
            special = np.isnan(piece).any() or np.isinf(piece.astype(ml_dtypes.bfloat16).astype(np.float32)).any()
        assert (result is None) == special
    assert any(result is not None for _data, result in calls)


@pytest.mark.parametrize("target", ["float32", "float64", "float16"])
def test_bfloat16_sources_cast_as_ml_dtypes_casts_them(target):
    """Every bfloat16 bit pattern (NaN payloads, signalling and quiet, infinities, subnormals, values
    float16 cannot hold), streamed in chunks that end inside an element and decoded into reused
    buffers: ml_dtypes' cast bit for bit (NaNs too), float16's overflows counted."""
    from ckpttool.ops.tensors.casting import cast_stream

    bits = np.concatenate([np.arange(1 << 16, dtype=np.uint16)] * 3)
    np.random.default_rng(31).shuffle(bits)
    values = bits.view(ml_dtypes.bfloat16)
    stored = bits.astype("<u2").tobytes()
    chunks = [stored[i:i + 40_001] for i in range(0, len(stored), 40_001)]
    overflow = [0]
    # each piece is copied before the next is asked for, as convert's writers do (it may be a view)
    got = b"".join(bytes(c) for c in cast_stream(iter(chunks), "bfloat16", target, overflow))
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(NP[target])
        overflows = np.isfinite(values.astype(np.float32)) & np.isinf(expected)
    unsigned = f"<u{expected.itemsize}"
    assert np.frombuffer(got, unsigned).tolist() == expected.view(unsigned).tolist()
    assert overflow[0] == np.count_nonzero(overflows)


@pytest.mark.parametrize("source,target", [("float32", "float16"), ("float64", "float32"), ("float64", "float16"),
                                           ("float16", "float32"), ("float16", "float64"), ("float32", "float64")])
def test_casts_between_numpy_floats_stream_as_astype(source, target):
    """Ordinary values (the chunks cast into reused buffers: nothing overflows, no NaN), then any bit
    pattern (NaN payloads, infinities, subnormals, overflows: those chunks counted), streamed in chunks
    that end inside an element: numpy's astype bit for bit, the overflows counted."""
    from ckpttool.ops.tensors.casting import cast_stream

    rng = np.random.default_rng(37)
    width = np.dtype(source).itemsize
    limit = float(np.finfo(target).max) if width > np.dtype(target).itemsize else float(np.finfo(source).max)
    ordinary = (rng.uniform(-1, 1, 60_000) * limit * 0.999).astype(source)
    bits = rng.integers(0, 2 ** (8 * width), 60_000, dtype=np.uint64).astype(f"u{width}").view(source)
    values = np.concatenate([ordinary, bits])
    stored = values.astype(values.dtype.newbyteorder("<")).tobytes()
    chunks = [stored[i:i + 40_001] for i in range(0, len(stored), 40_001)]
    overflow = [0]
    # each piece is copied before the next is asked for, as convert's writers do (it may be a view)
    got = b"".join(bytes(c) for c in cast_stream(iter(chunks), source, target, overflow))
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(target)
    unsigned = f"<u{expected.itemsize}"
    assert np.frombuffer(got, unsigned).tolist() == expected.view(unsigned).tolist()
    assert overflow[0] == np.count_nonzero(np.isfinite(values) & np.isinf(expected))


def test_float32_to_float16_on_the_bits_is_numpys_cast(monkeypatch):
    """Every float32 below float16's overflow threshold in steps (each exponent's ties, exactly and
    one bit either side, the largest that stay finite, float16's subnormals and the boundary of its
    normal range, zeros), both signs, streamed in chunks without a NaN or an overflow: the integer
    passes give numpy's astype bit for bit, and they are the path taken."""
    from ckpttool.ops.tensors import casting

    steps = np.arange(0, 0x477FF000, 4099, dtype=np.uint32)
    ties = (steps & ~np.uint32(0x1FFF)) | 0x1000  # exactly between two float16 values
    edges = np.array([0x477FEFFF, 0x477FE000, 0x38800000, 0x387FFFFF, 0x387FF000, 0x33000000, 0x33000001, 0x1],
                     np.uint32)
    bits = np.concatenate([steps, ties, ties - 1, ties + 1, edges])
    bits = bits[bits < 0x477FF000]  # 65520 and above overflow: cast_values' to count
    values = np.concatenate([bits, bits | 0x80000000]).view("<f4")
    np.random.default_rng(41).shuffle(values)
    stored = values.tobytes()
    calls = []
    on_bits = casting._float32_to_float16_bits
    monkeypatch.setattr(casting, "_float32_to_float16_bits", lambda *a: calls.append(1) or on_bits(*a))
    overflow = [0]
    pieces = casting.cast_stream(iter([stored[i:i + 65_537] for i in range(0, len(stored), 65_537)]), "float32",
                                 "float16", overflow)
    got = np.frombuffer(b"".join(bytes(c) for c in pieces), "<u2")  # each copied before the next, as the writers do
    assert got.tolist() == values.astype(np.float16).view(np.uint16).tolist()
    assert overflow[0] == 0 and len(calls) == -(-len(stored) // 65_537)
