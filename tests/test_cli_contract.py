"""The command contract of DESIGN.md as a user meets it (issue 10): JSON error
documents, usage lines, option checks, destinations, messages."""
from __future__ import annotations

import json

import pytest

from tests.conftest import assert_one_line_error, run_cli, run_subprocess


def _error_document(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout  # one document, nothing else
    doc = json.loads(lines[0])
    assert doc["schema_version"] == 1
    return doc


@pytest.mark.parametrize("args,code,kind", [
    (["ls", "--json", "/nonexistent/run"], 3, "not_found"),
    (["inspect", "--json", "/nonexistent/run"], 3, "not_found"),
    (["prune", "--json", "--yes", "DIR"], 2, "usage_error"),
    (["prune", "--json", "--keep-last", "1", "DIR"], 4, "refused"),
    (["rename-vars", "--json", "--map", "nope=x", "DIR/model.ckpt-50", "OUT/x"], 3, "unknown_variable"),
])
def test_json_errors_are_one_document_on_stdout_too(copy_fixture, tmp_path, args, code, kind):
    run = copy_fixture("saver_run")
    args = [a.replace("DIR", str(run)).replace("OUT", str(tmp_path)) for a in args]
    result = run_cli(*args)
    assert_one_line_error(result, code)
    doc = _error_document(result.stdout)
    assert doc["command"] == args[0]
    assert doc["error"]["code"] == code and doc["error"]["kind"] == kind
    assert doc["error"]["message"] == result.stderr.splitlines()[0].removeprefix("error: ")


@pytest.mark.parametrize("args", [["ls", "--json", "--bogus", "x"], ["inspect", "--json"],
                                  ["export-json", "--json", "--part", "bogus", "x"]])
def test_json_usage_errors_are_documents_too(args):
    proc = run_subprocess(*args)
    assert proc.returncode == 2, proc.stderr
    doc = _error_document(proc.stdout)
    assert doc["command"] == args[0] and doc["error"]["kind"] == "usage_error" and doc["error"]["code"] == 2
    assert_one_line_error(proc, 2)
    assert f"hint: see `ckpttool {args[0]} --help`" in proc.stderr


def test_usage_errors_are_one_line_in_process_too():
    result = run_cli("ls", "--bogus", "x")
    assert_one_line_error(result, 2)
    assert result.stdout == ""
    unknown = run_cli("nope")
    assert_one_line_error(unknown, 2)
    assert "hint: see `ckpttool --help`" in unknown.stderr


def test_without_json_errors_leave_stdout_empty(copy_fixture):
    result = run_cli("ls", "/nonexistent/run")
    assert_one_line_error(result, 3)
    assert result.stdout == ""


# -- item 6: repair says one thing -------------------------------------------------------

def test_repair_of_an_empty_directory_says_nothing_to_repair(tmp_path):
    text = run_cli("repair", tmp_path)
    doc = run_cli("repair", "--json", tmp_path).json()
    assert text.exit_code == 0 and doc["changed"] is False and doc["changes"] == []
    assert text.stdout.strip() == f"{tmp_path}: {doc['summary']}"
    assert "nothing to repair" in doc["summary"]
    assert not (tmp_path / "checkpoint").exists()


# -- item 7: options are never silently ignored --------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_keep_every_hours_must_be_a_positive_number(copy_fixture, value):
    run = copy_fixture("prune_run")
    result = run_cli("prune", "--yes", "--keep-every-hours", value, run)
    assert_one_line_error(result, 2)
    assert "RuntimeWarning" not in result.stderr


def test_keep_step_that_no_checkpoint_has_is_warned_about(copy_fixture):
    run = copy_fixture("prune_run")
    result = run_cli("prune", "--dry-run", "--keep-step", "250", "--keep-step", "300", run)
    assert result.exit_code == 0
    assert "warning: --keep-step 250: no checkpoint has step 250" in result.stderr
    assert "--keep-step 300" not in result.stderr


# -- item 8: destinations ------------------------------------------------------------------

def test_rename_vars_creates_missing_directories_as_tensorflow_does(fixtures_dir, tmp_path, tf):
    dst = tmp_path / "new" / "deeper" / "model.ckpt-50"
    assert run_cli("rename-vars", "--dry-run", fixtures_dir / "saver_run" / "model.ckpt-50", dst).exit_code == 0
    assert not (tmp_path / "new").exists()
    result = run_cli("rename-vars", fixtures_dir / "saver_run" / "model.ckpt-50", dst)
    assert result.exit_code == 0, result.stderr
    assert tf.train.latest_checkpoint(str(dst.parent)) == str(dst)


def test_rename_vars_onto_a_directory_is_refused_naming_it(fixtures_dir, tmp_path):
    (tmp_path / "taken").mkdir()
    result = run_cli("rename-vars", "--overwrite", fixtures_dir / "saver_run" / "model.ckpt-50", tmp_path / "taken")
    assert_one_line_error(result, 4)
    assert str(tmp_path / "taken") in result.stderr and "directory" in result.stderr


def test_refused_rename_leaves_no_directory_behind(fixtures_dir, tmp_path):
    result = run_cli("rename-vars", "--strip-prefix", "model/", fixtures_dir / "tf2_manager" / "ckpt-3",
                     tmp_path / "out" / "x")
    assert_one_line_error(result, 3)
    assert "--strip-prefix model/ makes model the root" in result.stderr
    assert not (tmp_path / "out").exists()


# -- item 10: re-rooting a TF2 checkpoint --------------------------------------------------

def test_keep_and_strip_prefix_reroots_a_tf2_checkpoint(fixtures_dir, tmp_path, tf):
    import numpy as np

    from tests.test_rename_diff import _dense

    src = fixtures_dir / "tf2_manager" / "ckpt-3"
    dst = tmp_path / "rerooted"
    result = run_cli("rename-vars", "--keep", "^model/", "--strip-prefix", "model/", src, dst)
    assert result.exit_code == 0, result.stderr
    source = tf.train.load_checkpoint(str(src))
    dense1, dense2, weird = _dense(tf, 4, 3), _dense(tf, 3, 2), tf.Variable(tf.zeros(2))
    checkpoint = tf.train.Checkpoint(dense1=dense1, dense2=dense2, **{"we.ird/name": weird})
    checkpoint.read(str(dst)).assert_consumed()  # read(): no save_counter of its own
    np.testing.assert_array_equal(dense1.kernel.numpy(),
                                  source.get_tensor("model/dense1/kernel/.ATTRIBUTES/VARIABLE_VALUE"))
    np.testing.assert_array_equal(weird.numpy(), source.get_tensor("model/we..ird.Sname/.ATTRIBUTES/VARIABLE_VALUE"))
