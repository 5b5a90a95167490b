"""freeze and export-json, checked by TensorFlow: frozen graphs compute what
the restored session computes, exports parse back into equal messages."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.graph_helpers import load_graph_def, run_frozen_in_fresh_process

VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp", "ReadVariableOp", "Assign", "AssignVariableOp"}


def test_classic_example(fixtures_dir, tmp_path, tf):
    prefix = fixtures_dir / "classic" / "model.ckpt-1"
    out = tmp_path / "frozen.pb"
    result = run_cli("freeze", prefix, "-o", out, "--output-nodes", "op", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["output_nodes"] == ["op"] and doc["variables_frozen"] == 2 and doc["nodes_after"] < doc["nodes_before"]
    graph_def = load_graph_def(tf, out)
    assert not {n.op for n in graph_def.node} & VARIABLE_OPS
    feeds = {"x:0": np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], np.float32)}
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as sess:
        v1.train.import_meta_graph(f"{prefix}.meta").restore(sess, str(prefix))
        expected = sess.run("op:0", feeds)
    np.testing.assert_array_equal(run_frozen_in_fresh_process(out, "op:0", feeds), expected)
    np.testing.assert_array_equal(expected, (feeds["x:0"] + [1.0, 2.0, 3.0]) * [0.5, -1.0, 2.0])


def test_check_fills_an_unknown_batch_dimension_and_needs_other_shapes(fixtures_dir, tmp_path, tf):
    prefix = fixtures_dir / "classic" / "model.ckpt-1"  # x is float32 [?, 3]
    batch_only = run_cli("freeze", prefix, "-o", tmp_path / "a.pb", "--output-nodes", "op:0", "--check", "--json")
    assert batch_only.exit_code == 0, batch_only.stderr
    assert batch_only.json()["check"]["ok"] is True and batch_only.json()["check"]["inputs"] == {"x": [1, 3]}
    assert "batch" in run_cli("freeze", "--help").stdout
    given = run_cli("freeze", prefix, "-o", tmp_path / "b.pb", "--output-nodes", "op:0", "--check",
                    "--input-shape", "x=4,3", "--json")
    assert given.exit_code == 0 and given.json()["check"]["inputs"] == {"x": [4, 3]}
    # A placeholder of unknown rank: nothing to guess from, so --input-shape is needed.
    from tensorflow.core.protobuf import meta_graph_pb2

    copy = tmp_path / "copy"
    copy.mkdir()
    for path in prefix.parent.glob("model.ckpt-1.*"):
        (copy / path.name).write_bytes(path.read_bytes())
    meta = meta_graph_pb2.MetaGraphDef.FromString((copy / "model.ckpt-1.meta").read_bytes())
    x = next(node for node in meta.graph_def.node if node.name == "x")
    x.attr["shape"].shape.Clear()
    x.attr["shape"].shape.unknown_rank = True
    (copy / "model.ckpt-1.meta").write_bytes(meta.SerializeToString())
    no_shape = run_cli("freeze", copy / "model.ckpt-1", "-o", tmp_path / "c.pb", "--output-nodes", "op", "--check")
    assert_one_line_error(no_shape, 2)
    assert "--input-shape x=" in no_shape.stderr and not (tmp_path / "c.pb").exists()


def test_check_exits_1_when_results_differ(fixtures_dir, tmp_path, tf, monkeypatch):
    original = tf.compat.v1.graph_util.convert_variables_to_constants

    def tampered(*args, **kwargs):
        frozen = original(*args, **kwargs)
        for node in frozen.node:
            if node.name == "v1":  # the frozen value of v1, now a Const
                values = tf.make_ndarray(node.attr["value"].tensor) + 1
                node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(values))
        return frozen

    monkeypatch.setattr(tf.compat.v1.graph_util, "convert_variables_to_constants", tampered)
    result = run_cli("freeze", fixtures_dir / "classic", "-o", tmp_path / "c.pb", "--output-nodes", "op",
                     "--check", "--input-shape", "x=2,3")
    assert result.exit_code == 1 and "DIFFER" in result.stdout


def test_tf1_saved_model_freezes_from_its_signature(fixtures_dir, tmp_path, tf):
    model = fixtures_dir / "tf1_saved_model" / "model"
    out = tmp_path / "sm1.pb"
    result = run_cli("freeze", model, "-o", out, "--json")  # custom tag and the only signature found alone
    assert result.exit_code == 0, result.stderr
    assert result.json()["output_nodes"] == ["y"]
    feeds = {"x:0": np.arange(6, dtype=np.float32).reshape(2, 3)}
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as sess:
        v1.saved_model.loader.load(sess, ["custom_tag"], str(model))
        expected = sess.run("y:0", feeds)
    np.testing.assert_allclose(run_frozen_in_fresh_process(out, "y:0", feeds), expected, rtol=1e-6)


def test_tf2_saved_model_freezes_from_its_signature(fixtures_dir, tmp_path, tf):
    model = fixtures_dir / "tf2_saved_model" / "model"
    out = tmp_path / "sm2.pb"
    result = run_cli("freeze", model, "-o", out, "--json", "--check", "--input-shape", "x=3,4")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["kind"] == "saved_model_v2" and doc["check"]["ok"]
    graph_def = load_graph_def(tf, out)
    assert not {n.op for n in graph_def.node} & {"VarHandleOp", "ReadVariableOp"}
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    loaded = tf.saved_model.load(str(model))
    (expected,) = loaded.signatures["serving_default"](x=tf.constant(x)).values()
    placeholder = next(n.name for n in graph_def.node if n.op == "Placeholder")
    got = run_frozen_in_fresh_process(out, f"{doc['output_nodes'][0]}:0", {f"{placeholder}:0": x})
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)


def test_no_outputs_lists_ranked_candidates(fixtures_dir, tmp_path):
    result = run_cli("freeze", fixtures_dir / "ema_run", "-o", tmp_path / "x.pb")
    assert_one_line_error(result, 2)
    ranked = result.stderr.split("likely outputs: ")[1].splitlines()[0].split(", ")
    assert ranked[0] == "prediction"
    assert not any(n.startswith(("save", "gradients", "GradientDescent", "init", "loss")) for n in ranked)
    assert not (tmp_path / "x.pb").exists()


def test_bad_inputs(fixtures_dir, tmp_path):
    classic = fixtures_dir / "classic"
    unknown = run_cli("freeze", classic, "-o", tmp_path / "u.pb", "--output-nodes", "opp")
    assert_one_line_error(unknown, 3)
    assert "closest: op" in unknown.stderr
    assert_one_line_error(run_cli("freeze", fixtures_dir / "every_dtype" / "dtypes", "-o", tmp_path / "m.pb"), 3)
    (tmp_path / "corrupt.pb").write_bytes(b"\xff\xff\xff garbage")
    assert_one_line_error(run_cli("freeze", tmp_path / "corrupt.pb", "-o", tmp_path / "c.pb"), 3)
    frozen = tmp_path / "frozen.pb"
    assert run_cli("freeze", classic, "-o", frozen, "--output-nodes", "op").exit_code == 0
    again = run_cli("freeze", frozen, "-o", tmp_path / "f2.pb")
    assert_one_line_error(again, 3)
    assert "already a frozen graph" in again.stderr
    exists = run_cli("freeze", classic, "-o", frozen, "--output-nodes", "op")
    assert_one_line_error(exists, 4)
    assert run_cli("freeze", classic, "-o", frozen, "--output-nodes", "op", "--overwrite", "--text").exit_code == 0
    assert frozen.read_text().startswith("node {")


def test_no_tensorflow_noise_reaches_the_terminal(fixtures_dir, tmp_path):
    for args in (["freeze", fixtures_dir / "classic", "-o", tmp_path / "q.pb", "--output-nodes", "op"],
                 ["export-json", "--part", "saver", fixtures_dir / "classic"]):
        proc = subprocess.run([sys.executable, "-m", "ckpttool", *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def _message_types(tf):
    from tensorflow.core.framework import graph_pb2
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    return graph_pb2.GraphDef, meta_graph_pb2.MetaGraphDef, saved_model_pb2.SavedModel


@pytest.mark.parametrize("source,kind", [
    ("classic/model.ckpt-1.meta", "meta"), ("classic/model.ckpt-1", "meta"), ("classic", "meta"),
    ("tf1_saved_model/model", "saved_model"), ("tf2_saved_model/model/saved_model.pb", "saved_model"),
])
def test_export_json_round_trips(fixtures_dir, tf, source, kind):
    from google.protobuf import json_format, text_format

    graph_type, meta_type, saved_model_type = _message_types(tf)
    path = fixtures_dir / source
    if kind == "meta":
        original = meta_type.FromString((fixtures_dir / "classic" / "model.ckpt-1.meta").read_bytes())
        message_type = meta_type
    else:
        model_dir = path if path.is_dir() else path.parent
        original = saved_model_type.FromString((model_dir / "saved_model.pb").read_bytes())
        message_type = saved_model_type
    result = run_cli("export-json", path)
    assert result.exit_code == 0, result.stderr
    assert json_format.Parse(result.stdout, message_type()) == original
    assert '"graph_def"' in result.stdout or '"meta_graphs"' in result.stdout  # proto field names
    pbtxt = run_cli("export-json", "--format", "pbtxt", path).stdout
    assert text_format.Parse(pbtxt, message_type()) == original


def test_export_json_of_frozen_graph_and_parts(fixtures_dir, tmp_path, tf):
    from google.protobuf import json_format

    graph_type, meta_type, _ = _message_types(tf)
    frozen = tmp_path / "frozen.pb"
    assert run_cli("freeze", fixtures_dir / "classic", "-o", frozen, "--output-nodes", "op").exit_code == 0
    assert json_format.Parse(run_cli("export-json", frozen).stdout, graph_type()) == graph_type.FromString(
        frozen.read_bytes())
    assert_one_line_error(run_cli("export-json", "--part", "saver", frozen), 2)
    meta = meta_type.FromString((fixtures_dir / "classic" / "model.ckpt-1.meta").read_bytes())
    from tensorflow.core.protobuf import saver_pb2

    parts = {"graph": (graph_type, meta.graph_def), "saver": (saver_pb2.SaverDef, meta.saver_def),
             "meta_info": (type(meta.meta_info_def), meta.meta_info_def)}
    for part, (message_type, expected) in parts.items():
        out = run_cli("export-json", "--part", part, fixtures_dir / "classic")
        assert json_format.Parse(out.stdout, message_type()) == expected, part
    collections = json.loads(run_cli("export-json", "--part", "collections", fixtures_dir / "classic").stdout)
    assert set(collections) == set(meta.collection_def)
    for key, value in collections.items():
        assert json_format.ParseDict(value, type(meta.collection_def[key])()) == meta.collection_def[key]
    signatures = json.loads(run_cli("export-json", "--part", "signatures",
                                    fixtures_dir / "tf1_saved_model" / "model").stdout)
    assert set(signatures) == {"predict"}


def test_export_json_output_file_and_report(fixtures_dir, tmp_path):
    out = tmp_path / "meta.json"
    result = run_cli("export-json", "--json", "-o", out, fixtures_dir / "classic")
    assert result.exit_code == 0
    doc = result.json()
    assert doc["command"] == "export-json" and doc["bytes"] == out.stat().st_size and doc["kind"] == "meta_graph"
    assert out.read_text() == run_cli("export-json", fixtures_dir / "classic").stdout
    assert_one_line_error(run_cli("export-json", "-o", out, fixtures_dir / "classic"), 4)
    wrapped = run_cli("export-json", "--json", "--part", "saver", fixtures_dir / "classic").json()
    assert wrapped["message"]["restore_op_name"] == "save/restore_all"
    assert_one_line_error(run_cli("export-json", tmp_path / "nothing"), 3)
