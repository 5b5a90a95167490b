"""--drop-optimizer decides what optimizer state is from the TF2 object graph (slot variables and
what only the optimizer reaches), never from key names alone: Keras 3 checkpoints store the model's
variables under optimizer/_trainable_variables/N. A rule set that would drop every trained variable
is refused. Oracles: Keras (model.get_weights()), safetensors' loader, TensorFlow's restore."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_one_line_error, run_cli

CASES = ("with_optimizer", "model_only", "renamed")


def _weights(root: Path) -> list[np.ndarray]:
    with np.load(root / "weights.npz") as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _as_multiset(arrays) -> list[tuple]:
    return sorted((a.dtype.name, a.shape, a.tobytes()) for a in arrays)


@pytest.mark.parametrize("case", CASES)
def test_convert_keeps_exactly_the_model_weights(keras_checkpoints, tmp_path, tf, case):
    from safetensors.numpy import load_file

    src = keras_checkpoints / case
    manifest = json.loads((keras_checkpoints / "manifest.json").read_text())
    stored = dict(tf.train.list_variables(str(src)))
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", "--json", "--drop-optimizer", src, out)
    assert result.exit_code == 0, result.stderr
    loaded = load_file(out)
    counters = [n for n in loaded if n.startswith("save_counter/")]  # tf.train.Checkpoint's own counter
    assert len(counters) == 1 and int(loaded[counters[0]]) == 1
    weights = [v for n, v in loaded.items() if n not in counters]
    assert len(weights) == len(manifest["weights"])
    assert _as_multiset(weights) == _as_multiset(_weights(keras_checkpoints))
    # What was left out is the optimizer's state: every other stored tensor, the step among them.
    dropped = set(result.json()["dropped"])
    assert dropped == set(stored) - set(loaded) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    reader = tf.train.load_checkpoint(str(src))
    assert manifest["iterations"] in [int(reader.get_tensor(n)) for n in dropped if reader.get_tensor(n).ndim == 0]


@pytest.mark.parametrize("case", CASES)
def test_rename_vars_output_restores_into_the_model(keras_checkpoints, tmp_path, tf, case):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from keras_checkpoints import build_model
    finally:
        sys.path.remove(str(ROOT / "tests"))
    src = keras_checkpoints / case
    dst = tmp_path / "slim" / "ckpt-1"
    result = run_cli("rename-vars", "--drop-optimizer", src, dst)
    assert result.exit_code == 0, result.stderr
    kept = [n for n, _ in tf.train.list_variables(str(dst)) if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(kept) == len(json.loads((keras_checkpoints / "manifest.json").read_text())["weights"]) + 1
    model = build_model()
    root = "net" if case == "renamed" else "model"
    tf.train.Checkpoint(**{root: model}).restore(str(dst)).assert_existing_objects_matched()
    for got, want in zip(model.get_weights(), _weights(keras_checkpoints)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rule", [["--keep", "save_counter|_iterations"], ["--drop", "_trainable_variables"],
                                  ["--drop-optimizer", "--keep", "save_counter"]])
def test_dropping_every_trained_variable_is_refused(keras_checkpoints, tmp_path, case, rule):
    src = keras_checkpoints / case
    for command, dst in (("convert", tmp_path / "out.safetensors"), ("rename-vars", tmp_path / "out" / "ckpt-1")):
        result = run_cli(command, *rule, src, dst)
        assert_one_line_error(result, 3)
        assert "trained" in result.stderr
        assert not dst.parent.exists() or not any(dst.parent.iterdir())


def test_dropping_every_trained_variable_of_a_module_is_refused(fixtures_dir, tmp_path):
    src = fixtures_dir / "tf2_manager" / "ckpt-3"  # tf.Module model, Keras 3 Adam
    result = run_cli("convert", "--drop", ".*kernel.*|.*bias.*|.*ird.*", src, tmp_path / "out.safetensors")
    assert_one_line_error(result, 3)
    assert not (tmp_path / "out.safetensors").exists()
    assert run_cli("convert", "--drop", ".*kernel.*|.*bias.*", src, tmp_path / "out.safetensors").exit_code == 0


def test_tf1_dropping_every_trained_variable_is_refused(tmp_path, tf):
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        w = v1.get_variable("w", initializer=np.ones((2, 2), np.float32))
        v1.get_variable("frozen", initializer=np.ones(2, np.float32), trainable=False)
        train = v1.train.AdamOptimizer(0.1).minimize(tf.reduce_sum(w * w),
                                                     global_step=v1.train.get_or_create_global_step())
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train)
            v1.train.Saver().save(sess, str(tmp_path / "model.ckpt"))
    result = run_cli("rename-vars", "--drop-optimizer", "--drop", "^w$", tmp_path / "model.ckpt", tmp_path / "slim")
    assert_one_line_error(result, 3)
    doc = run_cli("convert", "--json", "--drop-optimizer", tmp_path / "model.ckpt", tmp_path / "w.npz").json()
    with np.load(tmp_path / "w.npz") as out:
        assert sorted(out.files) == ["frozen", "global_step", "w"]
    assert "w/Adam" in doc["dropped"]


def test_weights_reached_only_through_the_optimizer_are_not_silently_dropped(keras_checkpoints, tmp_path):
    """Checkpoint(optimizer=opt) alone: the weights are the optimizer's (it alone reaches them), and
    --drop-optimizer would leave only counters: refused rather than writing a weightless file."""
    src = keras_checkpoints / "optimizer_only"
    result = run_cli("convert", "--drop-optimizer", src, tmp_path / "out.safetensors")
    assert_one_line_error(result, 3)
    assert not (tmp_path / "out.safetensors").exists()
    assert run_cli("convert", src, tmp_path / "all.safetensors").exit_code == 0


@pytest.mark.parametrize("names", [("model", "optimizer"), ("net", "trainer")])
def test_object_based_slot_variables_and_accumulators_are_dropped(tmp_path, tf, names):
    """tf.compat.v1 optimizers in a TF2 checkpoint: slot variables (slot_variables of the optimizer's
    node) and the optimizer's own beta1_power/beta2_power, whatever the optimizer is called."""
    module = tf.Module()
    module.kernel = tf.Variable(np.arange(1, 7, dtype=np.float32).reshape(2, 3))
    optimizer = tf.compat.v1.train.AdamOptimizer(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(module.kernel ** 2)
    optimizer.apply_gradients([(tape.gradient(loss, module.kernel), module.kernel)])
    src = tf.train.Checkpoint(**dict(zip(names, (module, optimizer)))).save(str(tmp_path / "src" / "ckpt"))
    stored = {n for n, _ in tf.train.list_variables(src)} - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert any(f"{names[1]}/beta1_power" in n for n in stored) and any(".OPTIMIZER_SLOT" in n for n in stored)
    doc = run_cli("convert", "--json", "--drop-optimizer", src, tmp_path / "w.npz").json()
    kernel = f"{names[0]}/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    with np.load(tmp_path / "w.npz") as out:
        assert sorted(out.files) == sorted([kernel, "save_counter/.ATTRIBUTES/VARIABLE_VALUE"])
        np.testing.assert_array_equal(out[kernel], module.kernel.numpy())
    assert set(doc["dropped"]) == stored - set(out.files)
    refused = run_cli("convert", "--drop-optimizer", "--drop", "kernel/.ATTRIBUTES", src, tmp_path / "x.npz")
    assert_one_line_error(refused, 3)


def test_optimizer_keys_survive_hostile_graphs():
    """Cycles, self-references and node ids out of range: an answer, no exception."""
    from ckpttool.formats.tf.object_graph import optimizer_keys
    from ckpttool.formats.tf.protos import checkpoint_pb2 as pb

    graph = pb.TrackableObjectGraph()
    root, model, opt, var = (graph.nodes.add() for _ in range(4))
    root.children.add(node_id=1, local_name="model")
    root.children.add(node_id=2, local_name="trainer")
    root.children.add(node_id=99, local_name="optimizer")
    model.children.add(node_id=0, local_name="up")  # a cycle back to the root
    model.children.add(node_id=3, local_name="w")
    model.children.add(node_id=-5, local_name="bad")
    opt.children.add(node_id=2, local_name="self")
    opt.slot_variables.add(original_variable_node_id=3, slot_name="m", slot_variable_node_id=1234)
    opt.slot_variables.add(original_variable_node_id=-1, slot_name="v", slot_variable_node_id=3)
    var.attributes.add(name="VARIABLE_VALUE", checkpoint_key="model/w/.ATTRIBUTES/VARIABLE_VALUE")
    found = optimizer_keys(graph)
    assert found.state == frozenset()  # w is the model's, even as a slot
    assert found.trained == {"model/w/.ATTRIBUTES/VARIABLE_VALUE"}
    assert optimizer_keys(pb.TrackableObjectGraph()).state == frozenset()
