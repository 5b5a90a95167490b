"""`ls`, `latest`, `prune` and `verify --all` on checkpoint series besides TF prefixes (issue 21,
"Every series"): Keras ModelCheckpoint files written by Keras 3, SavedModel versions written by
tf.saved_model.save (tests/series_fixtures.py), Orbax and HF Trainer step directories in their
documented layouts (Orbax itself is not installed: too heavy for CI). After every prune the
framework restores the latest: Keras' `model.load_weights` of the kept newest file,
`tf.saved_model.load` of the newest version."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.remote_servers import upload_tree
from tests.test_remote import fresh_prefix, servers  # noqa: F401 - the servers, as a fixture here
from tests.test_series import _hf_step, _orbax_step

HOUR = 3600.0


def _prune(directory, *args):
    result = run_cli("prune", "--yes", "--json", *args, directory)
    assert result.exit_code == 0, result.stderr
    return result.json()


def _names(doc, key):
    return sorted(item["name"] for item in doc[key])


def _keras_model():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                             keras.layers.Dense(1, activation="sigmoid")])


def test_keras_modelcheckpoint_files_are_a_series(series_dir, tmp_path):
    run = tmp_path / "ckpt"
    shutil.copytree(series_dir / "keras" / "ckpt", run)
    written = sorted(p.name for p in run.iterdir())  # by Keras' ModelCheckpoint, epochs 1..4
    shutil.copy(run / written[0], run / "model.weights.h5")  # no number: a file, not a member
    (run / "w.09-0.10.weights.h5").write_bytes(b"not hdf5")  # named so, but not of the kind
    os.symlink(run / written[0], run / "w.08-0.10.weights.h5")  # a link: never a member
    doc = run_cli("ls", "--json", run).json()
    assert [c["name"] for c in doc["checkpoints"]] == written
    assert all(c["format"] == "keras" and c["keras_epochs"] and c["family"] == "w.#-#.weights.h5"
               for c in doc["checkpoints"])
    assert [c["step"] for c in doc["checkpoints"]] == [1, 2, 3, 4]
    assert doc["latest"] == written[-1] and not doc["problems"]  # no state file is no problem for Keras
    latest = run_cli("latest", "--json", run)
    assert latest.exit_code == 0 and not latest.stderr
    assert latest.json()["latest"] == str(run / written[-1]) and latest.json()["step"] == 4

    verify = run_cli("verify", "--all", "--json", run)
    assert verify.exit_code == 0, verify.stdout
    assert verify.json()["num_checkpoints"] == 4 and all(r["checked_tensors"] > 0 for r in verify.json()["checkpoints"])

    doc = _prune(run, "--keep-last", "2")
    assert _names(doc, "deleted") == written[:2]
    assert sorted(os.listdir(run)) == sorted(written[2:] + ["model.weights.h5", "w.09-0.10.weights.h5",
                                                              "w.08-0.10.weights.h5"])
    model = _keras_model()
    model.load_weights(str(run / written[-1]))  # Keras restores the kept newest
    import h5py

    with h5py.File(run / written[-1], "r") as f:
        np.testing.assert_array_equal(model.layers[0].kernel.numpy(), f["layers/dense/vars/0"][()])


def test_a_damaged_keras_file_is_reported_by_verify_all(series_dir, tmp_path):
    run = tmp_path / "ckpt"
    shutil.copytree(series_dir / "keras" / "ckpt", run)
    damaged = sorted(run.iterdir())[1]
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    result = run_cli("verify", "--all", "--json", run)
    assert result.exit_code == 1
    bad = [r for r in result.json()["checkpoints"] if not r["ok"]]
    assert [r["checkpoint"] for r in bad] == [str(damaged)]


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for current, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.utime(os.path.join(current, name), (then, then))
        os.utime(current, (then, then))


def test_savedmodel_versions(series_dir, tmp_path, tf):
    export = tmp_path / "export"
    shutil.copytree(series_dir / "export", export, symlinks=True)
    _age(export / "temp-4", 2 * HOUR)
    shutil.copytree(export / "1", export / "0")
    (export / "0" / "notes.txt").write_text("mine")  # not what an exporter writes: kept
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    os.symlink(outside, export / "1" / "assets" / "link")  # a link inside: kept, never followed
    doc = run_cli("ls", "--json", export).json()
    assert [c["name"] for c in doc["checkpoints"]] == ["0", "1", "2", "3"]
    assert doc["latest"] == "3"
    assert {p["kind"] for p in doc["problems"]} == {"foreign_files", "exporter_tmp"}
    assert run_cli("latest", export).stdout.strip() == str(export / "3")

    verify = run_cli("verify", "--all", "--json", export).json()
    assert verify["ok"] and verify["checked_tensors"] == 4 * 2  # each version's variables/, both tensors

    doc = _prune(export, "--keep-last", "1", "--clean")
    assert _names(doc, "deleted") == ["2", "temp-4"]
    kept = {k["name"]: k["reasons"] for k in doc["kept"]}
    assert "latest" in kept["3"] and "notes.txt" in kept["0"][0] and "link" in kept["1"][0]
    assert sorted(os.listdir(export)) == ["0", "1", "3"]
    assert (outside / "precious").read_text() == "keep me"
    loaded = tf.saved_model.load(str(export / "3"))  # TensorFlow restores the newest version
    np.testing.assert_allclose(loaded(tf.constant([1.0, 2.0])).numpy(), [3.0, 6.0])


def test_orbax_step_directories(tmp_path):
    for step in (100, 200, 300):
        _orbax_step(tmp_path, str(step), "_CHECKPOINT_METADATA")
    _orbax_step(tmp_path, "400", None)  # not committed: never deleted
    _orbax_step(tmp_path, "500.orbax-checkpoint-tmp-1700000000", None)
    _age(tmp_path / "500.orbax-checkpoint-tmp-1700000000", 2 * HOUR)
    (tmp_path / "notes-3.txt").write_text("x")
    ls = run_cli("ls", "--json", tmp_path).json()
    assert [c["name"] for c in ls["checkpoints"]] == ["100", "200", "300", "400"]
    assert ls["latest"] == "300"  # the highest complete step
    assert {p["kind"] for p in ls["problems"]} == {"incomplete_member", "orbax_tmp"}

    verify = run_cli("verify", "--all", "--json", tmp_path)
    assert verify.exit_code == 1  # the uncommitted step
    reports = {Path(r["checkpoint"]).name: r for r in verify.json()["checkpoints"]}
    assert [e["problem"] for e in reports["400"]["errors"]] == ["incomplete"]
    # Committed steps are read now (tests/test_orbax.py, against Orbax): these stand-ins' `_METADATA`
    # holds no tree, which verify reports as damage instead of passing them unread.
    assert [e["problem"] for e in reports["300"]["errors"]] == ["corrupt_index"]
    assert "no tree_metadata" in reports["300"]["errors"][0]["message"]

    doc = _prune(tmp_path, "--keep-last", "1", "--clean")
    assert _names(doc, "deleted") == ["100", "200", "500.orbax-checkpoint-tmp-1700000000"]
    assert sorted(os.listdir(tmp_path)) == ["300", "400", "notes-3.txt"]
    assert sorted(os.listdir(tmp_path / "300")) == ["_CHECKPOINT_METADATA", "default"]


def test_hf_trainer_checkpoints(tmp_path):
    from safetensors.numpy import save_file

    for step in (500, 1000, 2000):
        _hf_step(tmp_path, step, extra="secret.txt" if step == 1000 else None)
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    save_file(weights, str(tmp_path / "checkpoint-2000" / "model.safetensors"))
    (tmp_path / "checkpoint-1000" / "model.safetensors").write_bytes(b"{}")
    (tmp_path / "checkpoint-3000").mkdir()  # an interrupted save: no trainer_state.json
    (tmp_path / "checkpoint-3000" / "model.safetensors").write_bytes(b"x")
    assert run_cli("latest", "--step", tmp_path).stdout.strip() == "2000"
    verify = run_cli("verify", "--all", "--json", tmp_path).json()
    reports = {Path(r["checkpoint"]).name: r for r in verify["checkpoints"]}
    assert reports["checkpoint-2000"]["ok"] and reports["checkpoint-2000"]["checked_tensors"] == 1
    assert not reports["checkpoint-1000"]["ok"]  # its model.safetensors is not one
    assert not reports["checkpoint-3000"]["ok"]

    doc = _prune(tmp_path, "--keep-last", "1")
    assert _names(doc, "deleted") == ["checkpoint-500"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1000", "checkpoint-2000", "checkpoint-3000"]
    assert (tmp_path / "checkpoint-1000" / "secret.txt").read_text() == "not the trainer's"


def test_each_series_family_keeps_its_latest(series_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(series_dir / "keras" / "ckpt", run)
    for step in (1, 2):
        _orbax_step(run, str(step * 1000), "commit_success.txt")
    _age(run / "2000", 3 * HOUR)  # older files than every Keras one
    keras_files = sorted(p for p in os.listdir(run) if p.endswith(".h5"))
    doc = _prune(run, "--keep-every-steps", "1000000")
    kept = {k["name"]: k["reasons"] for k in doc["kept"]}
    # The directory's latest: the highest complete step (Orbax's 2000 over Keras' epoch 4); the Keras
    # series keeps its own newest all the same.
    assert kept == {"2000": ["latest"], keras_files[-1]: ["latest of its series"]}
    assert _names(doc, "deleted") == ["1000"] + keras_files[:-1]


def test_an_interrupted_tree_removal_is_finished_by_the_next_prune(tmp_path, monkeypatch):
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules
    from ckpttool.storage import fs

    for step in (100, 200):
        _orbax_step(tmp_path, str(step), "_CHECKPOINT_METADATA")
    original = fs.CheckedDirectory.remove_tree

    def crash_before_the_marker(checked, name, files, dirs):
        assert files[-1] == "_CHECKPOINT_METADATA"  # the commit marker goes last
        original(checked, name, files[:-1], [])
        raise KeyboardInterrupt

    monkeypatch.setattr(fs.CheckedDirectory, "remove_tree", crash_before_the_marker)
    with pytest.raises(KeyboardInterrupt):
        apply_prune(plan_prune(str(tmp_path), RetentionRules(keep_last=1)))
    assert os.listdir(tmp_path / "100") != [] and (tmp_path / ".ckpttool-prune.journal").exists()
    monkeypatch.setattr(fs.CheckedDirectory, "remove_tree", original)
    ls = run_cli("ls", "--json", tmp_path).json()
    assert [c["name"] for c in ls["checkpoints"]] == ["100", "200"]  # still recognised: resumable
    doc = _prune(tmp_path, "--keep-last", "5")
    assert [(d["name"], d["kind"]) for d in doc["deleted"]] == [("100", "resumed")]
    assert sorted(os.listdir(tmp_path)) == ["200"]


def test_a_planted_link_after_planning_is_refused_under_the_lock(tmp_path):
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules

    for step in (100, 200):
        _orbax_step(tmp_path, str(step), "_CHECKPOINT_METADATA")
    plan = plan_prune(str(tmp_path), RetentionRules(keep_last=1))
    assert [d.name for d in plan.deleted] == ["100"]
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    os.symlink(outside, tmp_path / "100" / "default" / "d" / "planted")
    result = apply_prune(plan)
    assert result.deleted == () and (tmp_path / "100" / "_CHECKPOINT_METADATA").exists()
    assert (outside / "precious").read_text() == "keep me"


def test_a_journal_naming_a_foreign_directory_is_refused(tmp_path):
    _hf_step(tmp_path, 500, extra="secret.txt")
    _hf_step(tmp_path, 1000)
    (tmp_path / ".ckpttool-prune.journal").write_text(json.dumps(
        {"deletions": [{"name": "checkpoint-500", "step": 500, "paths": ["checkpoint-500"]}]}))
    result = run_cli("prune", "--yes", "--keep-last", "5", tmp_path)
    assert result.exit_code == 3 and "checkpoint-500" in result.stderr
    assert (tmp_path / "checkpoint-500" / "secret.txt").exists()


def test_tf_prefixes_answer_first_beside_a_series(copy_fixture, series_dir, tf):
    run = copy_fixture("prune_run")
    for path in (series_dir / "keras" / "ckpt").iterdir():
        shutil.copy(path, run / path.name)
    assert run_cli("latest", run).stdout.strip() == str(run / "model.ckpt-1000")
    ls = run_cli("ls", "--json", run).json()
    assert ls["latest"] == "model.ckpt-1000"
    assert not any(p["kind"] in ("not_in_state", "no_state_file") for p in ls["problems"])
    repair = run_cli("repair", "--json", "--dry-run", run)
    assert ".weights.h5" not in repair.stdout
    doc = _prune(run, "--keep-last", "1")
    assert {"model.ckpt-1000", "best.ckpt-700"} <= {k["name"] for k in doc["kept"]}
    assert len([n for n in os.listdir(run) if n.endswith(".weights.h5")]) == 1
    assert os.path.basename(tf.train.latest_checkpoint(str(run))) == "model.ckpt-1000"


def _keys(server, url: str) -> list[str]:
    from ckpttool.storage import remote

    root = remote.split_url(url)[1]
    return sorted(name[len(root) + 1:] for name in remote.filesystem(server.protocol).find(root))


def _download_tree(server, url: str, local: Path) -> None:
    from ckpttool.storage import remote

    root = remote.split_url(url)[1]
    store = remote.filesystem(server.protocol)
    for name in store.find(root):
        target = local / name[len(root) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(name, str(target))


def test_series_in_a_bucket(servers, series_dir, tmp_path, tf):
    s3 = servers["s3"]
    export = upload_tree(s3, str(series_dir / "export"), fresh_prefix("export"))
    outside = upload_tree(s3, str(series_dir / "export" / "1"), fresh_prefix("export") + "-1")  # a prefix sibling
    assert run_cli("latest", export).stdout.strip() == export + "/3"
    verify = run_cli("verify", "--all", "--json", export).json()
    assert verify["ok"] and verify["checked_tensors"] == 3 * 2
    doc = _prune(export, "--keep-last", "1", "--clean", "--min-age", "0")
    assert _names(doc, "deleted") == ["1", "2", "temp-4"]
    keys = _keys(s3, export)
    assert keys and all(k.startswith("3/") for k in keys)  # lock and journal gone too
    assert _keys(s3, outside)  # a key merely sharing the prefix's text is untouched
    _download_tree(s3, export, tmp_path / "export")
    loaded = tf.saved_model.load(str(tmp_path / "export" / "3"))
    np.testing.assert_allclose(loaded(tf.constant([2.0])).numpy(), [6.0])

    keras_url = upload_tree(s3, str(series_dir / "keras" / "ckpt"), fresh_prefix("keras"))
    written = sorted(os.listdir(series_dir / "keras" / "ckpt"))
    ls = run_cli("ls", "--json", keras_url).json()
    assert [c["name"] for c in ls["checkpoints"]] == written and ls["latest"] == written[-1]
    verify = run_cli("verify", "--all", "--json", keras_url)
    assert verify.exit_code == 0 and verify.json()["checked_tensors"] > 0
    doc = _prune(keras_url, "--keep-last", "1")
    assert _names(doc, "deleted") == written[:-1] and _keys(s3, keras_url) == written[-1:]
    _download_tree(s3, keras_url, tmp_path / "keras")
    _keras_model().load_weights(str(tmp_path / "keras" / written[-1]))

    steps = tmp_path / "orbax"
    for step in (100, 200):
        _orbax_step(steps, str(step), "commit_success.txt")  # the marker Orbax writes on GCS and S3
    _orbax_step(steps, "300", None)  # being written in place (no atomic rename in a bucket): kept
    _orbax_step(steps, "400.orbax-checkpoint-tmp-1700000000", None)
    orbax_url = upload_tree(s3, str(steps), fresh_prefix("orbax"))
    doc = _prune(orbax_url, "--keep-last", "1", "--clean", "--min-age", "0")
    assert _names(doc, "deleted") == ["100", "400.orbax-checkpoint-tmp-1700000000"]
    assert {k.split("/")[0] for k in _keys(s3, orbax_url)} == {"200", "300"}


def test_a_series_directory_as_a_target(series_dir, tmp_path, tf):
    keras_dir = series_dir / "keras" / "ckpt"
    newest = max(os.listdir(keras_dir))
    result = run_cli("verify", "--json", keras_dir)
    assert result.exit_code == 0 and result.json()["checkpoint"] == str(keras_dir / newest)
    doc = run_cli("inspect", "--json", "--values", series_dir / "export").json()
    expected = tf.train.load_checkpoint(str(series_dir / "export" / "3" / "variables" / "variables"))
    assert {v["name"]: v["value"] for v in doc["variables"]} == {
        name: float(expected.get_tensor(name)) for name in expected.get_variable_to_shape_map()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    _orbax_step(tmp_path, "100", "_CHECKPOINT_METADATA")  # an Orbax step is read (tests/test_orbax.py) ...
    result = run_cli("inspect", tmp_path)
    assert result.exit_code == 3 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ") and "no tree_metadata" in result.stderr  # ... not this


def test_recursive_finds_the_directories_holding_a_series(series_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(series_dir / "export", root / "serving" / "export")
    shutil.copytree(series_dir / "keras", root / "keras")
    _orbax_step(root / "jax", "100", "commit_success.txt")
    _orbax_step(root / "jax", "200", "commit_success.txt")
    (root / "hf" / "out").mkdir(parents=True)
    for step in (10, 20):
        _hf_step(root / "hf" / "out", step)
    doc = run_cli("ls", "--recursive", "--json", root).json()
    assert sorted((Path(d["directory"]).relative_to(root).as_posix(), d["latest"]) for d in doc["directories"]) == [
        ("hf/out", "checkpoint-20"), ("jax", "200"), ("keras/ckpt", max(os.listdir(root / "keras" / "ckpt"))),
        ("serving/export", "3")]
    pruned = run_cli("prune", "--recursive", "--yes", "--json", "--keep-last", "1", root)
    assert pruned.exit_code == 0, pruned.stderr
    assert pruned.json()["deleted_count"] == 2 + 1 + 3 + 1
    assert sorted(os.listdir(root / "serving" / "export")) == ["3", "temp-4"]  # no --clean: debris stays


def test_tree_removal_never_follows_a_link_swapped_in_after_listing(tmp_path):
    from ckpttool.storage import fs

    member = tmp_path / "100"
    (member / "default").mkdir(parents=True)
    (member / "default" / "x").write_text("step data")
    (member / "_CHECKPOINT_METADATA").write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("keep me")
    shutil.rmtree(member / "default")  # listed as a directory, now a link to another one
    os.symlink(outside, member / "default")
    (member / "new-file").write_text("written since the listing")
    with fs.open_checked_directory(str(tmp_path)) as checked:
        why = checked.remove_tree("100", ["default/x", "_CHECKPOINT_METADATA"], ["default"])
    assert (outside / "x").read_text() == "keep me"
    assert sorted(os.listdir(member)) == ["default", "new-file"] and os.path.islink(member / "default")
    assert "default/x" in why and "left in place" in why


def test_a_fresh_empty_temporary_directory_is_not_debris_yet(tmp_path):
    for step in (1, 2):
        _orbax_step(tmp_path, str(step), "_CHECKPOINT_METADATA")
    (tmp_path / "3.orbax-checkpoint-tmp-1700000000").mkdir()  # a save that has only just begun
    doc = _prune(tmp_path, "--keep-last", "5", "--clean")
    assert doc["deleted"] == [] and (tmp_path / "3.orbax-checkpoint-tmp-1700000000").is_dir()


def test_keras_files_and_legacy_h5_models(tmp_path):
    import keras

    run = tmp_path / "run"
    run.mkdir()
    x = np.random.default_rng(3).standard_normal((16, 4)).astype("float32")
    model = _keras_model()
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, x[:, :1], epochs=2, verbose=0,
              callbacks=[keras.callbacks.ModelCheckpoint(str(run / "m-{epoch}.keras"))])  # whole models, zipped
    for step in (1, 2):
        model.save(run / f"legacy-{step}.h5")  # Keras' legacy HDF5 model format
    ls = run_cli("ls", "--json", run).json()
    assert {c["name"]: c["family"] for c in ls["checkpoints"]} == {
        "m-1.keras": "m-#.keras", "m-2.keras": "m-#.keras", "legacy-1.h5": "legacy-#.h5", "legacy-2.h5": "legacy-#.h5"}
    verify = run_cli("verify", "--all", "--json", run)
    assert verify.exit_code == 0 and all(r["checked_tensors"] > 0 for r in verify.json()["checkpoints"])
    doc = _prune(run, "--keep-last", "1")
    assert _names(doc, "deleted") == ["legacy-1.h5", "m-1.keras"]
    assert sorted(os.listdir(run)) == ["legacy-2.h5", "m-2.keras"]
    for name in ("m-2.keras", "legacy-2.h5"):  # Keras loads what is kept
        loaded = keras.saving.load_model(run / name, compile=False)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_the_hf_trainers_best_checkpoint_is_kept(tmp_path):
    for step in (500, 1000, 1500):
        _hf_step(tmp_path, step)
    # What the Trainer writes with load_best_model_at_end: its rotation never deletes this one.
    (tmp_path / "checkpoint-1500" / "trainer_state.json").write_text(json.dumps(
        {"best_model_checkpoint": "output/checkpoint-500", "global_step": 1500, "log_history": []}))
    (tmp_path / "checkpoint-1000" / "trainer_state.json").write_text("[" * 100_000)  # never read: not the newest
    doc = _prune(tmp_path, "--keep-last", "1")
    assert _names(doc, "deleted") == ["checkpoint-1000"]
    assert {k["name"]: k["reasons"] for k in doc["kept"]}["checkpoint-500"] == [
        "best_model_checkpoint in trainer_state.json"]


def test_a_hostile_trainer_state_is_no_best_checkpoint(tmp_path):
    """Nested too deeply to parse: damage (exit 3, nothing deleted: the best it names is unknown),
    never a crash; allowed, it names no best."""
    for step in (500, 1000):
        _hf_step(tmp_path, step)
    (tmp_path / "checkpoint-1000" / "trainer_state.json").write_text("[" * 100_000)
    refused = run_cli("prune", "--yes", "--keep-last", "1", tmp_path)
    assert_one_line_error(refused, 3)
    assert "trainer_state.json, byte 0" in refused.stderr
    doc = _prune(tmp_path, "--keep-last", "1", "--allow-damaged-metrics")
    assert _names(doc, "deleted") == ["checkpoint-500"]


def test_a_bucket_prune_interrupted_before_the_commit_marker_is_resumed(servers, tmp_path, monkeypatch):
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules
    from ckpttool.storage import fs

    s3 = servers["s3"]
    for step in (100, 200):
        _orbax_step(tmp_path, str(step), "commit_success.txt")
    url = upload_tree(s3, str(tmp_path), fresh_prefix("orbax"))
    original = fs.remove_files

    def crash_at_the_marker(paths):
        if any(p.endswith("/commit_success.txt") for p in paths):
            raise KeyboardInterrupt
        original(paths)

    monkeypatch.setattr(fs, "remove_files", crash_at_the_marker)
    with pytest.raises(KeyboardInterrupt):
        apply_prune(plan_prune(url, RetentionRules(keep_last=1)))
    monkeypatch.setattr(fs, "remove_files", original)
    assert "100/commit_success.txt" in _keys(s3, url) and "100/default/_METADATA" not in _keys(s3, url)
    assert [c["name"] for c in run_cli("ls", "--json", url).json()["checkpoints"]] == ["100", "200"]
    doc = _prune(url, "--keep-last", "5")
    assert [(d["name"], d["kind"]) for d in doc["deleted"]] == [("100", "resumed")]
    assert {k.split("/")[0] for k in _keys(s3, url)} == {"200"}
