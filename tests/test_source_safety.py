"""Safe as root, everywhere (issue 16): a command never writes over a file it reads, whatever
name reaches it (a symlink, a file:// URL, a protocol alias such as s3a:// or gcs://); freeze
never runs code a graph brings; reserved names are refused as new names. TensorFlow-written
fixtures throughout, and TensorFlow the oracle of what survives. Each test fails on the code
before its fix."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.test_rename_diff import assert_same_tensors, digest


# -- 13. the reserved name _CHECKPOINTABLE_OBJECT_GRAPH ------------------------------------------

@pytest.mark.parametrize("command", [["rename-vars"], ["convert", "--to", "tf"]])
def test_reserved_object_graph_name_is_refused_as_a_new_name(fixtures_dir, tmp_path, tf, command):
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    result = run_cli(*command, "--map", "dense/kernel=_CHECKPOINTABLE_OBJECT_GRAPH", src, tmp_path / "out")
    assert_one_line_error(result, 3)
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in result.stderr and "reserved" in result.stderr
    assert not list(tmp_path.iterdir())
    # The same map to any other name is fine, and TensorFlow restores the result.
    assert run_cli(*command, "--map", "dense/kernel=k", src, tmp_path / "ok").exit_code == 0
    assert_same_tensors(tf, src, tmp_path / "ok", {"dense/kernel": "k"})
