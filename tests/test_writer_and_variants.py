"""The bundle writer round-trips (property-based, and read by TensorFlow), and
variant tensors written by TensorFlow are read and carried over. (Snappy-compressed
tables: tests/test_snappy.py.)"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpttool.formats.tf.bundle import open_bundle
from ckpttool.formats.tf.bundle_writer import BundleWriter
from ckpttool.formats.dtypes import dtype_from_name
from tests.conftest import run_cli

NUMERIC = ["float32", "float64", "int32", "uint8", "int16", "int8", "int64", "bool", "complex64", "complex128",
           "float16", "uint16", "uint32", "uint64"]


def _values(draw_or_rng, dtype: str, shape):
    rng = draw_or_rng
    size = int(np.prod(shape))
    if dtype == "bool":
        return rng.integers(0, 2, size).astype(bool).reshape(shape)
    if dtype.startswith("complex"):
        return (rng.standard_normal(size) + 1j * rng.standard_normal(size)).astype(dtype).reshape(shape)
    if dtype.startswith("float"):
        return rng.standard_normal(size).astype(dtype).reshape(shape)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size, dtype=dtype, endpoint=True).reshape(shape)


_tensor = st.tuples(st.sampled_from(NUMERIC + ["string"]),
                    st.lists(st.integers(0, 4), min_size=0, max_size=3), st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=12),
                       _tensor, min_size=1, max_size=8), st.integers(1, 3))
def test_bundle_writer_round_trip(tmp_path_factory, tensors, shards):
    prefix = str(tmp_path_factory.mktemp("bundle") / "ckpt")
    writer = BundleWriter(prefix, num_shards=shards)
    expected = {}
    for i, (name, (dtype, shape, seed)) in enumerate(sorted(tensors.items())):
        rng = np.random.default_rng(seed)
        if dtype == "string":
            value = np.array([rng.bytes(int(n)) for n in rng.integers(0, 300, int(np.prod(shape)))],
                             dtype=object).reshape(shape)
        else:
            value = _values(rng, dtype, shape)
        writer.add(name, dtype_from_name(dtype), value, shard=i % shards)
        expected[name] = value
    writer.finish()
    with open_bundle(prefix) as bundle:
        assert {v.name for v in bundle.variables} == set(expected)
        for var in bundle.variables:
            got = bundle.read(var)
            assert got.shape == expected[var.name].shape
            assert np.array_equal(got, expected[var.name]), var.name


def test_tensorflow_reads_random_bundles(tmp_path, tf):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        prefix = str(tmp_path / f"b{seed}")
        writer = BundleWriter(prefix, num_shards=2)
        expected = {}
        for i, dtype in enumerate(NUMERIC):
            shape = tuple(int(d) for d in rng.integers(0, 5, rng.integers(0, 3)))
            expected[f"t/{dtype}"] = _values(rng, dtype, shape)
            writer.add(f"t/{dtype}", dtype_from_name(dtype), expected[f"t/{dtype}"], shard=i % 2)
        strings = np.array([rng.bytes(int(n)) for n in rng.integers(0, 20000, 5)], dtype=object)
        writer.add("t/string", dtype_from_name("string"), strings, shard=1)
        whole = rng.standard_normal((9, 4)).astype(np.float32)
        writer.add_partitioned("t/partitioned", dtype_from_name("float32"), (9, 4),
                               [(((0, 4), (0, -1)), whole[:4]), (((4, 5), (0, -1)), whole[4:])], shards=[0, 1])
        writer.finish()
        reader = tf.train.load_checkpoint(prefix)
        for name, value in expected.items():
            np.testing.assert_array_equal(reader.get_tensor(name), value, err_msg=name)
        assert list(reader.get_tensor("t/string")) == list(strings)
        np.testing.assert_array_equal(reader.get_tensor("t/partitioned"), whole)
        (piece,) = tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=["t/partitioned"],
                                        shape_and_slices=["9 4 3,3:-"], dtypes=[tf.float32])
        np.testing.assert_array_equal(piece.numpy(), whole[3:6])


def test_variant_tensor_read_verified_and_carried_over(fixtures_dir, tmp_path, tf, manifest):
    prefix = fixtures_dir / "iterator_state" / manifest["iterator_state"]["prefix"]
    reader = tf.train.load_checkpoint(str(prefix))
    key = "it/.ATTRIBUTES/ITERATOR_STATE"
    doc = run_cli("inspect", "--json", "--values", prefix).json()
    (var,) = [v for v in doc["variables"] if v["name"] == key]
    assert var["dtype"] == reader.get_variable_to_dtype_map()[key].name == "variant"
    assert var["shape"] == reader.get_variable_to_shape_map()[key]
    assert len(var["value"]) == var["num_elements"]
    assert run_cli("verify", prefix).exit_code == 0  # every element's framing CRC checked
    # Renamed, TensorFlow restores the iterator and goes on where it stopped.
    dst = tmp_path / "renamed"
    assert run_cli("rename-vars", "--regex", "^it/=iterator/", prefix, dst).exit_code == 0
    iterator = iter(tf.data.Dataset.range(10).batch(3))
    tf.train.Checkpoint(iterator=iterator).read(str(dst)).assert_existing_objects_matched()
    assert next(iterator).numpy().tolist() == manifest["iterator_state"]["next"]
