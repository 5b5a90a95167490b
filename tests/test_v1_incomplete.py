"""V1 checkpoints as people have them and incomplete V2 checkpoints (issue 9): bare
files no .meta or state entry names, sharded V1 saves named by TensorFlow's
pattern `P-?????-of-N`, session-bundle `export.meta`, state files written
relative to another working directory, and checkpoints whose data shards are
gone. TensorFlow is the oracle throughout."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.oracle import assert_inspect_matches_tf

LAYOUTS = {  # directory -> the name TensorFlow reads it by
    "bare": "model.ckpt",
    "sharded": "model.ckpt-2-?????-of-00003",
    "export": "export-?????-of-00002",
    "tf07": "model.ckpt",
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_v1_layouts_are_found_listed_and_read_like_tensorflow(fixtures_dir, tf, layout):
    directory = fixtures_dir / "v1_layouts" / layout
    tf_name = str(directory / LAYOUTS[layout])
    listing = run_cli("ls", "--json", directory).json()
    latest = next(c for c in listing["checkpoints"] if c["is_latest"])
    assert latest["name"] == LAYOUTS[layout] and latest["format"] == "v1" and latest["complete"]
    answer = run_cli("latest", directory)
    assert answer.exit_code == 0 and answer.stdout.strip() == tf_name
    if layout == "sharded":  # TensorFlow answers only where its state file leads it
        assert tf.train.latest_checkpoint(str(directory)) == tf_name
    reader = tf.train.load_checkpoint(tf_name)
    for target in (directory, tf_name):
        doc = run_cli("inspect", "--json", "--all", "--values", target).json()
        assert doc["format"] == "v1"
        assert_inspect_matches_tf(doc, reader)
    assert run_cli("verify", directory).exit_code == 0


def test_one_shard_file_stands_for_the_whole_sharded_save(fixtures_dir, tf):
    directory = fixtures_dir / "v1_layouts" / "export"
    doc = run_cli("inspect", "--json", "--all", "--values", directory / "export-00001-of-00002").json()
    assert doc["checkpoint"].endswith("export-?????-of-00002")
    assert_inspect_matches_tf(doc, tf.train.load_checkpoint(str(directory / "export-?????-of-00002")))


def test_session_bundle_meta_graph(fixtures_dir, tf):
    from tensorflow.core.protobuf import meta_graph_pb2

    directory = fixtures_dir / "v1_layouts" / "export"
    doc = run_cli("inspect", "--json", "--meta", directory).json()
    meta = meta_graph_pb2.MetaGraphDef.FromString((directory / "export.meta").read_bytes())
    assert doc["meta"]["path"].endswith("export.meta")
    assert doc["meta"]["meta_graphs"][0]["num_nodes"] == len(meta.graph_def.node)


def test_state_file_relative_to_another_directory(fixtures_dir):
    directory = fixtures_dir / "v1_layouts" / "tf07"
    listing = run_cli("ls", "--json", directory).json()
    assert [p["kind"] for p in listing["problems"]] == ["stale_path"]
    assert listing["checkpoints"][0]["in_state"] is True


def test_prune_of_sharded_v1_saves_deletes_every_shard_and_the_meta(fixtures_dir, tmp_path, tf):
    run = tmp_path / "sharded"
    shutil.copytree(fixtures_dir / "v1_layouts" / "sharded", run)
    result = run_cli("prune", "--yes", "--json", "--keep-last", "1", run)
    assert result.exit_code == 0, result.stderr
    assert [d["name"] for d in result.json()["deleted"]] == ["model.ckpt-1-?????-of-00003"]
    assert {n for n in os.listdir(run) if not n.startswith(".ckpttool")} == {
        "checkpoint", "model.ckpt-2-00000-of-00003", "model.ckpt-2-00001-of-00003", "model.ckpt-2-00002-of-00003",
        "model.ckpt-2.meta"}
    latest = tf.train.latest_checkpoint(str(run))
    assert latest == str(run / "model.ckpt-2-?????-of-00003")
    with tf.Graph().as_default():
        tf.compat.v1.train.import_meta_graph(str(run / "model.ckpt-2.meta"), clear_devices=True).restore(
            tf.compat.v1.Session(), latest)


def test_incomplete_checkpoint_lists_from_the_index_alone(fixtures_dir, tmp_path, tf):
    run = tmp_path / "sharded"
    shutil.copytree(fixtures_dir / "sharded", run)
    os.unlink(run / "model.ckpt-1.data-00001-of-00002")
    prefix = run / "model.ckpt-1"
    result = run_cli("inspect", "--json", prefix)
    assert result.exit_code == 0
    assert "incomplete" in result.stderr and "model.ckpt-1.data-00001-of-00002" in result.stderr
    listed = {v["name"]: (v["dtype"], v["shape"]) for v in result.json()["variables"]}
    assert listed == {name: (tf.train.load_checkpoint(str(prefix)).get_variable_to_dtype_map()[name].name, shape)
                      for name, shape in tf.train.list_variables(str(prefix))}
    assert_one_line_error(run_cli("inspect", "--values", prefix), 3)
    assert_one_line_error(run_cli("inspect", "--stats", prefix), 3)
    assert run_cli("verify", prefix).exit_code == 1
