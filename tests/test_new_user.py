"""What a new user and real files trip on (issue 18): bare relative targets, stray shards beside a
SavedModel, files named for another format, lone graphs, unreachable buckets, converted metadata."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli


@pytest.fixture
def in_run(copy_fixture, monkeypatch):
    """The shell of a user standing inside a run directory that TensorFlow's Saver wrote."""
    run = copy_fixture("saver_run")
    monkeypatch.chdir(run)
    return run


@pytest.mark.parametrize("args, code", [
    (["verify", "model.ckpt-50"], 0),
    (["verify", "model.ckpt-50.index"], 0),
    (["verify", "model.ckpt-50.data-00000-of-00001"], 0),
    (["verify", "--all", "."], 0),
    (["inspect", "model.ckpt-50"], 0),
    (["inspect", "model.ckpt-50.index", "--stats"], 0),
    (["inspect", "model.ckpt-50.meta", "--meta"], 0),
    (["diff", "model.ckpt-40", "model.ckpt-50"], 1),
    (["diff", "model.ckpt-50.index", "model.ckpt-50"], 0),
    (["ls", "."], 0),
    (["latest", "."], 0),
    (["prune", ".", "--keep-last", "1", "--dry-run"], 0),
    (["repair", ".", "--dry-run"], 0),
    (["rename-vars", "model.ckpt-50", "renamed.ckpt-50", "--add-prefix", "x/"], 0),
    (["rename-vars", "model.ckpt-50.index", "renamed.ckpt-51", "--add-prefix", "x/"], 0),
    (["convert", "model.ckpt-50", "out.npz"], 0),
    (["convert", "model.ckpt-50.index", "out.safetensors"], 0),
    (["convert", "model.ckpt-50", "copy.ckpt-50", "--to", "tf"], 0),
    (["export-json", "model.ckpt-50.meta"], 0),
    (["export-json", "model.ckpt-50"], 0),
    (["freeze", "model.ckpt-50", "-o", "frozen.pb", "--output-nodes", "output"], 0),
    (["freeze", "model.ckpt-50.meta", "-o", "frozen.pb", "--output-nodes", "output"], 0),
])
def test_bare_relative_targets(in_run, args, code):
    result = run_cli(*args)
    assert result.exit_code == code, result.stderr


def test_bare_relative_outputs_read_back(in_run, tf):
    assert run_cli("rename-vars", "model.ckpt-50", "renamed.ckpt-50", "--add-prefix", "x/").exit_code == 0
    assert run_cli("verify", "renamed.ckpt-50").exit_code == 0
    reader = tf.train.load_checkpoint(str(in_run / "renamed.ckpt-50"))
    assert "x/dense/kernel" in reader.get_variable_to_shape_map()
    assert run_cli("convert", "renamed.ckpt-50", "back.ckpt-50", "--to", "tf", "--strip-prefix", "x/").exit_code == 0
    assert "dense/kernel" in tf.train.load_checkpoint(str(in_run / "back.ckpt-50")).get_variable_to_shape_map()


def test_shard_of_an_earlier_save_beside_a_saved_model_is_a_warning(copy_fixture, tf):
    variables = copy_fixture("tf2_saved_model") / "model" / "variables"
    live = variables / "variables.data-00000-of-00001"
    stray = variables / "variables.data-00001-of-00002"
    stray.write_bytes(live.read_bytes())
    loaded = tf.saved_model.load(str(variables.parent))  # TensorFlow reads it, stray shard and all
    assert loaded.signatures["serving_default"] is not None
    result = run_cli("verify", variables.parent)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "warning: " in result.stderr and stray.name in result.stderr
    document = run_cli("verify", variables.parent, "--json").json()
    assert document["ok"] and document["errors"] == []
    assert [w["name"] for w in document["warnings"]] == [stray.name]


def test_stray_shard_is_a_problem_in_ls_not_an_incomplete_checkpoint(copy_fixture, tf):
    run = copy_fixture("saver_run")
    live = run / "model.ckpt-50.data-00000-of-00001"
    stray = run / "model.ckpt-50.data-00000-of-00002"
    stray.write_bytes(live.read_bytes())
    assert tf.train.load_checkpoint(str(run / "model.ckpt-50")).get_tensor("counter") is not None
    document = run_cli("ls", run, "--json").json()
    by_name = {c["name"]: c for c in document["checkpoints"]}
    assert by_name["model.ckpt-50"]["complete"] is True
    assert [p["path"] for p in document["problems"] if p["kind"] == "stray_shard"] == [str(stray)]
    assert run_cli("verify", run / "model.ckpt-50").exit_code == 0


def test_truncated_shard_is_one_problem_naming_its_tensors(copy_fixture, tf):
    run = copy_fixture("saver_run")
    shard = run / "model.ckpt-50.data-00000-of-00001"
    size = shard.stat().st_size
    with open(shard, "r+b") as handle:
        handle.truncate(size // 3)
    reader = tf.train.load_checkpoint(str(run / "model.ckpt-50"))
    unreadable = []
    for name in reader.get_variable_to_shape_map():
        try:
            reader.get_tensor(name)
        except Exception:  # TensorFlow's errors for a short read
            unreadable.append(name)
    assert unreadable
    result = run_cli("verify", run / "model.ckpt-50", "--json")
    assert result.exit_code == 1
    errors = result.json()["errors"]
    assert [(e["name"], e["problem"]) for e in errors] == [(shard.name, "truncated")]
    assert sorted(errors[0]["tensors"]) == sorted(unreadable)


def test_copied_run_directory_says_once_what_happened(fixtures_dir, tmp_path, tf):
    import shutil

    original = fixtures_dir / "saver_run"
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    # TensorFlow follows the absolute paths into the original, which still exists.
    assert tf.train.latest_checkpoint(str(copy)) == str(original / "model.ckpt-50")
    latest = run_cli("latest", copy)
    assert latest.exit_code == 0 and latest.stdout.strip() == str(copy / "model.ckpt-50")
    assert "does not exist" not in latest.stderr
    assert "another directory" in latest.stderr and "ckpttool repair" in latest.stderr
    stale = [p for p in run_cli("ls", copy, "--json").json()["problems"] if p["kind"] == "stale_path"]
    assert len(stale) == 1 and "ckpttool repair" in stale[0]["message"] and str(original) in stale[0]["message"]
    pruned = run_cli("prune", copy, "--keep-last", "2", "--dry-run")
    assert pruned.exit_code == 0
    assert len([line for line in pruned.stderr.splitlines() if "state file" in line]) == 1, pruned.stderr
    assert "ckpttool repair" in pruned.stderr
    assert run_cli("repair", copy).exit_code == 0
    assert tf.train.latest_checkpoint(str(copy)) == str(copy / "model.ckpt-50")  # the suggestion works
    assert not [p for p in run_cli("ls", copy, "--json").json()["problems"] if p["kind"] == "stale_path"]


def test_diff_within_tolerance_is_not_identical(tmp_path, tf):
    import numpy as np

    base = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    for name, shift in (("a", 0.0), ("b", 0.031)):
        tf.train.Checkpoint(w=tf.Variable(base + np.float32(shift)), n=tf.Variable(3)).write(str(tmp_path / name))
    wa = tf.train.load_checkpoint(str(tmp_path / "a")).get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE")
    wb = tf.train.load_checkpoint(str(tmp_path / "b")).get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE")
    expected = float(np.abs(wa.astype(np.float64) - wb.astype(np.float64)).max())
    result = run_cli("diff", tmp_path / "a", tmp_path / "b", "--atol", "0.05")
    assert result.exit_code == 0, result.stderr
    assert "identical" not in result.stdout
    assert f"equal within tolerance (max abs {expected:.6g})" in result.stdout
    assert run_cli("diff", tmp_path / "a", tmp_path / "b", "--atol", "0.05", "--json").json()[
        "max_abs_within_tolerance"] == pytest.approx(expected)
    assert "identical" in run_cli("diff", tmp_path / "a", tmp_path / "a", "--atol", "0.05").stdout
    assert run_cli("diff", tmp_path / "a", tmp_path / "b").exit_code == 1


@pytest.mark.parametrize("command", ["convert", "rename-vars"])
def test_writing_an_older_step_into_a_run_warns_and_can_leave_the_state_alone(copy_fixture, tf, command):
    run = copy_fixture("saver_run")
    assert run_cli("repair", run).exit_code == 0  # relative paths, as a run written here has
    extra = ["--to", "tf"] if command == "convert" else ["--add-prefix", "x/"]
    result = run_cli(command, run / "model.ckpt-30", run / "model.ckpt-0", *extra)
    assert result.exit_code == 0, result.stderr
    assert "warning: " in result.stderr and "model.ckpt-50" in result.stderr and "--no-update-state" in result.stderr
    assert tf.train.latest_checkpoint(str(run)) == str(run / "model.ckpt-0")  # what the warning says
    assert run_cli("repair", run).exit_code == 0
    result = run_cli(command, run / "model.ckpt-30", run / "model.ckpt-1", *extra, "--no-update-state")
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr
    assert tf.train.latest_checkpoint(str(run)).endswith("model.ckpt-0")  # the state file as it was
    assert tf.train.load_checkpoint(str(run / "model.ckpt-1")).get_variable_to_shape_map()
    newer = run_cli(command, run / "model.ckpt-30", run / "model.ckpt-90", *extra)
    assert newer.exit_code == 0 and "warning" not in newer.stderr
    assert tf.train.latest_checkpoint(str(run)) == str(run / "model.ckpt-90")


@pytest.mark.parametrize("name", ["model.h5", "model.pt", "model.safetensor", "model.bin"])
def test_convert_to_an_unknown_extension_is_a_usage_error(copy_fixture, tf, name):
    run = copy_fixture("saver_run")
    result = run_cli("convert", run, run.parent / "out" / name)
    assert_one_line_error(result, 2)
    assert not (run.parent / "out").exists()
    if name.endswith(".safetensor"):
        assert "did you mean .safetensors" in result.stderr
    written = run_cli("convert", run, run.parent / "out" / name, "--to", "tf")
    assert written.exit_code == 0, written.stderr
    assert tf.train.load_checkpoint(str(run.parent / "out" / name)).get_variable_to_shape_map()


def _safetensors_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return handle.metadata()


def test_converted_safetensors_metadata_names_the_source_and_its_format(copy_fixture, tmp_path):
    run = copy_fixture("saver_run")
    out = tmp_path / "w.safetensors"
    assert run_cli("convert", run / "model.ckpt-50", out).exit_code == 0
    metadata = _safetensors_metadata(out)  # the format's own library reads it
    assert metadata["format"] == "tf" and metadata["source"] == "model.ckpt-50"
    assert not any(str(tmp_path) in value for value in metadata.values())
    assert run_cli("convert", run / "model.ckpt-50", tmp_path / "pt.safetensors", "--sep", ".").exit_code == 0
    assert _safetensors_metadata(tmp_path / "pt.safetensors")["format"] == "pt"
    assert run_cli("convert", run / "model.ckpt-50", tmp_path / "anon.safetensors", "--no-source-metadata",
                   "--metadata", "format=mlx").exit_code == 0
    anonymous = _safetensors_metadata(tmp_path / "anon.safetensors")
    assert "source" not in anonymous and anonymous["format"] == "mlx"


def test_converted_safetensors_keep_the_source_format(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.ones((2, 2), np.float32)}, str(tmp_path / "flax.safetensors"), metadata={"format": "flax"})
    assert run_cli("convert", tmp_path / "flax.safetensors", tmp_path / "out.safetensors", "--sep", ".").exit_code == 0
    assert _safetensors_metadata(tmp_path / "out.safetensors")["format"] == "flax"
    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "bare.safetensors"))
    assert run_cli("convert", tmp_path / "bare.safetensors", tmp_path / "bare2.safetensors").exit_code == 0
    assert "format" in _safetensors_metadata(tmp_path / "bare2.safetensors")


def test_inspect_meta_shows_safetensors_metadata(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones(2, np.float32)}, str(path), metadata={"format": "pt", "note": "epoch 3"})
    result = run_cli("inspect", path, "--meta")
    assert result.exit_code == 0 and "note: epoch 3" in result.stdout and "format: pt" in result.stdout
    assert "warning" not in result.stderr
    assert run_cli("inspect", path, "--meta", "--json").json()["file_metadata"] == {"format": "pt", "note": "epoch 3"}


def test_inspect_meta_summarises_a_keras_archive(fixtures_dir):
    import keras

    path = fixtures_dir / "keras3" / "m.keras"
    model = keras.saving.load_model(str(path), compile=False)
    document = run_cli("inspect", path, "--meta", "--json").json()["file_metadata"]
    assert document["keras_version"] == keras.__version__
    assert document["class_name"] == type(model).__name__ or document["class_name"] == "Functional"
    shown = [(layer["name"], layer["class_name"]) for layer in document["layers"]]
    assert {(layer.name, type(layer).__name__) for layer in model.layers if type(layer).__name__ != "InputLayer"} \
        <= set(shown)
    head = model.get_layer("head")
    assert {(layer.name, type(layer).__name__) for layer in head.layers} <= set(shown)
    text = run_cli("inspect", path, "--meta")
    assert text.exit_code == 0 and "keras_version" in text.stdout and "encoder" in text.stdout


def _keras2_hdf5(path):
    """A Keras-2-style HDF5 model file (layer_names / weight_names attributes), as h5py writes it."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = "2.4.0"
        handle.attrs["backend"] = "tensorflow"
        weights = handle.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([b"dense"])
        layer = weights.create_group("dense")
        layer.attrs["weight_names"] = np.array([b"dense/kernel:0"])
        layer.create_group("dense").create_dataset("kernel:0", data=np.ones((2, 2), np.float32))


@pytest.mark.parametrize("name", ["model.keras", "model.h5", "model.npz", "model.safetensors"])
def test_a_file_is_what_its_bytes_say_not_its_name(tmp_path, name):
    """A Keras 2 HDF5 model is read as one whatever Keras name it has (issue 20: legacy files named
    .keras or .h5); named like a format whose bytes it lacks, it is named as HDF5, never damaged."""
    import h5py

    path = tmp_path / name
    _keras2_hdf5(path)
    assert h5py.is_hdf5(str(path))  # the format's own library says what it is
    for command in (["verify"], ["inspect"], ["convert", "--to", "npz"]):
        args = [*command, path] + ([tmp_path / "out.npz", "--overwrite"] if command[0] == "convert" else [])
        result = run_cli(*args)
        assert "DAMAGED" not in result.stdout + result.stderr and "zip" not in result.stderr
        if name in ("model.keras", "model.h5"):
            assert result.exit_code == 0, result.stderr
        else:
            assert_one_line_error(result, 3)
            assert "is an HDF5 file" in result.stderr
    if name in ("model.keras", "model.h5"):
        with h5py.File(path) as handle, np.load(tmp_path / "out.npz") as converted:
            assert list(converted) == ["dense/kernel"]
            assert np.array_equal(converted["dense/kernel"], handle["model_weights/dense/dense/kernel:0"][()])


def test_a_zip_named_weights_h5_is_named_a_zip(tmp_path):
    import zipfile

    path = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"not a pickle")
    assert zipfile.is_zipfile(path)
    result = run_cli("verify", path)
    assert_one_line_error(result, 3)
    # (a PyTorch zip holds <root>/data.pkl and is read by its bytes, whatever its name: this one is not)
    assert "is a zip archive, not a .h5 file" in result.stderr and "DAMAGED" not in result.stdout


def test_inspect_meta_of_a_lone_graph(copy_fixture, tf):
    run = copy_fixture("saver_run")
    lone = run.parent / "export.meta"
    lone.write_bytes((run / "model.ckpt-50.meta").read_bytes())
    meta_graph = tf.compat.v1.MetaGraphDef()  # TensorFlow's own message reads the graph alone
    meta_graph.ParseFromString(lone.read_bytes())
    meta_graph = meta_graph.saver_def
    result = run_cli("inspect", lone, "--meta", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    # No checkpoint beside it: its variables are the graph's constants (issue 20), as TensorFlow has them.
    graph_def = tf.compat.v1.MetaGraphDef.FromString(lone.read_bytes()).graph_def
    constants = {n.name for n in graph_def.node
                 if n.op == "Const" and tf.make_ndarray(n.attr["value"].tensor).size >= 2}
    assert {v["name"] for v in document["variables"]} == constants
    graph = document["meta"]["meta_graphs"][0]
    assert graph["saver_def"]["restore_op_name"] == meta_graph.restore_op_name
    text = run_cli("inspect", lone, "--meta")
    assert text.exit_code == 0 and "not a checkpoint" not in text.stderr and "restore_all" in text.stdout
    verify = run_cli("verify", lone)
    assert verify.exit_code == 0 and "no index table" not in verify.stderr
    with_checkpoint = run_cli("inspect", run / "model.ckpt-50.meta", "--meta", "--json").json()
    assert with_checkpoint["num_variables"] == len(tf.train.list_variables(str(run / "model.ckpt-50")))


def test_a_frozen_graph_def_is_read_as_its_constants(tmp_path, tf):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        tf.matmul(x, tf.constant([[1.0], [2.0]], name="w"), name="y")
    path = tmp_path / "frozen.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    listed = run_cli("inspect", path, "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [v["name"] for v in listed.json()["variables"]] == ["w"]
    assert run_cli("verify", path).exit_code == 0
    assert run_cli("convert", path, tmp_path / "w.npz").exit_code == 0
    expected = tf.make_ndarray(next(n for n in graph.as_graph_def().node if n.name == "w").attr["value"].tensor)
    with np.load(tmp_path / "w.npz") as converted:
        assert np.array_equal(converted["w"], expected)
    assert run_cli("export-json", path).exit_code == 0


def test_unreachable_bucket_fails_in_one_line(tmp_path):
    """A GCS URL pointed at a closed port on this machine: one error line, the endpoint and the
    credentials named, no backend traceback; bounded by the subprocess timeout, never timed."""
    import socket

    from conftest import run_subprocess

    with socket.socket() as probe:  # a port nobody listens on: bound, never listened to
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}
        for args in (["ls", "gs://bucket/run"], ["inspect", "gs://bucket/run/model.ckpt-1"]):
            result = run_subprocess(*args, env=env, timeout=60)
            assert_one_line_error(result, 3)
            assert f"127.0.0.1:{port}" in result.stderr and "STORAGE_EMULATOR_HOST" in result.stderr
            assert "credentials" in result.stderr
        debug = run_subprocess("--debug", "ls", "gs://bucket/run", env=env, timeout=60)
        assert debug.returncode == 3 and "Traceback" in debug.stderr
