"""--drop-optimizer decides what optimizer state is from the TF2 object graph (slot variables and
what only the optimizer reaches), never from key names alone: Keras 3 checkpoints store the model's
variables under optimizer/_trainable_variables/N. A rule set that would drop every trained variable
is refused. Oracles: Keras (model.get_weights()), safetensors' loader, TensorFlow's restore."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_one_line_error, run_cli

CASES = ("with_optimizer", "model_only", "renamed")


@pytest.fixture(scope="session")
def keras_checkpoints(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keras_checkpoints")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "keras_checkpoints.py"), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


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
