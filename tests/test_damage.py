"""Damaged inputs: one clear line and exit 3, never a traceback; `verify`
reads everything, names every damaged tensor (as TensorFlow sees them) and exits 1."""
from __future__ import annotations

import os

import pytest

from ckpttool.formats.tf.bundle import open_bundle
from tests.conftest import assert_one_line_error, run_cli


def _flip(path, offset):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x5A]))


def _tf_damaged(tf, prefix, names):
    """Names TensorFlow itself cannot read."""
    damaged = set()
    reader = tf.train.load_checkpoint(prefix)
    for name in names:
        try:
            reader.get_tensor(name)
        except Exception:  # DataLossError and friends
            damaged.add(name)
    return damaged


def test_flipped_data_bytes(copy_fixture, tf):
    run = copy_fixture("saver_run")
    prefix = str(run / "model.ckpt-50")
    with open_bundle(prefix) as bundle:
        parts = {v.name: v.parts[0] for v in bundle.variables}
    for name in ("dense/kernel", "embedding"):
        _flip(prefix + ".data-00000-of-00001", parts[name].offset + 1)
    expected = _tf_damaged(tf, prefix, parts)
    assert expected == {"dense/kernel", "embedding"}
    result = run_cli("verify", "--json", prefix)
    assert result.exit_code == 1
    doc = result.json()
    assert doc["ok"] is False and doc["command"] == "verify"
    assert {e["name"] for e in doc["errors"]} == expected
    assert {e["problem"] for e in doc["errors"]} == {"checksum"}
    assert doc["checked_tensors"] == len(parts) - 2
    assert_one_line_error(run_cli("inspect", "--values", prefix), 3)
    assert run_cli("inspect", prefix).exit_code == 0  # listing needs only the index
    human = run_cli("verify", prefix)
    assert human.exit_code == 1 and "DAMAGED" in human.stdout and "embedding" in human.stdout


def test_truncated_index(copy_fixture):
    run = copy_fixture("saver_run")
    index = run / "model.ckpt-50.index"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    assert_one_line_error(run_cli("inspect", run / "model.ckpt-50"), 3)
    result = run_cli("verify", "--json", run / "model.ckpt-50")
    assert result.exit_code == 1 and result.json()["errors"][0]["problem"] == "corrupt_index"


def test_flipped_index_byte(copy_fixture, tf):
    run = copy_fixture("saver_run")
    _flip(run / "model.ckpt-50.index", 10)
    with pytest.raises(Exception):
        tf.train.load_checkpoint(str(run / "model.ckpt-50")).get_variable_to_shape_map()
    result = run_cli("inspect", run / "model.ckpt-50")
    assert_one_line_error(result, 3)
    assert "checksum" in result.stderr


def test_missing_shard(copy_fixture, tf):
    run = copy_fixture("sharded")
    prefix = str(run / "model.ckpt-1")
    with open_bundle(prefix) as bundle:
        in_second = {v.name for v in bundle.variables if v.parts[0].shard_id == 1}
    os.remove(prefix + ".data-00001-of-00002")
    assert in_second == _tf_damaged(tf, prefix, ["a", "b", "c/d"])
    assert_one_line_error(run_cli("inspect", "--values", prefix), 3)
    doc = run_cli("verify", "--json", prefix).json()
    # One missing shard is one problem, naming the tensors TensorFlow cannot read (issue 10 item 9).
    (error,) = doc["errors"]
    assert error["name"] == "model.ckpt-1.data-00001-of-00002" and error["problem"] == "missing_shard"
    assert set(error["tensors"]) == in_second
    assert doc["checked_tensors"] == 3 - len(in_second)


def test_truncated_data_file(copy_fixture):
    run = copy_fixture("every_dtype")
    data = run / "dtypes.data-00000-of-00001"
    size = data.stat().st_size
    os.truncate(data, size - 10)
    doc = run_cli("verify", "--json", run / "dtypes").json()
    assert not doc["ok"] and any(e["problem"] == "truncated" for e in doc["errors"])


def test_garbage_state_file(tmp_path, copy_fixture):
    (tmp_path / "checkpoint").write_text("garbage {{{")
    assert_one_line_error(run_cli("inspect", tmp_path), 3)
    run = copy_fixture("saver_run")
    (run / "checkpoint").write_bytes(os.urandom(64))
    result = run_cli("inspect", run)
    assert result.exit_code == 0 and "warning:" in result.stderr  # still finds the newest checkpoint


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n" * 20)
    assert_one_line_error(run_cli("inspect", tmp_path / "notes.txt"), 3)
    (tmp_path / "fake.index").write_bytes(b"\x00" * 100)
    assert_one_line_error(run_cli("inspect", tmp_path / "fake"), 3)
    assert_one_line_error(run_cli("verify", tmp_path / "nothing-here"), 3)


@pytest.mark.parametrize("command", ["ls", "latest", "inspect", "verify"])
def test_nonexistent_path(tmp_path, command):
    result = run_cli(command, tmp_path / "does-not-exist")
    assert_one_line_error(result, 3)
    assert "does-not-exist" in result.stderr


def test_internal_error_exit_70_and_debug(fixtures_dir, monkeypatch):
    import ckpttool.ops.tensors.inspect as inspect_ops

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(inspect_ops, "inspect_checkpoint", boom)
    result = run_cli("inspect", fixtures_dir / "saver_run")
    assert result.exit_code == 70 and "--debug" in result.stderr and "Traceback" not in result.stderr
    debug = run_cli("inspect", fixtures_dir / "saver_run", "--debug")
    assert debug.exit_code == 70 and "Traceback" in debug.stderr
    monkeypatch.setenv("CKPTTOOL_DEBUG", "1")
    assert "Traceback" in run_cli("inspect", fixtures_dir / "saver_run").stderr


def test_usage_error_exit_2():
    assert run_cli("inspect").exit_code == 2
    assert run_cli("ls", "--no-such-option", ".").exit_code == 2


def test_file_system_refusal_is_one_line_not_a_bug(copy_fixture, monkeypatch):
    """Permission denied or a full disk is the environment's answer: exit 3, not internal error 70."""
    import ckpttool.ops.retention.prune as prune_ops

    run = copy_fixture("saver_run")

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(prune_ops.os, "unlink", denied)
    result = run_cli("prune", "--yes", "--keep-last", "1", run)
    assert_one_line_error(result, 3)
    assert "Permission denied" in result.stderr
    monkeypatch.undo()
    assert run_cli("prune", "--yes", "--keep-last", "1", run).exit_code == 0  # the journal finishes the job
