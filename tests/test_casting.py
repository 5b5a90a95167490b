"""`convert --dtype` against numpy's astype and ml_dtypes on TensorFlow-read values: floating variables
cast with rounding to nearest even, integers, strings and step counters kept, --keep-dtype exempting
more, overflow to inf counted and named."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli

NP = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16, "float32": np.float32, "float64": np.float64}


def _values(dtype, rng):
    """Random values, ties at every rounding, the edges of each format, NaN and infinities."""
    base = rng.standard_normal(400) * 10.0 ** rng.integers(-40, 40, 400)
    edges = [0.0, -0.0, np.nan, np.inf, -np.inf, 65504.0, 65520.0, 1e5, -1e5, 3.4e38, 1e-8, 6e-8, 1e-45, 1e-300,
             1e300, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -30, 1 + 2 ** -11, 1 + 2 ** -11 + 2 ** -40,
             1 + 2 ** -24, 1 + 3 * 2 ** -24]
    with np.errstate(over="ignore"):
        return np.concatenate([base, edges]).astype(NP[dtype])


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
        value = src.get_tensor(name).astype(np.float64)
        with np.errstate(over="ignore"):
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
