"""`convert SRC model.weights.h5 --like TEMPLATE` (and `.keras`): Keras 3 files that Keras loads.
Oracles: Keras' model.load_weights / keras.saving.load_model and TensorFlow's checkpoint reader,
run in a subprocess (tests/keras_like_fixtures.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import assert_one_line_error, build_fixtures, run_cli
from tests.test_keras_legacy import legacy_dir, oracle  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "tests" / "keras_like_fixtures.py")


@pytest.fixture(scope="session")
def like_dir(tmp_path_factory) -> Path:
    return build_fixtures(tmp_path_factory, "keras_like_fixtures.py", "keras_like", "make")


@pytest.fixture(scope="session")
def keras_loads(tmp_path_factory):
    """get_weights() of a fresh model after Keras loads a file: `keras_loads(kind, path, tmp_path)`.
    One Keras process answers every load of the session (keras_like_fixtures.py serve)."""
    log = tmp_path_factory.mktemp("keras_loader") / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, SCRIPT, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, text=True)

    def loads(kind: str, path: Path, tmp_path: Path) -> list[np.ndarray]:
        out = tmp_path / f"loaded-{path.name}.npz"
        proc.stdin.write(f"{kind}\t{path}\t{out}\n")
        proc.stdin.flush()
        answer = ""
        while not answer.startswith("@@"):  # anything else on stdout is Keras talking
            answer = proc.stdout.readline()
            assert answer, f"the Keras loader died: {log.read_text()[-3000:]}"
        assert answer.strip() == "@@ok", answer
        return _arrays(out)

    yield loads
    proc.stdin.close()
    proc.wait()


def _arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _assert_same(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def _convert(*args) -> dict:
    result = run_cli("convert", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return result.json()


def test_trained_weights_through_safetensors_and_back(like_dir, tmp_path, keras_loads):
    """A Keras 3 model trained a step, its weights to safetensors, then back through --like an
    untrained model of the same architecture: load_weights gives identical get_weights()."""
    trained = _arrays(like_dir / "trained.npz")
    template = keras_loads("bn", like_dir / "template.weights.h5", tmp_path)
    assert any(not np.array_equal(a, b) for a, b in zip(template, trained))  # the template's values differ
    _convert(like_dir / "trained.weights.h5", tmp_path / "w.safetensors")
    doc = _convert(tmp_path / "w.safetensors", tmp_path / "out.weights.h5", "--like", like_dir / "template.weights.h5")
    assert doc["format"] == "keras" and doc["unmatched"] == []
    assert {m["by"] for m in doc["matched"]} == {"name"}
    assert all(name.startswith("optimizer/") for name in doc["unused"])  # the template has no optimizer
    _assert_same(keras_loads("bn", tmp_path / "out.weights.h5", tmp_path), trained)


def test_keras_archive_keeps_the_templates_config(like_dir, tmp_path, keras_loads):
    trained = _arrays(like_dir / "trained.npz")
    _convert(like_dir / "trained.keras", tmp_path / "w.safetensors")
    _convert(tmp_path / "w.safetensors", tmp_path / "out.keras", "--like", like_dir / "template.keras")
    _assert_same(keras_loads("bn", tmp_path / "out.keras", tmp_path), trained)
    with zipfile.ZipFile(like_dir / "template.keras") as template, zipfile.ZipFile(tmp_path / "out.keras") as out:
        assert out.namelist() == template.namelist()
        for name in template.namelist():
            if name != "model.weights.h5":
                assert out.read(name) == template.read(name)


def test_tf1_checkpoint_into_a_keras_model(like_dir, tmp_path, keras_loads):
    """TF1 names (`dense/kernel`) match the template's layers by name, their weights by order and
    shape; the slots and global_step are left unused."""
    doc = _convert(like_dir / "tf1", tmp_path / "tf1.weights.h5", "--like", like_dir / "tf1_template.weights.h5")
    assert [(m["from"], m["to"], m["by"]) for m in doc["matched"]] == [
        ("dense/kernel", "layers/dense/vars/0", "order"), ("dense/bias", "layers/dense/vars/1", "order"),
        ("dense_1/kernel", "layers/dense_1/vars/0", "order"), ("dense_1/bias", "layers/dense_1/vars/1", "order")]
    assert "global_step" in doc["unused"]
    _assert_same(keras_loads("tf1", tmp_path / "tf1.weights.h5", tmp_path), _arrays(like_dir / "tf1.npz"))


def test_unmatched_template_weights_exit_3_unless_partial(like_dir, tmp_path, keras_loads):
    """The TF1 checkpoint fills two of the three layers of the BatchNormalization model."""
    out = tmp_path / "o.weights.h5"
    result = run_cli("convert", like_dir / "tf1", out, "--like", like_dir / "template.weights.h5")
    assert_one_line_error(result, 3)
    assert "layers/batch_normalization/vars/0" in result.stderr and not out.exists()
    assert sorted(os.listdir(tmp_path)) == []
    # dense_1 is (3, 2) in both; dense is (4, 3) in both: those match, batch_normalization keeps its values
    doc = _convert(like_dir / "tf1", out, "--like", like_dir / "template.weights.h5", "--partial")
    assert sorted(doc["unmatched"]) == [f"layers/batch_normalization/vars/{i}" for i in range(4)]
    loaded = keras_loads("bn", out, tmp_path)
    template = keras_loads("bn", like_dir / "template.weights.h5", tmp_path)
    tf1 = _arrays(like_dir / "tf1.npz")
    _assert_same(loaded[:2], tf1[:2])
    _assert_same(loaded[2:6], template[2:6])
    _assert_same(loaded[6:], tf1[2:])


def test_shapes_are_checked_before_anything_is_written(like_dir, tmp_path):
    source = tmp_path / "src.weights.h5"
    shutil.copyfile(like_dir / "template.weights.h5", source)
    with h5py.File(source, "r+") as handle:  # a source whose name matches but whose shape does not
        del handle["layers/dense/vars/0"]
        handle["layers/dense/vars/0"] = np.zeros((5, 3), np.float32)
    out = tmp_path / "o.weights.h5"
    result = run_cli("convert", source, out, "--like", like_dir / "template.weights.h5")
    assert_one_line_error(result, 3)
    assert "[5, 3]" in result.stderr and "[4, 3]" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["src.weights.h5"]


def test_destination_checks(like_dir, tmp_path):
    template = tmp_path / "t.weights.h5"
    shutil.copyfile(like_dir / "template.weights.h5", template)
    before = template.read_bytes()
    assert_one_line_error(run_cli("convert", like_dir / "trained.weights.h5", template, "--like", template,
                                  "--overwrite"), 4)  # never over the template
    assert template.read_bytes() == before
    out = tmp_path / "o.weights.h5"
    out.write_bytes(b"keep")
    assert_one_line_error(run_cli("convert", like_dir / "trained.weights.h5", out, "--like", template), 4)
    assert out.read_bytes() == b"keep"
    assert run_cli("convert", like_dir / "trained.weights.h5", out, "--like", template, "--overwrite").exit_code == 0
    assert sorted(os.listdir(tmp_path)) == ["o.weights.h5", "t.weights.h5"]  # no temp left
    for args in ([tmp_path / "x.weights.h5"], [tmp_path / "x.safetensors", "--like", template],
                 [tmp_path / "x.weights.h5", "--partial"]):
        assert_one_line_error(run_cli("convert", like_dir / "trained.weights.h5", *args), 2)


def test_plan_json_explains_the_match(like_dir, tmp_path):
    doc = _convert("--dry-run", like_dir / "tf1", tmp_path / "o.weights.h5", "--like",
                   like_dir / "tf1_template.weights.h5")
    assert doc["dry_run"] and not (tmp_path / "o.weights.h5").exists()
    assert doc["like"] == str(like_dir / "tf1_template.weights.h5")
    json.dumps(doc)


def test_template_changed_between_plan_and_write_exits_3(like_dir, tmp_path):
    from ckpttool.errors import CorruptCheckpoint
    from ckpttool.ops.tensors.convert import apply_convert, plan_convert

    template = tmp_path / "t.weights.h5"
    shutil.copyfile(like_dir / "template.weights.h5", template)
    out = tmp_path / "o.weights.h5"
    plan = plan_convert(str(like_dir / "trained.weights.h5"), str(out), like=str(template))
    with h5py.File(template, "r+") as handle:
        del handle["layers/dense/vars/0"]
        handle["layers/dense/vars/0"] = np.zeros((5, 3), np.float32)
    with pytest.raises(CorruptCheckpoint, match=r"\[5, 3\]"):
        apply_convert(plan)
    assert sorted(os.listdir(tmp_path)) == ["t.weights.h5"]


def test_keras2_file_into_a_keras3_model(like_dir, legacy_dir, oracle, tmp_path, keras_loads):
    """A file in Keras 2's layout and names (`dense_1/kernel:0`, counters from _1) into a Keras 3
    model of its architecture (`dense`, `dense_1`): load_weights gives what Keras' legacy loader
    gives from the Keras 2 file."""
    out = tmp_path / "k2.weights.h5"
    doc = _convert(legacy_dir / "keras2.h5", out, "--like", like_dir / "template.weights.h5")
    assert ("dense_2/kernel", "layers/dense_1/vars/0") in [(m["from"], m["to"]) for m in doc["matched"]]
    expected = [oracle[f"keras2/{i}"] for i in range(len([k for k in oracle if k.startswith("keras2/")]))]
    _assert_same(keras_loads("bn", out, tmp_path), expected)


def test_string_weights_are_refused_before_writing(like_dir, tmp_path):
    """A template weight holding strings (a vocabulary) and a source of strings by its name: refused,
    exit 3, nothing written (the byte writer has no place for them)."""
    template = tmp_path / "t.weights.h5"
    shutil.copyfile(like_dir / "template.weights.h5", template)
    with h5py.File(template, "r+") as handle:
        handle["layers/lookup/vars/0"] = np.array([b"a", b"bc"])  # fixed-width bytes: a string tensor
    source = tmp_path / "s.weights.h5"
    shutil.copyfile(template, source)
    out = tmp_path / "o.weights.h5"
    result = run_cli("convert", source, out, "--like", template)
    assert_one_line_error(result, 3)
    assert "strings" in result.stderr and not out.exists()


def test_pytorch_layout_back_into_a_keras_model(like_dir, tmp_path, keras_loads):
    """Weights in PyTorch's layout (`--layout torch`) go back into a Keras 3 file through --like with
    `--layout tf`: transposed back and matched by their new names and shapes; load_weights gives the
    trained model's get_weights()."""
    from safetensors.numpy import load_file

    trained = _arrays(like_dir / "trained.npz")
    _convert(like_dir / "trained.weights.h5", tmp_path / "pt.safetensors", "--layout", "torch")
    torch_shapes = sorted(v.shape for v in load_file(str(tmp_path / "pt.safetensors")).values())
    assert torch_shapes != sorted(a.shape for a in trained)  # some kernels really are transposed
    without = run_cli("convert", tmp_path / "pt.safetensors", tmp_path / "no.weights.h5", "--like",
                      like_dir / "template.weights.h5")
    assert without.exit_code == 3  # PyTorch's shapes fit no template weight as they are
    doc = _convert(tmp_path / "pt.safetensors", tmp_path / "out.weights.h5", "--like",
                   like_dir / "template.weights.h5", "--layout", "tf")
    assert doc["unmatched"] == []
    _assert_same(keras_loads("bn", tmp_path / "out.weights.h5", tmp_path), trained)


def _layer_names_for(names, layers: list[str], sep: str = "/") -> list[str]:
    """--regex options naming each layer scope of a TF2 checkpoint's model paths
    (`model._functional._operations.N`, in N order: the model's layers after its Input) as the
    template's Keras 3 layers: the object graph records no layer names. `sep`: the separator of the
    names the rules see (`/` after --layout tf)."""
    import re

    scopes = sorted({name.rsplit(".", 1)[0] for name in names}, key=lambda s: int(s.rsplit(".", 1)[1]))
    assert len(scopes) == len(layers), scopes
    options = []
    for scope, layer in zip(scopes, layers):
        options += ["--regex", f"^{re.escape(scope.replace('.', sep))}{re.escape(sep)}={layer}/"]
    return options


def test_tf2_checkpoint_through_pytorch_names_and_back(like_dir, tmp_path, keras_loads):
    """A TF2 checkpoint of Dense -> BatchNormalization -> Dense out with --names model --layout torch,
    and back with --like TEMPLATE --layout tf: BatchNormalization's weight and bias (told by their
    running_mean/running_var siblings) are gamma and beta again, so Keras' load_weights gives the
    trained model's weights, variable by variable (they were permuted: gamma <- beta <- moving_mean
    <- moving_variance <- gamma, exit 0)."""
    from safetensors.numpy import load_file

    _convert(like_dir / "tf2" / "ckpt", tmp_path / "pt.safetensors", "--names", "model", "--layout", "torch",
             "--drop-optimizer")
    names = list(load_file(str(tmp_path / "pt.safetensors")))
    assert any(n.endswith(".2.weight") for n in names) and any(n.endswith(".2.running_var") for n in names)
    rename = _layer_names_for(names, ["dense", "batch_normalization", "dense_1"])
    doc = _convert(tmp_path / "pt.safetensors", tmp_path / "out.weights.h5", "--like", like_dir / "template.weights.h5",
                   "--layout", "tf", *rename)
    assert doc["unmatched"] == [] and doc["unused"] == []
    got, expected = keras_loads("bn", tmp_path / "out.weights.h5", tmp_path), _arrays(like_dir / "trained.npz")
    labels = ["dense kernel", "dense bias", "gamma", "beta", "moving_mean", "moving_variance", "dense_1 kernel",
              "dense_1 bias"]
    assert len(got) == len(expected) == len(labels)
    for label, a, b in zip(labels, got, expected):
        np.testing.assert_array_equal(a, b, err_msg=label)


def test_weights_of_one_shape_are_never_filled_by_unknown_order(like_dir, tmp_path):
    """A layer whose same-shaped weights the source's names do not tell apart (PyTorch's weight,
    bias, running_mean, running_var kept as they are, all [3]) is refused (exit 3) listing the
    template's candidates and the source names, even with --partial: it was filled in the order the
    names happened to sort (exit 0, every BatchNormalization weight holding another's values)."""
    from safetensors.numpy import load_file

    _convert(like_dir / "tf2" / "ckpt", tmp_path / "pt.safetensors", "--names", "model", "--layout", "torch",
             "--drop-optimizer")
    names = list(load_file(str(tmp_path / "pt.safetensors")))
    rename = _layer_names_for(names, ["dense", "batch_normalization", "dense_1"], sep=".")
    result = run_cli("convert", tmp_path / "pt.safetensors", tmp_path / "out.weights.h5", "--like",
                     like_dir / "template.weights.h5", "--partial", *rename)
    assert_one_line_error(result, 3)
    for index in range(4):
        assert f"layers/batch_normalization/vars/{index}" in result.stderr
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert next(n for n in names if n.endswith(f".2.{name}")) in result.stderr
    assert not (tmp_path / "out.weights.h5").exists()


def test_tf2_checkpoint_straight_into_a_keras_file_with_names_model(like_dir, tmp_path, keras_loads):
    """A TF2 checkpoint written by tf.train.Checkpoint(model=model) into a Keras 3 file in one step:
    `--names model` names its variables by their path through the model before the template is
    matched (its keys run through the optimizer, `model/optimizer/_trainable_variables/N`, and
    matched nothing: exit 3 "match no source variable"); the position scopes
    (`model/_functional/_operations/N`) pair with the template's layers of their kind. Keras'
    load_weights gives the trained model's get_weights(), for .weights.h5 and .keras alike."""
    for name in ("out.weights.h5", "out.keras"):
        template = like_dir / ("template.weights.h5" if name.endswith(".h5") else "template.keras")
        doc = _convert(like_dir / "tf2" / "ckpt", tmp_path / name, "--names", "model", "--like", template)
        assert doc["unmatched"] == [] and len(doc["matched"]) == 8
        assert all(m["to"].startswith("layers/") for m in doc["matched"])
        _assert_same(keras_loads("bn", tmp_path / name, tmp_path), _arrays(like_dir / "trained.npz"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_like_with_dtype_casts_into_a_lower_precision_template(like_dir, tmp_path, dtype, keras_loads):
    """A float32 TF2 checkpoint into a template whose weights are all float16 (bfloat16): `--dtype`
    casts while filling it, and Keras loads exactly what its own set_weights makes of the trained
    weights in that model (rounded to nearest even). Without --dtype: exit 3 naming both dtypes and
    the option, nothing written."""
    template = like_dir / f"template_{dtype}.weights.h5"
    refused = run_cli("convert", like_dir / "tf2" / "ckpt", tmp_path / "no.weights.h5", "--names", "model",
                      "--like", template)
    assert_one_line_error(refused, 3)
    assert f"--dtype {dtype}" in refused.stderr and not (tmp_path / "no.weights.h5").exists()
    out = tmp_path / "out.weights.h5"
    doc = _convert(like_dir / "tf2" / "ckpt", out, "--names", "model", "--like", template, "--dtype", dtype)
    assert doc["unmatched"] == [] and len(doc["transformed"]) == 8
    _assert_same(keras_loads(f"bn_{dtype}", out, tmp_path), _arrays(like_dir / f"trained_{dtype}.npz"))


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_tf2_checkpoints_of_functional_and_subclassed_models_into_keras(keras_checkpoints, tmp_path, kind,
                                                                       keras_loads):
    """`--names model --like` for the other two ways of building a Keras model, from a run written by
    CheckpointManager with the optimizer: a functional model's layers are positions
    (`model/_operations/N`), a subclassed model's are its attributes (`model/encoder`, `model/head`)
    beside its own weight (`model/scale`, the template's top-level `vars/0`). Keras' load_weights
    gives the trained model's get_weights()."""
    root = keras_checkpoints / "models" / kind
    out = tmp_path / "out.weights.h5"
    doc = _convert(root / "run", out, "--names", "model", "--like", root / "template.weights.h5")
    assert doc["unmatched"] == []
    _assert_same(keras_loads(f"keras_checkpoints:{kind}", out, tmp_path), _arrays(root / "weights.npz"))
