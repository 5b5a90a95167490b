"""SavedModels as people have them (issue 9): graph-only models, a folder that
lost its saved_model.pb, GPU placements, Keras SavedModels of TF 2.0-2.4,
custom ops, session-bundle Anys; and freeze/export-json destinations and
reports (issue 10). TensorFlow is the oracle: frozen graphs, run in a fresh
tf.Graph, compute what TensorFlow's own loaders compute."""
from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.graph_helpers import load_graph_def, run_frozen

X3 = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.5]], np.float32)


def _tf1_loader_run(tf, model_dir, tensor, feeds, tags=("serve",), **load_kwargs):
    """What TensorFlow's TF1 loader computes for `tensor` of the SavedModel."""
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as sess:
        v1.saved_model.loader.load(sess, list(tags), str(model_dir), **load_kwargs)
        return sess.run(tensor, feeds)


def _copy_model(fixtures_dir, tmp_path, name):
    dest = tmp_path / name
    shutil.copytree(fixtures_dir / name / "model", dest)
    return dest


def _edit_proto(path, message_type, edit):
    message = message_type.FromString(path.read_bytes())
    edit(message)
    path.write_bytes(message.SerializeToString())
    return message


# Graph-only SavedModels -----------------------------------------------------------------------------------

def test_graph_only_saved_model_inspects_as_empty(fixtures_dir, tf):
    model = fixtures_dir / "graph_only_saved_model" / "model"
    assert not (model / "variables").exists()
    # TensorFlow loads it as it is.
    np.testing.assert_allclose(_tf1_loader_run(tf, model, "y:0", {"x:0": X3}), X3 * 2 + [1.0, -2.0, 0.5])
    text = run_cli("inspect", model)
    assert text.exit_code == 0, text.stderr
    assert "no variables" in text.stderr and "0 variables" in text.stdout and "error" not in text.stderr
    doc = run_cli("inspect", "--json", "--meta", model).json()
    assert doc["variables"] == [] and doc["num_variables"] == 0 and doc["format"] == "none"
    (graph,) = doc["meta"]["meta_graphs"]
    assert graph["tags"] == ["serve"] and [s["name"] for s in graph["signatures"]] == ["serving_default"]
    for target in (model, model / "saved_model.pb"):
        assert run_cli("inspect", "--meta", target).exit_code == 0


def test_graph_only_saved_model_freezes_and_exports(fixtures_dir, tmp_path, tf):
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    model = fixtures_dir / "graph_only_saved_model" / "model"
    out = tmp_path / "graph_only.pb"
    result = run_cli("freeze", model, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["variables_frozen"] == 0 and doc["signature_outputs"] == {"y": "y:0"}
    expected = _tf1_loader_run(tf, model, "y:0", {"x:0": X3})
    np.testing.assert_allclose(run_frozen(tf, out, "y:0", {"x:0": X3}), expected)
    exported = run_cli("export-json", model)
    assert exported.exit_code == 0, exported.stderr
    original = saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes())
    assert json_format.Parse(exported.stdout, saved_model_pb2.SavedModel()) == original


# A SavedModel folder without saved_model.pb --------------------------------------------------------------

def test_saved_model_without_graph_resolves_to_its_variables(fixtures_dir, tmp_path, tf):
    model = _copy_model(fixtures_dir, tmp_path, "tf2_saved_model")
    (model / "saved_model.pb").unlink()
    expected = dict(tf.train.list_variables(str(model / "variables" / "variables")))
    result = run_cli("inspect", "--json", "--all", model)
    assert result.exit_code == 0, result.stderr
    header, warning = result.stderr.splitlines()  # which checkpoint the directory stood for, and why
    assert header == f"{model} -> {model / 'variables' / 'variables'}"
    assert "no saved_model.pb" in warning and warning.startswith("warning: ")
    doc = result.json()
    assert {v["name"]: v["shape"] for v in doc["variables"]} == expected
    verified = run_cli("verify", model)
    assert verified.exit_code == 0 and "no saved_model.pb" in verified.stderr
    same = run_cli("diff", model, fixtures_dir / "tf2_saved_model" / "model")
    assert same.exit_code == 0, same.stdout + same.stderr
    no_graph = run_cli("freeze", model, "-o", tmp_path / "f.pb")
    assert_one_line_error(no_graph, 3)
    assert "no saved_model.pb" in no_graph.stderr and not (tmp_path / "f.pb").exists()
    assert_one_line_error(run_cli("export-json", model), 3)


# GPU placements on a CPU-only machine ---------------------------------------------------------------------

def test_gpu_placed_saved_model_freezes_on_a_cpu(fixtures_dir, tmp_path, tf):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("needs a machine without a GPU")
    model = fixtures_dir / "gpu_saved_model" / "model"
    with pytest.raises(tf.errors.InvalidArgumentError):  # TensorFlow's default load fails here
        _tf1_loader_run(tf, model, "y:0", {"x:0": X3})
    expected = _tf1_loader_run(tf, model, "y:0", {"x:0": X3}, clear_devices=True)
    out = tmp_path / "gpu.pb"
    result = run_cli("freeze", model, "-o", out, "--check", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["check"]["ok"] is True
    assert {node.device for node in load_graph_def(tf, out).node} == {""}
    np.testing.assert_allclose(run_frozen(tf, out, "y:0", {"x:0": X3}), expected, rtol=1e-6)
    kept = tmp_path / "kept.pb"
    assert run_cli("freeze", model, "-o", kept, "--keep-devices", "--check").exit_code == 0
    assert "/device:GPU:0" in {node.device for node in load_graph_def(tf, kept).node}


# Keras SavedModels of TF 2.0-2.4 with optimizer slots ---------------------------------------------------

def test_keras_saved_model_with_optimizer_slots_falls_back_to_the_tf1_loader(fixtures_dir, tmp_path, tf):
    model = fixtures_dir / "keras_legacy_saved_model" / "model"
    with pytest.raises(AttributeError, match="add_slot"):  # what TensorFlow 2.21 does with such files
        tf.saved_model.load(str(model))
    out = tmp_path / "keras.pb"
    result = run_cli("freeze", model, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert "TF1 loader" in result.stderr and "add_slot" in result.stderr
    doc = result.json()
    assert doc["kind"] == "saved_model_v1" and doc["signature"] == "serving_default"
    (output_tensor,) = doc["signature_outputs"].values()
    assert list(doc["signature_outputs"]) == ["out"]
    reader = tf.train.load_checkpoint(str(model / "variables" / "variables"))
    kernel = reader.get_tensor("dense/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    bias = reader.get_tensor("dense/bias/.ATTRIBUTES/VARIABLE_VALUE")
    expected = 1 / (1 + np.exp(-(X3 @ kernel + bias)))
    loader_result = _tf1_loader_run(tf, model, output_tensor, {"serving_default_x:0": X3})
    np.testing.assert_allclose(loader_result, expected, rtol=1e-5)
    got = run_frozen(tf, out, output_tensor, {"serving_default_x:0": X3})
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert not {n.op for n in load_graph_def(tf, out).node} & {"VarHandleOp", "VariableV2", "RestoreV2"}


# Ops TensorFlow has not registered -------------------------------------------------------------------------

def _add_node(graph_def, op, name="custom"):
    node = graph_def.node.add()
    node.name, node.op = name, op
    return node


@pytest.mark.parametrize("op,package", [("SentencepieceOp", "tensorflow-text"), ("CaseFoldUTF8", "tensorflow-text"),
                                        ("SimpleMLInferenceOpWithHandle", "tensorflow-decision-forests"),
                                        ("MyLabsSecretOp", None)])
def test_unregistered_op_in_a_meta_graph(fixtures_dir, tmp_path, tf, op, package):
    from google.protobuf import json_format
    from tensorflow.core.protobuf import meta_graph_pb2

    for path in (fixtures_dir / "classic").glob("model.ckpt-1.*"):
        shutil.copy(path, tmp_path)
    meta = _edit_proto(tmp_path / "model.ckpt-1.meta", meta_graph_pb2.MetaGraphDef,
                       lambda m: _add_node(m.graph_def, op).input.append("x"))
    result = run_cli("freeze", tmp_path / "model.ckpt-1", "-o", tmp_path / "f.pb", "--output-nodes", "op")
    assert_one_line_error(result, 3)
    assert f"'{op}'" in result.stderr and "not registered" in result.stderr
    if package:
        assert f"{package} package" in result.stderr and f"pip install {package}" in result.stderr
    assert not (tmp_path / "f.pb").exists()
    exported = run_cli("export-json", tmp_path / "model.ckpt-1")  # needs no op registered
    assert exported.exit_code == 0, exported.stderr
    assert json_format.Parse(exported.stdout, meta_graph_pb2.MetaGraphDef()) == meta


def test_unregistered_ops_in_saved_model_functions(fixtures_dir, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    model = _copy_model(fixtures_dir, tmp_path, "tf2_saved_model")

    def edit(saved):
        graph_def = saved.meta_graphs[0].graph_def
        _add_node(graph_def, "SentencepieceTokenizeOp", "tokenize")
        function = graph_def.library.function[0]
        function.node_def.add(name="fold", op="CaseFoldUTF8")
        function.node_def.add(name="forest", op="SimpleMLInferenceOpWithHandle")
    _edit_proto(model / "saved_model.pb", saved_model_pb2.SavedModel, edit)
    result = run_cli("freeze", model, "-o", tmp_path / "f.pb")
    assert_one_line_error(result, 3)
    for op in ("CaseFoldUTF8", "SentencepieceTokenizeOp", "SimpleMLInferenceOpWithHandle"):
        assert op in result.stderr
    assert "pip install tensorflow-decision-forests tensorflow-text" in result.stderr
    assert run_cli("export-json", model).exit_code == 0


def test_installed_op_package_is_imported_to_register_its_ops(fixtures_dir, tmp_path, monkeypatch):
    """With the package installed, ckpttool imports it (which registers its ops) before giving up."""
    import sys

    from tensorflow.core.protobuf import saved_model_pb2

    fake = tmp_path / "site" / "tensorflow_text"
    fake.mkdir(parents=True)
    marker = tmp_path / "imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "tensorflow_text", raising=False)
    model = _copy_model(fixtures_dir, tmp_path, "tf1_saved_model")
    _edit_proto(model / "saved_model.pb", saved_model_pb2.SavedModel,
                lambda s: _add_node(s.meta_graphs[0].graph_def, "SentencepieceOp"))
    result = run_cli("freeze", model, "-o", tmp_path / "f.pb")
    monkeypatch.delitem(sys.modules, "tensorflow_text", raising=False)
    assert_one_line_error(result, 3)
    assert marker.exists() and "tensorflow-text is installed but did not register it" in result.stderr


# Anys of types TensorFlow does not know (TF1 session bundles) ---------------------------------------------

SIGNATURES_URL = "type.googleapis.com/tensorflow.serving.Signatures"
SIGNATURES_BYTES = b"\n\x0b\n\x05x:0\x12\x02op\x12\x00"


def _session_bundle_meta(fixtures_dir, tmp_path):
    """classic's .meta with the serving_signatures collection a TF1 session bundle's export.meta carries."""
    from tensorflow.core.protobuf import meta_graph_pb2

    for path in (fixtures_dir / "classic").glob("model.ckpt-1.*"):
        shutil.copy(path, tmp_path)

    def edit(meta):
        value = meta.collection_def["serving_signatures"].any_list.value.add()
        value.type_url, value.value = SIGNATURES_URL, SIGNATURES_BYTES
    return _edit_proto(tmp_path / "model.ckpt-1.meta", meta_graph_pb2.MetaGraphDef, edit)


def test_export_json_keeps_anys_of_unknown_types(fixtures_dir, tmp_path, tf):
    from google.protobuf import json_format, text_format
    from tensorflow.core.protobuf import meta_graph_pb2

    meta = _session_bundle_meta(fixtures_dir, tmp_path)
    result = run_cli("export-json", tmp_path / "model.ckpt-1.meta")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    (packed,) = doc["collection_def"]["serving_signatures"]["any_list"]["value"]
    assert packed == {"@type": SIGNATURES_URL, "value": {"base64": base64.b64encode(SIGNATURES_BYTES).decode()}}
    # Everything else is TensorFlow's JSON of the message, unchanged.
    del doc["collection_def"]["serving_signatures"]
    rest = meta_graph_pb2.MetaGraphDef()
    rest.CopyFrom(meta)
    del rest.collection_def["serving_signatures"]
    assert json_format.ParseDict(doc, meta_graph_pb2.MetaGraphDef()) == rest
    part = run_cli("export-json", "--part", "collections", "--json", tmp_path / "model.ckpt-1")
    assert part.json()["message"]["serving_signatures"]["any_list"]["value"] == [packed]
    pbtxt = run_cli("export-json", "--format", "pbtxt", tmp_path / "model.ckpt-1.meta")
    assert pbtxt.exit_code == 0 and text_format.Parse(pbtxt.stdout, meta_graph_pb2.MetaGraphDef()) == meta
    frozen = run_cli("freeze", tmp_path / "model.ckpt-1", "-o", tmp_path / "f.pb", "--output-nodes", "op")
    assert frozen.exit_code == 0, frozen.stderr


# Destinations (issue 10 item 8) ---------------------------------------------------------------------------

def test_outputs_create_missing_parent_directories(fixtures_dir, tmp_path, tf):
    frozen = tmp_path / "new" / "deeper" / "frozen.pb"
    result = run_cli("freeze", fixtures_dir / "classic", "-o", frozen, "--output-nodes", "op")
    assert result.exit_code == 0, result.stderr
    assert {n.name for n in load_graph_def(tf, frozen).node} >= {"op", "x", "v1", "v2"}
    exported = tmp_path / "json" / "out" / "meta.json"
    assert run_cli("export-json", fixtures_dir / "classic", "-o", exported).exit_code == 0
    assert exported.read_text() == run_cli("export-json", fixtures_dir / "classic").stdout
    failed = run_cli("freeze", fixtures_dir / "classic", "-o", tmp_path / "never" / "f.pb", "--output-nodes", "nope")
    assert_one_line_error(failed, 3)
    assert not (tmp_path / "never").exists()  # nothing created when nothing is written
    (tmp_path / "a_file").write_text("x")
    blocked = run_cli("freeze", fixtures_dir / "classic", "-o", tmp_path / "a_file" / "f.pb", "--output-nodes", "op")
    assert_one_line_error(blocked, 3)
    assert "a_file is a file" in blocked.stderr


@pytest.mark.parametrize("command", ["freeze", "export-json"])
def test_overwrite_onto_a_directory_is_refused(fixtures_dir, tmp_path, command):
    directory = tmp_path / "existing"
    directory.mkdir()
    (directory / "keep.txt").write_text("keep")
    extra = ["--output-nodes", "op"] if command == "freeze" else []
    for flags in ([], ["--overwrite"]):
        result = run_cli(command, fixtures_dir / "classic", "-o", directory, *flags, *extra)
        assert_one_line_error(result, 4)
        assert f"{directory} is a directory" in result.stderr and ".tmp" not in result.stderr
    assert [p.name for p in directory.iterdir()] == ["keep.txt"]


# The signature's outputs in the frozen graph (issue 10, "a step further") ----------------------------------

def test_freeze_maps_signature_outputs_to_frozen_tensors(fixtures_dir, tmp_path, tf):
    model = fixtures_dir / "tf2_saved_model" / "model"
    out = tmp_path / "tf2.pb"
    result = run_cli("freeze", model, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    mapping = result.json()["signature_outputs"]
    signature = tf.saved_model.load(str(model)).signatures["serving_default"]
    assert set(mapping) == set(signature.structured_outputs)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    placeholder = next(n.name for n in load_graph_def(tf, out).node if n.op == "Placeholder")
    expected = signature(x=tf.constant(x))
    for key, tensor in mapping.items():
        got = run_frozen(tf, out, tensor, {f"{placeholder}:0": x})
        np.testing.assert_allclose(got, expected[key].numpy(), rtol=1e-6)
    text = run_cli("freeze", model, "-o", tmp_path / "again.pb")
    assert "signature serving_default:" in text.stdout
    assert all(f"{key} -> {tensor}" in text.stdout for key, tensor in mapping.items())
    tf1 = run_cli("freeze", fixtures_dir / "tf1_saved_model" / "model", "-o", tmp_path / "tf1.pb", "--json").json()
    assert tf1["signature"] == "predict" and tf1["signature_outputs"] == {"y": "y:0"}
    plain = run_cli("freeze", fixtures_dir / "classic", "-o", tmp_path / "c.pb", "--output-nodes", "op", "--json")
    assert plain.json()["signature_outputs"] is None


# No internal error on what TensorFlow refuses (issue 9) -----------------------------------------------------

def _drop_data(model):
    for path in (model / "variables").glob("variables.data-*"):
        path.unlink()


def _dangling_input(model):
    from tensorflow.core.protobuf import saved_model_pb2

    _edit_proto(model / "saved_model.pb", saved_model_pb2.SavedModel,
                lambda s: next(n for n in s.meta_graphs[0].graph_def.node if n.name == "y").input.append("nowhere"))


def _garbage_graph(model):
    (model / "saved_model.pb").write_bytes(b"\x0a\xff\xff\xff garbage")


def _signature_to_nowhere(model):
    from tensorflow.core.protobuf import saved_model_pb2

    _edit_proto(model / "saved_model.pb", saved_model_pb2.SavedModel,
                lambda s: setattr(s.meta_graphs[0].signature_def["predict"].outputs["y"], "name", "gone:0"))


@pytest.mark.parametrize("fixture,damage,args", [
    ("tf1_saved_model", _drop_data, []),
    ("tf2_saved_model", _drop_data, []),
    ("tf1_saved_model", _dangling_input, []),
    ("tf1_saved_model", _garbage_graph, []),
    ("tf1_saved_model", _signature_to_nowhere, []),
    ("tf1_saved_model", None, ["--tags", "serve"]),
    ("tf2_saved_model", None, ["--output-nodes", "StatefulPartitionedCall:7", "--check"]),
])
def test_tensorflow_failures_are_one_line_errors(fixtures_dir, tmp_path, fixture, damage, args):
    model = _copy_model(fixtures_dir, tmp_path, fixture)
    if damage:
        damage(model)
    result = run_cli("freeze", model, "-o", tmp_path / "f.pb", *args)
    assert_one_line_error(result, 3)
    assert "internal error" not in result.stderr and not (tmp_path / "f.pb").exists()
