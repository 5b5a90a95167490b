"""Comparisons of our JSON output with what TensorFlow reads (the oracle)."""
from __future__ import annotations

import base64

import numpy as np

_NON_FINITE = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}


def _floats(value):
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def _bytes(value):
    if isinstance(value, list):
        return [_bytes(v) for v in value]
    if isinstance(value, dict):
        return base64.b64decode(value["base64"])
    return value.encode("utf-8")


def _plain(ref) -> np.ndarray:
    ref = np.asarray(ref)
    if ref.dtype.names:  # TensorFlow's quantized types come back as one-field records
        ref = ref[ref.dtype.names[0]]
    return ref


def assert_value_matches(ours, ref, dtype: str, name: str = "") -> None:
    ref = _plain(ref)
    if dtype == "string":
        got = _bytes(ours)
        if ref.dtype.kind == "S":
            # TensorFlow hands back numpy fixed-width bytes, which cannot hold trailing NULs.
            got = np.array(got, dtype=object)
            got = np.vectorize(lambda b: b.rstrip(b"\0"), otypes=[object])(got).tolist() if got.size else got.tolist()
        assert got == ref.tolist(), name
    elif dtype.startswith("complex"):
        pairs = np.array(_floats(ours), dtype=np.float64)
        got = pairs[..., 0] + 1j * pairs[..., 1] if pairs.size else pairs.reshape(ref.shape)
        assert got.shape == ref.shape, name
        np.testing.assert_array_equal(got, ref.astype(np.complex128), err_msg=name)
    elif dtype.startswith(("float", "bfloat")):
        got = np.array(_floats(ours), dtype=np.float64).reshape(ref.shape)
        np.testing.assert_array_equal(got, ref.astype(np.float64), err_msg=name)
    elif dtype == "bool":
        assert np.array(ours, dtype=bool).tolist() == ref.tolist(), name
    else:
        expected = ref.tolist() if dtype == "uint64" else ref.astype(np.int64).tolist()
        assert ours == expected, name


def assert_inspect_matches_tf(doc: dict, reader) -> None:
    """`inspect --json --all --values` equals tf.train.load_checkpoint: names, dtypes, shapes, values."""
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    assert sorted(v["name"] for v in doc["variables"]) == sorted(shapes)
    assert doc["num_variables"] == len(shapes)
    for var in doc["variables"]:
        name = var["name"]
        assert var["dtype"] == dtypes[name].name, name
        assert var["shape"] == list(shapes[name]), name
        assert var["num_elements"] == int(np.prod(shapes[name], dtype=np.int64)), name
        assert_value_matches(var["value"], reader.get_tensor(name), var["dtype"], name)
