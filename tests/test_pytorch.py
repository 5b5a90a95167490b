"""PyTorch files read without torch (issue 28 items 4-6), torch the oracle: every tensor ckpttool
reads from files torch wrote (zip and legacy layouts, views and shared storages, nested and
Lightning dicts, an HF sharded set) is bit-exact against torch.load(weights_only=True); inspect,
verify, diff, convert and average work on them; `convert --layout tf` writes a checkpoint
TensorFlow reads, and `--layout torch` brings back exactly what torch saved."""
from __future__ import annotations

import json
import shutil
import struct
import zipfile

import numpy as np
import pytest

from ckpttool.formats.reader import open_checkpoint
from tests.conftest import assert_one_line_error, run_cli

FILES = ["every_kind.pt", "every_kind_legacy.pt", "no_extension", "net.bin", "nested.pt", "lightning.ckpt",
         "sharded/pytorch_model.bin.index.json"]


def flatten(value, torch, name: str = "") -> dict:
    """torch.load's result as name -> tensor, names joined with `.` (what ckpttool promises)."""
    if isinstance(value, torch.Tensor):
        return {name or "tensor": value}
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return {}
    out = {}
    for key, child in items:
        out.update(flatten(child, torch, f"{name}.{key}" if name else str(key)))
    return out


def oracle(path, torch) -> dict:
    if str(path).endswith(".index.json"):
        weight_map = json.loads(path.read_text())["weight_map"]
        out = {}
        for shard in sorted(set(weight_map.values())):
            loaded = flatten(torch.load(path.parent / shard, weights_only=True), torch)
            out.update({name: tensor for name, tensor in loaded.items() if weight_map[name] == shard})
        return out
    return flatten(torch.load(path, weights_only=True), torch)


def raw_bytes(tensor) -> bytes:
    """The tensor's elements as stored, C order, whatever its dtype (bfloat16, uint16 ...)."""
    import torch

    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("name", FILES)
def test_every_tensor_is_bit_exact_against_torch_load(torch_dir, torch, name):
    expected = oracle(torch_dir / name, torch)
    with open_checkpoint(str(torch_dir / name)) as reader:
        assert reader.format == "pytorch"
        assert [v.name for v in reader.variables] == list(expected)
        for var in reader.variables:
            tensor = expected[var.name]
            assert var.dtype.name == str(tensor.dtype).replace("torch.", ""), var.name
            assert var.shape == tuple(tensor.shape), var.name
            assert b"".join(reader.iter_stored_bytes(var)) == raw_bytes(tensor), var.name
            values = reader.read(var)
            wanted = tensor.detach().float() if tensor.dtype == torch.bfloat16 else tensor.detach()
            if tensor.dtype == torch.uint16:
                wanted = wanted.to(torch.int32)
            assert values.shape == tuple(tensor.shape)
            np.testing.assert_array_equal(values, wanted.numpy(), err_msg=var.name)


def test_names_of_nested_and_lightning_dicts(torch_dir):
    nested = run_cli("inspect", "-q", torch_dir / "nested.pt").stdout.split()
    assert "model.fc.weight" in nested and "optimizer.state.0.exp_avg" in nested
    lightning = run_cli("inspect", "-q", torch_dir / "lightning.ckpt").stdout.split()
    assert "state_dict.conv.weight" in lightning and "optimizer_states.0.state.1.exp_avg_sq" in lightning


def test_inspect_json_and_stats(torch_dir, torch):
    result = run_cli("inspect", "--json", "--stats", torch_dir / "every_kind.pt")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["format"] == "pytorch" and doc["num_variables"] == 22
    f32 = next(v for v in doc["variables"] if v["name"] == "f32")
    tensor = torch.load(torch_dir / "every_kind.pt", weights_only=True)["f32"]
    assert f32["stats"]["max"] == pytest.approx(float(tensor.max()))


def test_verify_checks_crcs_and_says_what_it_cannot(torch_dir, tmp_path):
    result = run_cli("verify", "--json", torch_dir / "every_kind.pt")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["ok"] and doc["checked_tensors"] == 22
    assert [w["problem"] for w in doc["warnings"]] == ["not_checked", "not_checked"]
    legacy = run_cli("verify", "--json", torch_dir / "every_kind_legacy.pt").json()
    assert legacy["ok"] and any("legacy" in w["message"] for w in legacy["warnings"])


def _rezip(source, target, change) -> None:
    """A copy of a torch zip with `change(name, data)` applied to each record (None drops it);
    stored uncompressed as torch stores them, each record's CRC that of its new bytes."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as new:
        for info in old.infolist():
            data = change(info.filename, old.read(info))
            if data is not None:
                new.writestr(info.filename, data)


def _storage_of(torch_dir, tensor_name: str) -> str:
    """The zip record holding a tensor's storage, found from torch's own pickle (pickletools only)."""
    import pickletools

    with zipfile.ZipFile(torch_dir / "every_kind.pt") as archive:
        ops = list(pickletools.genops(archive.read("every_kind/data.pkl")))
    strings = [arg for _op, arg, _pos in ops if isinstance(arg, str)]
    at = strings.index(tensor_name)
    return f"every_kind/data/{strings[strings.index('storage', at) + 2]}"  # 'storage', 'torch FloatStorage', KEY


def test_verify_reports_a_damaged_record(torch_dir, tmp_path):
    record = _storage_of(torch_dir, "f32")
    damaged = tmp_path / "every_kind.pt"
    shutil.copy(torch_dir / "every_kind.pt", damaged)
    with zipfile.ZipFile(damaged) as archive:
        info = archive.getinfo(record)
    data = bytearray(damaged.read_bytes())
    # The local header's name and extra lengths (torch pads the local extra field to align the data).
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_length + extra_length + 5] ^= 0xFF  # inside its bytes
    damaged.write_bytes(bytes(data))
    doc = run_cli("verify", "--json", damaged).json()
    assert not doc["ok"]
    assert [(e["name"], e["problem"]) for e in doc["errors"]] == [("f32", "checksum")]


def test_verify_reports_missing_and_short_storages(torch_dir, tmp_path):
    record = _storage_of(torch_dir, "f32")
    missing = tmp_path / "missing.pt"
    _rezip(torch_dir / "every_kind.pt", missing, lambda name, data: None if name == record else data)
    result = run_cli("verify", "--json", missing)
    assert result.exit_code == 1
    assert [(e["name"], e["problem"]) for e in result.json()["errors"]] == [("f32", "truncated")]
    assert "missing" in result.json()["errors"][0]["message"]
    short = tmp_path / "short.pt"
    _rezip(torch_dir / "every_kind.pt", short, lambda name, data: data[:-4] if name == record else data)
    errors = run_cli("verify", "--json", short).json()["errors"]
    assert [e["name"] for e in errors] == ["f32"] and "declared" in errors[0]["message"]
    # Listing needs no storage: inspect still lists; reading the values says what is wrong, exit 3.
    assert run_cli("inspect", "-q", short).exit_code == 0
    assert_one_line_error(run_cli("inspect", "--values", "--filter", "^f32$", short), 3)


def test_verify_reports_a_cut_legacy_file(torch_dir, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes((torch_dir / "every_kind_legacy.pt").read_bytes()[:-10])
    result = run_cli("verify", "--json", cut)
    assert result.exit_code == 1
    assert {e["problem"] for e in result.json()["errors"]} == {"truncated"}


def test_diff_zip_against_legacy_and_against_a_changed_copy(torch_dir, torch, tmp_path):
    same = run_cli("diff", torch_dir / "every_kind.pt", torch_dir / "no_extension")
    assert same.exit_code == 0, same.stdout + same.stderr
    legacy = run_cli("diff", "--json", torch_dir / "every_kind.pt", torch_dir / "every_kind_legacy.pt")
    assert [(d["name"], d["change"]) for d in legacy.json()["differences"]] == [("u16", "removed")]
    state = torch.load(torch_dir / "every_kind.pt", weights_only=True)
    state["f32"] = state["f32"] + 1
    torch.save(state, tmp_path / "changed.pt")
    changed = run_cli("diff", "--json", torch_dir / "every_kind.pt", tmp_path / "changed.pt")
    assert changed.exit_code == 1
    assert [(d["name"], d["change"]) for d in changed.json()["differences"]] == [("f32", "value")]


def test_convert_to_safetensors_matches_torch(torch_dir, torch, tmp_path):
    from safetensors.numpy import load_file

    out = tmp_path / "model.safetensors"
    result = run_cli("convert", torch_dir / "net.bin", out)
    assert result.exit_code == 0, result.stderr
    loaded = load_file(str(out))
    expected = torch.load(torch_dir / "net.bin", weights_only=True)
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(loaded[name], tensor.numpy(), err_msg=name)


def test_average_of_pytorch_files(torch_dir, torch, tmp_path):
    from safetensors.numpy import load_file

    state = torch.load(torch_dir / "net.bin", weights_only=True)
    other = {name: tensor * 3 if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    torch.save(other, tmp_path / "other.bin")
    out = tmp_path / "avg.safetensors"
    result = run_cli("average", torch_dir / "net.bin", tmp_path / "other.bin", "-o", out)
    assert result.exit_code == 0, result.stderr
    averaged = load_file(str(out))
    np.testing.assert_allclose(averaged["fc.weight"], ((state["fc.weight"] + other["fc.weight"]) / 2).numpy(),
                               rtol=1e-6)


def test_convert_layout_tf_is_restored_by_tensorflow_and_comes_back_exact(torch_dir, torch, tf, tmp_path):
    prefix = tmp_path / "run" / "model.ckpt-0"
    result = run_cli("convert", torch_dir / "net.bin", prefix, "--layout", "tf")
    assert result.exit_code == 0, result.stderr
    state = torch.load(torch_dir / "net.bin", weights_only=True)
    reader = tf.train.load_checkpoint(str(prefix))
    np.testing.assert_array_equal(reader.get_tensor("fc/kernel"), state["fc.weight"].numpy().T)
    np.testing.assert_array_equal(reader.get_tensor("conv/kernel"), state["conv.weight"].permute(2, 3, 1, 0).numpy())
    np.testing.assert_array_equal(reader.get_tensor("bn/gamma"), state["bn.weight"].numpy())
    np.testing.assert_array_equal(reader.get_tensor("bn/moving_variance"), state["bn.running_var"].numpy())
    np.testing.assert_array_equal(reader.get_tensor("embedding/embeddings"), state["embedding.weight"].numpy())
    back = tmp_path / "back.safetensors"
    assert run_cli("convert", prefix, back, "--layout", "torch").exit_code == 0
    from safetensors.numpy import load_file

    restored = load_file(str(back))
    assert set(restored) == set(state)
    for name, tensor in state.items():
        assert restored[name].tobytes() == tensor.numpy().tobytes(), name


@pytest.mark.parametrize("content", [b"not a pytorch file at all", b"PK\x03\x04 broken zip"])
def test_files_that_are_not_pytorch_exit_3(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    assert_one_line_error(run_cli("inspect", path), 3)


def test_zip_without_data_pkl_exits_3(tmp_path):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/other.txt", b"x")
    assert_one_line_error(run_cli("inspect", path), 3)


@pytest.mark.parametrize("kind", ["quantized", "sparse"])
def test_tensors_ckpttool_does_not_read_exit_3_naming_them(torch, tmp_path, kind):
    values = torch.randn(3, 3)
    tensor = torch.quantize_per_tensor(values, 0.1, 0, torch.qint8) if kind == "quantized" else values.to_sparse()
    torch.save({"t": tensor}, tmp_path / "m.pt")
    result = run_cli("inspect", tmp_path / "m.pt")
    assert_one_line_error(result, 3)
    assert kind in result.stderr


def test_sharded_index_that_names_a_missing_tensor_exits_3(torch_dir, tmp_path):
    shutil.copytree(torch_dir / "sharded", tmp_path / "sharded")
    index = tmp_path / "sharded" / "pytorch_model.bin.index.json"
    document = json.loads(index.read_text())
    document["weight_map"]["nowhere"] = "pytorch_model-00001-of-00002.bin"
    index.write_text(json.dumps(document))
    result = run_cli("inspect", index)
    assert_one_line_error(result, 3)
    assert "nowhere" in result.stderr


def test_rename_vars_sends_pytorch_files_to_convert(torch_dir, tmp_path):
    result = run_cli("rename-vars", "--regex", "^fc=head", torch_dir / "net.bin", tmp_path / "out" / "model.ckpt-0")
    assert_one_line_error(result, 3)
    assert "pytorch file" in result.stderr and "convert" in result.stderr
    assert not (tmp_path / "out").exists()
