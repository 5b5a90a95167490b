"""What a new user and real files trip on (issue 18): bare relative targets, stray shards beside a
SavedModel, files named for another format, lone graphs, unreachable buckets, converted metadata."""
from __future__ import annotations

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
