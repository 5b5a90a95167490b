"""Every reader result equals tf.train.load_checkpoint on TensorFlow-written fixtures."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.oracle import assert_inspect_matches_tf

# (fixture directory, target as a user would type it, prefix TensorFlow reads)
CASES = [
    ("saver_run", "model.ckpt-30", "model.ckpt-30"),
    ("saver_run", "model.ckpt-50.index", "model.ckpt-50"),
    ("saver_run", ".", "model.ckpt-50"),
    ("sharded", "model.ckpt-1.data-00001-of-00002", "model.ckpt-1"),
    ("partitioned", "model.ckpt-5", "model.ckpt-5"),
    ("every_dtype", "dtypes", "dtypes"),
    ("many_vars", "many", "many"),
    ("tf2_manager", ".", "ckpt-3"),
    ("tf2_manager", "ckpt-2", "ckpt-2"),
    ("max_shard", "sharded", "sharded"),
    ("tf1_saved_model", "model", "model/variables/variables"),
    ("tf2_saved_model", "model/saved_model.pb", "model/variables/variables"),
    ("ema_run", "model.ckpt-3.meta", "model.ckpt-3"),
]


@pytest.mark.parametrize("fixture,target,prefix", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_inspect_all_values_equals_tensorflow(fixtures_dir, tf, fixture, target, prefix):
    result = run_cli("inspect", "--json", "--all", "--values", fixtures_dir / fixture / target)
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["schema_version"] == 1 and doc["command"] == "inspect"
    assert doc["checkpoint"] == str(fixtures_dir / fixture / prefix)
    assert_inspect_matches_tf(doc, tf.train.load_checkpoint(str(fixtures_dir / fixture / prefix)))


def test_every_dtype_fixture_covers_every_dtype(fixtures_dir, manifest):
    doc = run_cli("inspect", "--json", fixtures_dir / "every_dtype" / "dtypes").json()
    from ckpttool.formats.dtypes import all_dtypes

    expected = {d.name for d in all_dtypes()} - {"variant"}
    assert {v["dtype"] for v in doc["variables"]} == expected == set(manifest["every_dtype"]["dtypes"])


def test_partitioned_variables_show_as_one_logical_variable(fixtures_dir, tf):
    doc = run_cli("inspect", "--json", "--slices", fixtures_dir / "partitioned").json()
    part = next(v for v in doc["variables"] if v["name"] == "scope/part")
    assert part["partitioned"] and part["shape"] == [7, 2]
    assert [s["shape"] for s in part["slices"]] == [[3, 2], [2, 2], [2, 2]]
    # The slices tile the variable exactly as TensorFlow's sub-slice restore sees it.
    prefix = str(fixtures_dir / "partitioned" / "model.ckpt-5")
    whole = tf.train.load_checkpoint(prefix).get_tensor("scope/part")
    (piece,) = tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=["scope/part"],
                                    shape_and_slices=["7 2 3,2:-"], dtypes=[tf.float32])
    values = np.array(run_cli("inspect", "--json", "--values", "-f", "^scope/part$",
                              fixtures_dir / "partitioned").json()["variables"][0]["value"])
    np.testing.assert_array_equal(values[3:5], piece.numpy())
    np.testing.assert_array_equal(values, whole)


def test_max_shard_policy_slices_across_shards(fixtures_dir, tf):
    doc = run_cli("inspect", "--json", "--slices", fixtures_dir / "max_shard" / "sharded").json()
    sliced = [v for v in doc["variables"] if v["partitioned"]]
    assert sliced, "MaxShardSizePolicy should have split the big variable"
    assert len({s["shard_id"] for v in sliced for s in v["slices"]}) > 1


def test_v1_unsliced_read_like_tensorflow_and_sliced_refused(fixtures_dir, tf):
    prefix = fixtures_dir / "v1_format" / "model.ckpt-3"
    reader = tf.train.load_checkpoint(str(prefix))
    doc = run_cli("inspect", "--json", prefix).json()
    assert doc["format"] == "v1"
    assert sorted(v["name"] for v in doc["variables"]) == sorted(reader.get_variable_to_shape_map())
    unsliced = run_cli("inspect", "--json", "--values", "--filter", "^(plain|ints|scalar)$", prefix).json()
    for var in unsliced["variables"]:
        np.testing.assert_array_equal(np.array(var["value"]), reader.get_tensor(var["name"]))
    with pytest.raises(Exception, match="Sliced"):
        reader.get_tensor("sliced")
    refused = run_cli("inspect", "--values", "--filter", "^sliced$", prefix)
    assert_one_line_error(refused, 3)
    assert "sliced" in refused.stderr


def test_internal_entries_only_with_all(fixtures_dir):
    plain = run_cli("inspect", "--json", fixtures_dir / "tf2_manager").json()
    full = run_cli("inspect", "--json", "--all", fixtures_dir / "tf2_manager").json()
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in {v["name"] for v in plain["variables"]}
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in {v["name"] for v in full["variables"]}
    assert full["num_variables"] == plain["num_variables"] + 1


def test_filter_and_quiet(fixtures_dir):
    result = run_cli("inspect", "-q", "--filter", "^dense/", fixtures_dir / "saver_run")
    assert result.stdout.split() == ["dense/bias", "dense/kernel"]
    bad = run_cli("inspect", "--filter", "([", fixtures_dir / "saver_run")
    assert_one_line_error(bad, 2)


def test_stats_match_numpy_in_small_chunks(fixtures_dir, tf, monkeypatch):
    from ckpttool.formats.tf import bundle
    monkeypatch.setattr(bundle, "CHUNK_BYTES", 1000)  # force many chunks on the 300x200 matrix
    prefix = fixtures_dir / "every_dtype" / "dtypes"
    doc = run_cli("inspect", "--json", "--stats", "--filter", "^(big/matrix|f32|i64|bool)$", prefix).json()
    reader = tf.train.load_checkpoint(str(prefix))
    for var in doc["variables"]:
        ref = reader.get_tensor(var["name"]).astype(np.float64).ravel()
        finite = ref[np.isfinite(ref)]
        stats = var["stats"]
        assert stats["nan_count"] == int(np.isnan(ref).sum())
        assert stats["inf_count"] == int(np.isinf(ref).sum())
        assert stats["zero_count"] == int((finite == 0).sum())
        assert stats["min"] == finite.min() and stats["max"] == finite.max()
        assert stats["mean"] == pytest.approx(finite.mean(), rel=1e-9, abs=1e-12)
        assert stats["std"] == pytest.approx(finite.std(), rel=1e-9, abs=1e-12)


def test_tree_groups_by_object_graph(fixtures_dir):
    doc = run_cli("inspect", "--json", "--tree", fixtures_dir / "tf2_manager").json()
    paths = {v["name"]: v.get("object_path") for v in doc["variables"]}
    assert paths["model/dense1/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == "model/dense1/kernel"
    assert paths["model/we..ird.Sname/.ATTRIBUTES/VARIABLE_VALUE"] == "model/we.ird/name"
    human = run_cli("inspect", "--tree", fixtures_dir / "saver_run")
    assert human.exit_code == 0 and "kernel" in human.stdout and "dense/" in human.stdout


def test_meta_summary(fixtures_dir, tf):
    doc = run_cli("inspect", "--json", "--meta", fixtures_dir / "tf1_saved_model" / "model").json()
    (graph,) = doc["meta"]["meta_graphs"]
    assert graph["tags"] == ["custom_tag"]
    (sig,) = graph["signatures"]
    assert sig["name"] == "predict" and sig["inputs"][0]["name"] == "x:0"
    meta = run_cli("inspect", "--json", "--meta", fixtures_dir / "saver_run").json()["meta"]
    (graph,) = meta["meta_graphs"]
    from tensorflow.core.protobuf import meta_graph_pb2

    tf_meta = meta_graph_pb2.MetaGraphDef.FromString(
        (fixtures_dir / "saver_run" / "model.ckpt-50.meta").read_bytes())
    assert graph["num_nodes"] == len(tf_meta.graph_def.node)
    assert graph["saver_def"]["restore_op_name"] == tf_meta.saver_def.restore_op_name
    assert set(graph["collections"]) == set(tf_meta.collection_def)
    human = run_cli("inspect", "--meta", fixtures_dir / "tf2_saved_model" / "model")
    assert human.exit_code == 0 and "serving_default" in human.stdout
