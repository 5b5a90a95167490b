"""Orbax checkpoints read without JAX (issue 28 items 1-3), against orbax.checkpoint itself: the
fixtures are written by Orbax with JAX on eight virtual CPU devices, and every value ckpttool reads
is compared bit for bit with what Orbax restores to numpy in a process with ONE device
(tests/orbax_fixtures.py). What ckpttool writes from them is read by TensorFlow, safetensors and
Keras. Damaged copies give the documented exit codes, one line, no traceback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_one_line_error, run_cli

SCRIPT = str(ROOT / "tests" / "orbax_fixtures.py")
# (what ckpttool is given, the item Orbax restores for the oracle, the prefix of ckpttool's names)
CASES = [("run", "run/2/default", ""), ("run/2/default", "run/2/default", ""), ("zarr/7", "zarr/7/default", ""),
         ("v1", "v1/state", ""), ("sharded/5", "sharded/5/default", ""), ("multi/3", "multi/3/params", "params/"),
         ("multi/3/opt_state", "multi/3/opt_state", "")]


@pytest.fixture(scope="session")
def oracle(orbax_dir, tmp_path_factory):
    """What Orbax restores from an item on one CPU device: ({name: raw bits}, {name: dtype}, {name: text})."""
    out = tmp_path_factory.mktemp("orbax_oracle")
    cache, shapes = {}, {}

    def restored(item: str):
        if item not in cache:
            npz = out / (item.replace("/", "_") + ".npz")
            env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
            proc = subprocess.run([sys.executable, SCRIPT, "restore", str(orbax_dir / item), str(npz)],
                                  capture_output=True, text=True, env=env)
            assert proc.returncode == 0, proc.stderr[-3000:]
            meta = json.loads(npz.with_suffix(".json").read_text())
            with np.load(npz) as arrays:
                cache[item] = ({k: arrays[k] for k in arrays.files}, meta["dtypes"], meta["strings"])
                shapes[item] = {name: tuple(shape) for name, shape in meta["shapes"].items()}
        return cache[item]
    restored.shapes = shapes
    return restored


def _ours(target: Path) -> dict:
    """ckpttool's reading of target: {name: (dtype name, shape, stored bytes or the string)}."""
    from ckpttool.formats.raw import read_stored
    from ckpttool.ops.targets import open_target, resolve_target

    with open_target(resolve_target(str(target))) as reader:
        return {v.name: (v.dtype.name, v.shape, reader.read(v)[()] if v.dtype.name == "string"
                         else read_stored(reader, v).tobytes()) for v in reader.variables}


@pytest.mark.parametrize("given,item,prefix", CASES)
def test_every_leaf_is_bit_exact_against_orbax(orbax_dir, oracle, given, item, prefix):
    bits, dtypes, strings = oracle(item)
    ours = {name[len(prefix):]: value for name, value in _ours(orbax_dir / given).items() if name.startswith(prefix)}
    assert set(ours) == set(dtypes) | set(strings)
    for name, (dtype, shape, data) in ours.items():
        if name in strings:
            assert (dtype, data) == ("string", strings[name].encode()), name
            continue
        assert (dtype, shape) == (dtypes[name], oracle.shapes[item][name]), name
        assert data == bits[name].tobytes(), name  # bfloat16 and float8 as their bits


def test_every_dtype_is_there(orbax_dir, oracle):
    _bits, dtypes, strings = oracle("run/2/default")
    assert {"bfloat16", "float8_e4m3fn", "float16", "complex64", "bool", "uint64", "int8"} <= set(dtypes.values())
    assert strings == {"note": "trained on CPU"}


def test_names_and_values_in_json(orbax_dir, oracle):
    bits, _dtypes, _strings = oracle("run/2/default")
    result = run_cli("inspect", "--json", "--values", orbax_dir / "run")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["format"] == "orbax" and doc["checkpoint"].endswith("run/2")
    values = {v["name"]: v for v in doc["variables"]}
    bf16 = np.array(values["params/bf16"]["value"], np.float32)
    assert bf16.tobytes() == (bits["params/bf16"].astype(np.uint32) << 16).tobytes()
    assert values["step"]["value"] == 2 and values["params/ints/0"]["value"] == list(range(-5, 5))


def test_diff_and_average(orbax_dir, tmp_path, oracle):
    result = run_cli("diff", "--json", orbax_dir / "run/1", orbax_dir / "run/2")
    assert result.exit_code == 1
    assert [(d["name"], d["change"]) for d in result.json()["differences"]] == [("step", "value")]
    assert run_cli("diff", orbax_dir / "run", orbax_dir / "zarr/7").exit_code == 0  # OCDBT and zarr alike
    out = tmp_path / "avg.safetensors"
    result = run_cli("average", orbax_dir / "run/1", orbax_dir / "run/2", "-o", out)
    assert result.exit_code == 0, result.stderr
    from safetensors import safe_open

    bits, _dtypes, _strings = oracle("run/2/default")
    with safe_open(str(out), "np") as handle:
        assert handle.get_tensor("params/dense/kernel").tobytes() == bits["params/dense/kernel"].tobytes()
        assert int(handle.get_tensor("step")) == 2  # integers from the newest


def test_sharded_checkpoint_converts_to_tensorflow(orbax_dir, oracle, tmp_path, tf):
    bits, dtypes, _strings = oracle("sharded/5/default")
    out = tmp_path / "tf" / "model.ckpt-5"
    result = run_cli("convert", orbax_dir / "sharded", out)
    assert result.exit_code == 0, result.stderr
    reader = tf.train.load_checkpoint(str(out))
    assert set(reader.get_variable_to_shape_map()) == set(dtypes)
    for name, dtype in dtypes.items():
        value = reader.get_tensor(name)
        assert value.dtype.name == dtype, name
        assert np.ascontiguousarray(value).view(bits[name].dtype).tobytes() == bits[name].tobytes(), name


def test_sharded_checkpoint_converts_to_safetensors(orbax_dir, oracle, tmp_path):
    from safetensors import safe_open

    bits, dtypes, _strings = oracle("sharded/5/default")
    out = tmp_path / "w.safetensors"
    assert run_cli("convert", orbax_dir / "sharded/5", out).exit_code == 0
    with safe_open(str(out), "np") as handle:
        assert set(handle.keys()) == set(dtypes)
        for name in dtypes:
            if dtypes[name] == "bfloat16":  # numpy has no bfloat16: the raw header says what is stored
                continue
            assert handle.get_tensor(name).tobytes() == bits[name].tobytes(), name
    header_len = int.from_bytes(out.read_bytes()[:8], "little")
    header = json.loads(out.read_bytes()[8:8 + header_len])
    start, end = header["extra/bf16"]["data_offsets"]
    assert header["extra/bf16"]["dtype"] == "BF16"
    assert out.read_bytes()[8 + header_len + start:8 + header_len + end] == bits["extra/bf16"].tobytes()


def test_sharded_checkpoint_into_a_keras_model(orbax_dir, oracle, tmp_path):
    template, out, loaded = tmp_path / "template.weights.h5", tmp_path / "out.weights.h5", tmp_path / "loaded.npz"
    for args in (["keras", str(template)], None, ["keras-load", str(out), str(loaded)]):
        if args is None:
            result = run_cli("convert", orbax_dir / "sharded", out, "--like", template, "--drop", "^extra/")
            assert result.exit_code == 0, result.stderr
            continue
        proc = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                              env={**os.environ, "KERAS_BACKEND": "tensorflow"})
        assert proc.returncode == 0, proc.stderr[-3000:]
    bits, _dtypes, _strings = oracle("sharded/5/default")
    with np.load(loaded) as weights:
        assert sorted(weights.files) == sorted(n for n in bits if not n.startswith("extra/"))
        for name in weights.files:
            assert weights[name].tobytes() == bits[name].tobytes(), name


def test_verify_checks_the_store_and_says_what_it_cannot(orbax_dir):
    for given in ("run", "zarr/7", "v1", "sharded/5", "multi/3"):
        result = run_cli("verify", "--json", orbax_dir / given)
        assert result.exit_code == 0, result.stderr
        doc = result.json()
        assert doc["ok"] and doc["checked_tensors"] > 0
        assert [w["problem"] for w in doc["warnings"]] == ["not_checked"]
        assert "no checksum" in doc["warnings"][0]["message"]
    result = run_cli("verify", "--all", "--json", orbax_dir / "run")
    assert result.exit_code == 0 and [c["checked_tensors"] for c in result.json()["checkpoints"]] == [19, 19]


def _copy(orbax_dir: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name.replace("/", "_")
    shutil.copytree(orbax_dir / name, dest)
    return dest


def _verify_damage(target: Path) -> dict:
    result = run_cli("verify", "--json", target)
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    doc = result.json()
    assert not doc["ok"]
    return {e["problem"] for e in doc["errors"]}, doc


def test_missing_zarr_chunk(orbax_dir, tmp_path):
    step = _copy(orbax_dir, tmp_path, "zarr/7")
    (step / "default" / "params.dense.kernel" / "0.0").unlink()
    problems, doc = _verify_damage(step)
    assert "missing_chunk" in problems
    assert any(e["name"] == "params/dense/kernel" for e in doc["errors"])
    assert_one_line_error(run_cli("inspect", "--stats", step), 3)
    assert_one_line_error(run_cli("convert", step, tmp_path / "out.safetensors"), 3)
    assert not (tmp_path / "out.safetensors").exists()


def test_truncated_zarr_chunk(orbax_dir, tmp_path):
    step = _copy(orbax_dir, tmp_path, "zarr/7")
    chunk = step / "default" / "params.double" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:-5])
    problems, _doc = _verify_damage(step)
    assert "corrupt" in problems
    assert_one_line_error(run_cli("inspect", "--values", step), 3)


def test_missing_and_damaged_ocdbt_manifest(orbax_dir, tmp_path):
    step = _copy(orbax_dir, tmp_path, "sharded/5")
    manifest = step / "default" / "manifest.ocdbt"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0x10
    manifest.write_bytes(bytes(data))
    problems, _doc = _verify_damage(step)
    assert "corrupt_store" in problems or "corrupt_index" in problems
    manifest.unlink()
    problems, _doc = _verify_damage(step)
    assert problems & {"missing_manifest", "corrupt_index"}
    assert_one_line_error(run_cli("inspect", step), 3)


@pytest.mark.parametrize("where", ["d", "ocdbt.process_0/d"])
def test_missing_ocdbt_data_files(orbax_dir, tmp_path, where):
    """The merged B-tree's node (d/), or the data files the chunks of over 1 KiB are in (smaller ones
    live inside the B-tree nodes)."""
    step = _copy(orbax_dir, tmp_path, "sharded/5")
    for data_file in (step / "default" / where).iterdir():
        data_file.unlink()
    _verify_damage(step)
    assert_one_line_error(run_cli("inspect", "--stats", step), 3)


def test_missing_or_garbage_metadata(orbax_dir, tmp_path):
    step = _copy(orbax_dir, tmp_path, "run/2")
    metadata = step / "default" / "_METADATA"
    metadata.write_text('{"tree_metadata": [1, 2')
    assert_one_line_error(run_cli("inspect", step), 3)
    _verify_damage(step)
    metadata.write_text('{"tree_metadata": {"x": {"key_metadata": [{"key": "..", "key_type": 2}], '
                        '"value_metadata": {"value_type": "np.ndarray", "skip_deserialize": false}}}}')
    assert_one_line_error(run_cli("inspect", step), 3)  # a parameter name that would leave the item
    metadata.unlink()
    assert_one_line_error(run_cli("inspect", step), 3)  # no PyTree item left: not an Orbax checkpoint
    array_metadata = _copy(orbax_dir, tmp_path, "zarr/7") / "default" / "params.half" / ".zarray"
    array_metadata.unlink()
    assert_one_line_error(run_cli("inspect", array_metadata.parent.parent), 3)


def test_links_inside_an_item_are_refused(orbax_dir, tmp_path):
    step = _copy(orbax_dir, tmp_path, "zarr/7")
    chunk = step / "default" / "params.half" / "0.0"
    outside = tmp_path / "outside"
    outside.write_bytes(chunk.read_bytes())
    chunk.unlink()
    chunk.symlink_to(outside)
    assert_one_line_error(run_cli("inspect", step), 3)


def test_without_tensorstore_says_which_extra(orbax_dir):
    code = ("import sys; sys.modules['tensorstore'] = None\n"
            "from ckpttool.cli.app import main\nmain(['inspect', sys.argv[1]])")
    proc = subprocess.run([sys.executable, "-c", code, str(orbax_dir / "run")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert "ckpttool[orbax]" in proc.stderr


def test_never_imports_jax_or_orbax(orbax_dir, tmp_path):
    for args in (["inspect", "--stats", orbax_dir / "sharded"], ["verify", orbax_dir / "run"],
                 ["convert", orbax_dir / "v1", tmp_path / "w.safetensors"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ckpttool", *map(str, args)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
        assert "tensorstore" in imported and not imported & {"jax", "jaxlib", "orbax", "tensorflow"}


def test_v1_marker_makes_a_step(orbax_dir, tmp_path):
    """The v1 API's `orbax.checkpoint` marker names a step directory an Orbax step; it is complete when
    committed (_CHECKPOINT_METADATA), and the marker is Orbax's own file (the step stays deletable)."""
    from ckpttool.ops.runs.scan import scan_directory

    for step in ("4", "8"):
        shutil.copytree(orbax_dir / "v1", tmp_path / step)
    for name in ("_CHECKPOINT_METADATA", "commit_success.txt"):
        (tmp_path / "8" / name).unlink()
    for entry in (tmp_path / "8").iterdir():
        if entry.is_dir():
            (entry / "_METADATA").unlink()  # only the marker says what it is
    found = {c.name: c for c in scan_directory(str(tmp_path)).checkpoints}
    assert {name: (c.format, c.complete) for name, c in found.items()} == {"4": ("orbax", True), "8": ("orbax", False)}
    result = run_cli("ls", "--json", tmp_path)
    assert {c["name"]: c["complete"] for c in result.json()["checkpoints"]} == {"4": True, "8": False}
    doc = run_cli("prune", "--json", "--dry-run", "--keep-last", "1", tmp_path).json()
    assert doc["kept"][0]["name"] == "4"
