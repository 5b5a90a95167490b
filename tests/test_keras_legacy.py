"""Legacy Keras HDF5 files (Keras 1/2, tf.keras: `model.save("m.h5")`, `save_weights("w.h5")`) as
TARGETs. Oracles: Keras' own legacy loader (tests/keras_legacy_fixtures.py, in a subprocess) and
h5py walks of the files."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import assert_one_line_error, build_fixtures, run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def legacy_dir(tmp_path_factory) -> Path:
    return build_fixtures(tmp_path_factory, "keras_legacy_fixtures.py", "keras_legacy")


@pytest.fixture(scope="session")
def oracle(legacy_dir) -> dict:
    with np.load(legacy_dir / "oracle.npz") as data:
        return {name: data[name] for name in data.files}


def _values(target) -> dict:
    result = run_cli("inspect", "--json", "--values", target)
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["format"] == "keras_h5"
    return {v["name"]: np.asarray(v["value"], dtype=v["dtype"]) for v in doc["variables"]}


def _listed_weights(path, group_path: str) -> list[tuple[str, np.ndarray]]:
    """h5py's walk of a weights group as Keras' loader walks it: layer_names, then weight_names."""
    with h5py.File(path, "r") as handle:
        group = handle[group_path]
        out = []
        for layer in group.attrs["layer_names"]:
            layer_group = group[layer.decode() if isinstance(layer, bytes) else layer]
            for weight in layer_group.attrs.get("weight_names", []):
                weight = weight.decode() if isinstance(weight, bytes) else weight
                out.append((weight, np.asarray(layer_group[weight])))
        return out


@pytest.mark.parametrize("name", ["full.h5", "full.hdf5", "full.keras"])
def test_full_model_reads_as_keras_legacy_loader_loads_it(legacy_dir, oracle, name):
    """Weights named as the model Keras loads back names them; the optimizer's under optimizer/.
    A legacy file named .keras is read by its bytes, not as a Keras 3 zip."""
    got = _values(legacy_dir / name)
    model = {k[len("model/"):]: v for k, v in oracle.items() if k.startswith("model/")}
    assert {k for k in got if not k.startswith("optimizer/")} == set(model)
    for key, value in model.items():
        np.testing.assert_array_equal(got[key], value)
    with h5py.File(legacy_dir / name, "r") as handle:  # the optimizer: h5py's walk of optimizer_weights
        group = handle["optimizer_weights"]
        optimizer = {f"optimizer/{w.decode() if isinstance(w, bytes) else w}": np.asarray(group[w])
                     for w in group.attrs["weight_names"]}
    assert len(optimizer) > 2 and {k for k in got if k.startswith("optimizer/")} == set(optimizer)
    for key, value in optimizer.items():
        np.testing.assert_array_equal(got[key], value)
    np.testing.assert_array_equal(got["optimizer/adam/iteration"], oracle["optimizer/adam/iteration"])
    assert run_cli("verify", legacy_dir / name).exit_code == 0


@pytest.mark.parametrize("name,key", [("weights.h5", "weights"), ("keras2.h5", "keras2")])
def test_weights_only_files_read_as_keras_legacy_loader_loads_them(legacy_dir, oracle, name, key):
    """save_weights files; keras2.h5 in Keras 2's naming (`dense_1/kernel:0` -> `dense_1/kernel`)."""
    got = _values(legacy_dir / name)
    listed = _listed_weights(legacy_dir / name, "/")
    assert sorted(got) == sorted(weight.removesuffix(":0") for weight, _ in listed)
    if key == "keras2":
        assert "dense_1/kernel" in got and "batch_normalization_1/moving_mean" in got
    for i, (weight, value) in enumerate(listed):  # the loader sets them in this order
        np.testing.assert_array_equal(got[weight.removesuffix(":0")], oracle[f"{key}/{i}"])
        np.testing.assert_array_equal(value, oracle[f"{key}/{i}"])


def test_legacy_file_named_weights_h5_is_still_legacy(legacy_dir, tmp_path):
    """The bytes decide: a legacy file under a Keras 3 name is read as legacy HDF5."""
    shutil.copyfile(legacy_dir / "weights.h5", tmp_path / "m.weights.h5")
    assert set(_values(tmp_path / "m.weights.h5")) == set(_values(legacy_dir / "weights.h5"))


def test_drop_optimizer_leaves_out_the_optimizer_weights(legacy_dir, oracle, tmp_path):
    out = tmp_path / "m.safetensors"
    result = run_cli("convert", "--json", "--drop-optimizer", legacy_dir / "full.h5", out)
    assert result.exit_code == 0, result.stderr
    from safetensors.numpy import load_file

    tensors = load_file(str(out))
    model = {k[len("model/"):]: v for k, v in oracle.items() if k.startswith("model/")}
    assert set(tensors) == set(model)
    for key, value in model.items():
        np.testing.assert_array_equal(tensors[key], value)


def _copy_and_edit(legacy_dir, tmp_path, edit) -> Path:
    path = tmp_path / "hostile.h5"
    shutil.copyfile(legacy_dir / "weights.h5", path)
    with h5py.File(path, "r+") as handle:
        edit(handle)
    return path


def _names(names) -> np.ndarray:
    return np.array([n.decode() if isinstance(n, bytes) else n for n in names], dtype=h5py.string_dtype())


def _set_weight_names(handle, layer: str, names: list[str]) -> None:
    del handle[layer].attrs["weight_names"]
    handle[layer].attrs["weight_names"] = _names(names)


@pytest.mark.parametrize("case", ["absolute", "missing", "layer-missing", "layer-is-dataset", "never-written"])
def test_hostile_legacy_files_exit_3(legacy_dir, tmp_path, case):
    """Names in the lists are hostile: a weight is a dataset inside its layer's group, a layer a group
    of the weights group; a dataset that was never written is refused as in Keras 3 files."""
    def edit(handle):
        if case == "absolute":  # an HDF5 path from the root reaches another layer's dataset
            other = handle["dense_1"].attrs["weight_names"][0]
            _set_weight_names(handle, "dense", [f"/dense_1/{other}"])
        elif case == "missing":
            _set_weight_names(handle, "dense", ["no/such:0"])
        elif case in ("layer-missing", "layer-is-dataset"):
            if case == "layer-is-dataset":
                handle["stray"] = np.zeros(3, np.float32)
            del handle.attrs["layer_names"]
            handle.attrs["layer_names"] = _names(["dense", "stray"])
        else:
            group = handle.create_group("empty_layer")
            group.create_dataset("w:0", shape=(1000,), dtype="f4")  # declared, never written
            group.attrs["weight_names"] = _names(["w:0"])
            names = list(handle.attrs["layer_names"]) + [b"empty_layer"]
            del handle.attrs["layer_names"]
            handle.attrs["layer_names"] = _names(names)
    path = _copy_and_edit(legacy_dir, tmp_path, edit)
    assert_one_line_error(run_cli("inspect", path), 3)
    verify = run_cli("verify", "--json", path)  # verify reports the damage
    assert verify.exit_code == 1 and verify.json()["errors"], verify.stdout


def test_legacy_bombs_are_refused_as_in_keras3_files(legacy_dir, tmp_path):
    """The Keras 3 reader's rule, reused: datasets that together declare 640 MiB (gzip chunks of
    zeros) from a file of a few hundred KB are refused before anything is read."""
    import zlib

    from tests.hostile import assert_clean_exit, run_limited

    count = 16 << 20
    packed = zlib.compress(b"\0" * (count * 4), 1)

    def edit(handle):
        names = list(handle.attrs["layer_names"])
        for i in range(10):
            group = handle.create_group(f"bomb_{i}")
            dataset = group.create_dataset(f"bomb_{i}/w:0", shape=(count,), dtype="f4", chunks=(count,),
                                           compression="gzip")
            dataset.id.write_direct_chunk((0,), packed)
            group.attrs["weight_names"] = _names([f"bomb_{i}/w:0"])
            names.append(f"bomb_{i}")
        del handle.attrs["layer_names"]
        handle.attrs["layer_names"] = _names(names)

    path = _copy_and_edit(legacy_dir, tmp_path, edit)
    with h5py.File(path, "r") as handle:  # the oracle: a real, readable file
        assert not handle["bomb_3/bomb_3/w:0"][:1000].any()
    proc = run_limited("inspect", path, timeout=240)
    assert_clean_exit(proc, codes=(3,))
    assert "decompression bomb" in proc.stderr


def test_a_weight_name_two_layers_share_is_qualified_by_the_layer(tmp_path):
    """tf.keras could list the same name in two layers (models nested under one scope): each is named
    under its layer's group, values as h5py reads them; names that stay unique are kept."""
    path = tmp_path / "shared.h5"
    rng = np.random.default_rng(1)
    expected = {}
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = _names(["enc", "dec", "head"])
        for layer, weights in (("enc", ["dense/kernel:0"]), ("dec", ["dense/kernel:0"]), ("head", ["head/w:0"])):
            group = handle.create_group(layer)
            group.attrs["weight_names"] = _names(weights)
            for weight in weights:
                group[weight] = rng.standard_normal((2, 3)).astype(np.float32)
    with h5py.File(path, "r") as handle:
        for layer, name in (("enc", "enc/dense/kernel"), ("dec", "dec/dense/kernel"), ("head", "head/w")):
            weight = handle[layer].attrs["weight_names"][0]
            expected[name] = np.asarray(handle[layer][weight])
    got = _values(path)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)


def test_name_lists_split_over_several_attributes(tmp_path):
    """A list too long for one HDF5 attribute is split by Keras' writer into weight_names0,
    weight_names1, ... (as in large tf_model.h5 files); Keras' own loader is the oracle."""
    legacy = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")
    path = tmp_path / "long.h5"
    names = [f"block_{i:04d}/some_rather_long_weight_name_{i}:0" for i in range(3000)]
    with h5py.File(path, "w") as handle:
        legacy.save_attributes_to_hdf5_group(handle, "layer_names", [b"model"])
        group = handle.create_group("model")
        legacy.save_attributes_to_hdf5_group(group, "weight_names", [n.encode() for n in names])
        for i, name in enumerate(names):
            group[name] = np.float32(i)
        assert "weight_names" not in group.attrs and "weight_names1" in group.attrs  # really split
    with h5py.File(path, "r") as handle:
        expected = legacy.load_subset_weights_from_hdf5_group(handle["model"])
    got = _values(path)
    assert len(got) == len(names) == len(expected)
    for name, value in zip(names, expected):
        np.testing.assert_array_equal(got[name.removesuffix(":0")], value)


def test_a_layer_names_list_of_another_type_is_still_a_legacy_file(legacy_dir, tmp_path):
    """The list's presence says what the file is; what it holds is then checked (exit 3), never
    read past as if it were a Keras 3 file."""
    def edit(handle):
        del handle.attrs["layer_names"]
        handle.attrs["layer_names"] = np.arange(3)

    path = _copy_and_edit(legacy_dir, tmp_path, edit)
    result = run_cli("inspect", path)
    assert_one_line_error(result, 3)
    assert "not a list of names" in result.stderr


def test_model_weights_that_is_a_dataset_is_no_legacy_model(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as handle:
        handle["model_weights"] = np.zeros(3)
        handle["model_weights"].attrs["layer_names"] = _names(["a"])
    result = run_cli("inspect", path)
    assert_one_line_error(result, 3)
    assert "is an HDF5 file" in result.stderr
