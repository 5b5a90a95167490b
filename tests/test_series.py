"""Checkpoint series besides TF prefixes (ops/runs/series.py): Keras ModelCheckpoint files written by
Keras 3, SavedModel export versions written by tf.saved_model.save, Orbax step directories and HF
Trainer checkpoints in their documented layouts; what is a member, its step, and what makes a
directory member unsafe to delete."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ckpttool.ops.runs import series
from ckpttool.storage import fs


def _members(directory: Path):
    entries = fs.list_dir(str(directory))
    keras, _unrecognised = series.keras_members(str(directory), entries)
    dirs, debris = series.directory_members(entries)
    return {m.name: m for m in keras + dirs}, debris


def test_keras_modelcheckpoint_files(series_dir, tmp_path):
    run = tmp_path / "ckpt"
    shutil.copytree(series_dir / "keras" / "ckpt", run)
    written = sorted(p.name for p in run.iterdir())  # w.{epoch:02d}-{val_loss:.2f}.weights.h5, by Keras
    assert [name[:5] for name in written] == ["w.01-", "w.02-", "w.03-", "w.04-"]
    (run / "model.weights.h5").write_bytes((run / written[0]).read_bytes())  # no number
    (run / "w.05-0.10.weights.h5").write_bytes(b"not hdf5 at all")  # named so, but not of the kind
    (run / "notes-3.txt").write_text("x")
    members, debris = _members(run)
    assert sorted(members) == written
    assert {m.step for m in members.values()} == {1, 2, 3, 4}
    assert {m.family for m in members.values()} == {"w.#-#.weights.h5"}
    assert all(m.deletable and not m.is_dir and m.keras_epochs for m in members.values())
    assert not debris


def test_the_step_is_the_number_that_varies(series_dir, tmp_path):
    weights = sorted((series_dir / "keras" / "ckpt").iterdir())[0]  # files Keras wrote, named anew
    for name in ("resnet50_epoch_03-acc_0.91.weights.h5", "resnet50_epoch_04-acc_0.93.weights.h5"):
        shutil.copy(weights, tmp_path / name)
    shutil.copy(series_dir / "kinds" / "legacy" / "legacy-1.h5", tmp_path / "model-7.keras")  # legacy HDF5
    shutil.copy(series_dir / "kinds" / "legacy" / "legacy-1.h5", tmp_path / "model-12.h5")
    shutil.copy(series_dir / "kinds" / "models" / "m-1.keras", tmp_path / "zipped-2.keras")
    members, _ = _members(tmp_path)
    assert members["resnet50_epoch_03-acc_0.91.weights.h5"].step == 3
    assert members["resnet50_epoch_04-acc_0.93.weights.h5"].step == 4
    assert members["model-7.keras"].step == 7 and members["model-12.h5"].step == 12
    assert members["model-7.keras"].family != members["model-12.h5"].family  # suffixes are families
    assert members["zipped-2.keras"].step == 2


def test_savedmodel_versions(series_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(series_dir / "export", export, symlinks=True)
    members, debris = _members(export)
    assert sorted(members) == ["1", "2", "3"]
    assert all(m.kind == "savedmodel" and m.complete and m.deletable for m in members.values())
    assert [(Path(d.path).name, d.kind) for d in debris] == [("temp-4", "exporter_tmp")]
    (export / "2" / "notes.txt").write_text("mine")
    os.symlink("/etc", export / "3" / "assets" / "link") if (export / "3" / "assets").is_dir() else \
        os.symlink("/etc", export / "3" / "link")
    (export / "1" / "variables" / "variables.index").unlink()
    members, _ = _members(export)
    assert members["2"].unexpected == ("notes.txt",) and not members["2"].deletable
    assert any("link" in u for u in members["3"].unexpected) and not members["3"].deletable
    assert not members["1"].complete and not members["1"].deletable


def _orbax_step(root: Path, name: str, marker: str | None) -> None:
    step = root / name
    (step / "default" / "d").mkdir(parents=True)
    (step / "default" / "_METADATA").write_text("{}")
    (step / "default" / "manifest.ocdbt").write_bytes(b"\0" * 10)
    (step / "default" / "d" / "abc123").write_bytes(b"\0" * 100)
    if marker:
        (step / marker).write_text("committed")


def test_orbax_step_directories(tmp_path):
    _orbax_step(tmp_path, "100", "_CHECKPOINT_METADATA")
    _orbax_step(tmp_path, "200", "commit_success.txt")
    _orbax_step(tmp_path, "300", None)  # not committed
    _orbax_step(tmp_path, "400.orbax-checkpoint-tmp", None)
    _orbax_step(tmp_path, "500.orbax-checkpoint-tmp-1700000000", None)
    members, debris = _members(tmp_path)
    assert sorted(members) == ["100", "200", "300"]
    assert members["100"].deletable and members["200"].deletable
    assert members["100"].size_bytes == 2 + 10 + 100 + len("committed")
    assert not members["300"].complete and not members["300"].deletable
    assert sorted(Path(d.path).name for d in debris) == ["400.orbax-checkpoint-tmp",
                                                         "500.orbax-checkpoint-tmp-1700000000"]
    os.symlink("/etc/passwd", tmp_path / "100" / "default" / "d" / "planted")
    assert not _members(tmp_path)[0]["100"].deletable


def _hf_step(root: Path, step: int, extra: str | None = None) -> None:
    """What the HF Trainer writes into checkpoint-<step>/ (its weights by the safetensors library)."""
    from safetensors.numpy import save_file

    directory = root / f"checkpoint-{step}"
    directory.mkdir()
    for name in ("trainer_state.json", "config.json", "optimizer.pt", "scheduler.pt",
                 "rng_state.pth", "training_args.bin", "tokenizer.json", "special_tokens_map.json"):
        (directory / name).write_bytes(b"{}")
    save_file({"w": np.full((2, 3), step, np.float32)}, str(directory / "model.safetensors"))
    if extra:
        (directory / extra).write_text("not the trainer's")


def test_hf_trainer_checkpoints(tmp_path):
    _hf_step(tmp_path, 500)
    _hf_step(tmp_path, 1000, extra="secret.txt")
    (tmp_path / "checkpoint-1500").mkdir()  # no trainer_state.json: an interrupted save
    (tmp_path / "checkpoint-1500" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "checkpoint-final").mkdir()  # no step: not a member
    members, _ = _members(tmp_path)
    assert sorted(members) == ["checkpoint-1000", "checkpoint-1500", "checkpoint-500"]
    assert members["checkpoint-500"].deletable and members["checkpoint-500"].step == 500
    assert members["checkpoint-1000"].unexpected == ("secret.txt",)
    assert not members["checkpoint-1500"].complete


@pytest.mark.parametrize("name", ["..", ".", ""])
def test_hostile_names_inside_a_member_are_unexpected(tmp_path, name):
    assert series._unexpected([(f"default/{name}", "bad_name", 0, 0.0)], series._ORBAX)
