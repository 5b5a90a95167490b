"""The command contract of DESIGN.md as a user meets it (issue 10): JSON error
documents, usage lines, option checks, destinations, messages."""
from __future__ import annotations

import json
import os
import re
import shutil

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


# -- item 4: JSON conventions --------------------------------------------------------------

def test_directory_is_given_as_the_user_gave_it(copy_fixture, monkeypatch):
    run = copy_fixture("prune_run")
    monkeypatch.chdir(run.parent)
    for args in (["ls"], ["latest"], ["prune", "--dry-run", "--keep-last", "2"], ["repair", "--dry-run"],
                 ["verify", "--all"]):
        doc = run_cli(*args, "--json", "prune_run").json()
        assert doc["directory"] == "prune_run", (args, doc)
    listing = run_cli("ls", "--json", "prune_run").json()
    assert all(c["prefix"] == str(run / c["name"]) for c in listing["checkpoints"])  # prefixes stay absolute
    repaired = run_cli("repair", "--json", "prune_run").json()
    assert repaired["backup"] in (None, "prune_run/checkpoint.bak")
    tree = run_cli("ls", "--json", "-r", ".").json()
    assert [d["directory"] for d in tree["directories"]] == ["./prune_run"]


# -- item 5: ls lists what latest and repair act on; latest --complete -------------------------

def test_ls_lists_a_missing_state_file_and_checkpoints_missing_from_it(copy_fixture, tf):
    run = copy_fixture("tf2_manager")
    for suffix in (".index", ".data-00000-of-00001"):  # a restarted job's orphan
        shutil.copy(run / f"ckpt-2{suffix}", run / f"ckpt-1{suffix}")
    state = tf.train.get_checkpoint_state(str(run))
    orphans = {"ckpt-1"} - {os.path.basename(p) for p in state.all_model_checkpoint_paths}
    problems = run_cli("ls", "--json", run).json()["problems"]
    assert {os.path.basename(p["path"]) for p in problems if p["kind"] == "not_in_state"} == orphans
    assert "not_in_state: ckpt-1" in run_cli("ls", run).stdout
    assert run_cli("repair", run).exit_code == 0  # what repair acts on ...
    assert "ckpt-1" in {os.path.basename(p) for p in tf.train.get_checkpoint_state(str(run)).all_model_checkpoint_paths}
    assert run_cli("ls", "--json", run).json()["problems"] == []  # ... is no problem once repaired
    os.remove(run / "checkpoint")
    assert tf.train.latest_checkpoint(str(run)) is None
    (problem,) = run_cli("ls", "--json", run).json()["problems"]
    assert problem["kind"] == "no_state_file" and problem["path"] == str(run / "checkpoint")


def test_other_state_files_keep_their_own_families(fixtures_dir):
    """best.ckpt-N of a Saver(latest_filename="best_checkpoint") are not orphans of `checkpoint`."""
    problems = run_cli("ls", "--json", fixtures_dir / "prune_run").json()["problems"]
    assert problems == []


def test_latest_warns_when_incomplete_and_complete_gives_the_newest_complete(copy_fixture, tf):
    run = copy_fixture("tf2_manager")
    os.remove(run / "ckpt-3.data-00000-of-00001")
    assert tf.train.latest_checkpoint(str(run)) == str(run / "ckpt-3")  # TensorFlow looks at the index only
    with pytest.raises(Exception):
        tf.train.load_checkpoint(str(run / "ckpt-3")).get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    plain = run_cli("latest", run)
    assert plain.exit_code == 0 and plain.stdout.strip() == str(run / "ckpt-3")
    assert "warning: the latest checkpoint is incomplete" in plain.stderr and "--complete" in plain.stderr
    complete = run_cli("latest", "--complete", "--json", run)
    assert complete.exit_code == 0 and complete.json()["latest"] == str(run / "ckpt-2")
    reader = tf.train.load_checkpoint(complete.json()["latest"])
    for name, _shape in tf.train.list_variables(complete.json()["latest"]):
        reader.get_tensor(name)  # every tensor of the answer reads
    os.remove(run / "ckpt-2.data-00000-of-00001")
    none = run_cli("latest", "--complete", run)
    assert none.exit_code == 1 and none.stdout == ""


# -- item 7: options never silently ignored --------------------------------------------------

@pytest.mark.parametrize("option,value", [("--atol", "nan"), ("--atol", "inf"), ("--rtol", "-inf"),
                                          ("--rtol", "-1e-3"), ("--atol", "-0.5")])
def test_tolerances_must_be_finite_and_not_negative(fixtures_dir, option, value):
    run = fixtures_dir / "saver_run"
    proc = run_subprocess("diff", option, value, run / "model.ckpt-40", run / "model.ckpt-50")
    assert_one_line_error(proc, 2)
    assert option in proc.stderr and "RuntimeWarning" not in proc.stderr and proc.stdout == ""


def test_latest_absolute_and_step_are_exclusive(fixtures_dir):
    result = run_cli("latest", "--absolute", "--step", fixtures_dir / "tf2_manager")
    assert_one_line_error(result, 2)
    assert "--absolute" in result.stderr and "--step" in result.stderr


def test_a_filter_that_matches_nothing_is_warned_about(fixtures_dir):
    result = run_cli("inspect", "-f", "no_such_thing", fixtures_dir / "saver_run" / "model.ckpt-50")
    assert result.exit_code == 0
    assert result.stderr == "warning: --filter 'no_such_thing' matches no variable\n"
    matching = run_cli("inspect", "-f", "kernel", fixtures_dir / "saver_run" / "model.ckpt-50")
    assert matching.stderr == ""


# -- item 9: verify --all / --recursive ------------------------------------------------------

def test_verify_all_checks_every_checkpoint_with_one_summary(copy_fixture, tf, monkeypatch):
    from ckpttool.formats.tf.bundle import open_bundle
    from tests.test_damage import _flip, _tf_damaged

    run = copy_fixture("saver_run")
    with open_bundle(str(run / "model.ckpt-40")) as bundle:
        parts = {v.name: v.parts[0] for v in bundle.variables}
    _flip(run / "model.ckpt-40.data-00000-of-00001", parts["embedding"].offset + 2)
    damaged = _tf_damaged(tf, str(run / "model.ckpt-40"), parts)
    assert run_cli("verify", run).exit_code == 0  # the latest alone is fine
    monkeypatch.chdir(run.parent)
    result = run_cli("verify", "--all", "--json", "saver_run")
    assert result.exit_code == 1
    doc = result.json()
    names = [os.path.basename(p) for p in tf.train.get_checkpoint_state(str(run)).all_model_checkpoint_paths]
    assert doc["directory"] == "saver_run" and doc["ok"] is False and doc["num_checkpoints"] == len(names)
    assert [c["checkpoint"] for c in doc["checkpoints"]] == [f"saver_run/{n}" for n in names]
    assert {c["checkpoint"]: c["ok"] for c in doc["checkpoints"]} == {
        f"saver_run/{n}": n != "model.ckpt-40" for n in names}
    (bad,) = [c for c in doc["checkpoints"] if not c["ok"]]
    assert {e["name"] for e in bad["errors"]} == damaged
    assert doc["damaged"] == 1 and doc["checked_tensors"] == sum(c["checked_tensors"] for c in doc["checkpoints"])
    human = run_cli("verify", "--all", "saver_run")
    assert human.exit_code == 1
    assert human.stdout.splitlines()[-1].startswith(f"DAMAGED: 1 of {len(names)} checkpoints in saver_run: ")
    tree = run_cli("verify", "--recursive", "--json", ".").json()
    assert [c["checkpoint"] for c in tree["checkpoints"]] == [f"./saver_run/{n}" for n in names]
    assert_one_line_error(run_cli("verify", "--all", "saver_run/model.ckpt-50.index"), 3)


# -- item 10: inspect --name -----------------------------------------------------------------

def test_inspect_name_selects_exact_names(fixtures_dir, tf):
    from tests.oracle import assert_value_matches

    prefix = str(fixtures_dir / "tf2_manager" / "ckpt-3")
    reader = tf.train.load_checkpoint(prefix)
    wanted = ["model/dense1/kernel/.ATTRIBUTES/VARIABLE_VALUE", "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
              "_CHECKPOINTABLE_OBJECT_GRAPH"]  # an exact name shows an internal entry too
    doc = run_cli("inspect", "--json", "--values", *[a for n in wanted for a in ("--name", n)], prefix).json()
    assert sorted(v["name"] for v in doc["variables"]) == sorted(wanted)
    for v in doc["variables"]:
        assert_value_matches(v["value"], reader.get_tensor(v["name"]), v["dtype"], v["name"])
    both = run_cli("inspect", "-q", "--name", wanted[1], "-f", "dense2", prefix).stdout.split()
    assert set(both) == {wanted[1]} | {n for n, _ in tf.train.list_variables(prefix) if "dense2" in n}


def test_inspect_name_that_does_not_exist_names_it_and_close_ones(fixtures_dir):
    result = run_cli("inspect", "--name", "model/dense1/kernel", fixtures_dir / "tf2_manager" / "ckpt-3")
    assert_one_line_error(result, 3)
    assert "'model/dense1/kernel'" in result.stderr.splitlines()[0]
    assert "did you mean 'model/dense1/kernel/.ATTRIBUTES/VARIABLE_VALUE'" in result.stderr
    assert run_cli("inspect", "--json", "--name", "nope", fixtures_dir / "saver_run").json()["error"]["kind"] == \
        "unknown_variable"


# -- item 11: what a path is -----------------------------------------------------------------

@pytest.mark.parametrize("command", ["ls", "latest", "prune", "repair"])
def test_a_file_where_a_directory_is_wanted_says_so(fixtures_dir, command):
    index = fixtures_dir / "saver_run" / "model.ckpt-50.index"
    args = [command, index] if command != "prune" else [command, "--keep-last", "1", "--dry-run", index]
    result = run_cli(*args)
    assert_one_line_error(result, 3)
    assert f"error: {index} is a file, not a directory" in result.stderr
    assert f"hint: did you mean `ckpttool inspect {index}`?" in result.stderr
    state = run_cli(command if command != "prune" else "ls", fixtures_dir / "saver_run" / "checkpoint")
    assert_one_line_error(state, 3)
    assert f"did you mean `ckpttool {command if command != 'prune' else 'ls'} {fixtures_dir / 'saver_run'}`" \
        in state.stderr


def test_the_state_file_as_a_target_is_its_latest_checkpoint(fixtures_dir, tf):
    run = fixtures_dir / "tf2_manager"
    result = run_cli("inspect", "--json", run / "checkpoint")
    assert result.exit_code == 0
    assert result.json()["checkpoint"] == tf.train.latest_checkpoint(str(run))
    assert result.stderr.splitlines()[0] == f"{run / 'checkpoint'} -> {tf.train.latest_checkpoint(str(run))}"
    assert run_cli("verify", run / "checkpoint").exit_code == 0


def test_hdf5_and_zip_files_are_named_for_what_they_are(tmp_path):
    import zipfile

    import h5py

    with h5py.File(tmp_path / "model.h5", "w") as handle:  # a Keras 2 style full model
        handle["model_weights/dense/kernel:0"] = [[1.0]]
    result = run_cli("inspect", tmp_path / "model.h5")
    assert_one_line_error(result, 3)
    assert "is an HDF5 file, not a TensorFlow checkpoint" in result.stderr and ".weights.h5" in result.stderr
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as archive:  # how torch.save lays a zip out
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/version", b"3\n")
    result = run_cli("inspect", tmp_path / "model.pt")  # a PyTorch file is read (issue 28): this one is empty
    assert_one_line_error(result, 3)
    assert "model.pt holds no tensor" in result.stderr
    with zipfile.ZipFile(tmp_path / "other.bin", "w") as archive:
        archive.writestr("readme.txt", b"hello")
    assert "is a zip archive, not a TensorFlow checkpoint" in run_cli("inspect", tmp_path / "other.bin").stderr


# -- item 13: no internal names in messages ----------------------------------------------------

def test_messages_from_protobuf_name_no_internal_types(copy_fixture, tf):
    run = copy_fixture("tf2_manager")
    (run / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\ngarbage: 1\n')
    assert tf.train.get_checkpoint_state(str(run)) is None  # TensorFlow cannot read it either
    result = run_cli("ls", "--json", run)
    (problem,) = [p for p in result.json()["problems"] if p["kind"] == "bad_state_file"]
    assert problem["message"].endswith("line 2: unknown field") and "garbage" not in problem["message"]
    meta = copy_fixture("saver_run") / "model.ckpt-50.meta"
    meta.write_bytes(b"\xff" * 64)
    broken = run_cli("inspect", "--meta", meta.with_suffix(""))
    assert_one_line_error(broken, 3)
    for text in (problem["message"], broken.stderr):
        assert "ckpttool." not in text and "Message type" not in text and "Error parsing" not in text


# -- going a step further: sizes per run directory and in total --------------------------------

def _checkpoint_bytes(directory) -> int:
    """What the checkpoints' files take on disk, by their names (as TensorFlow writes them)."""
    names = os.listdir(directory)
    return sum(os.path.getsize(os.path.join(directory, n)) for n in names
               if re.search(r"\.(index|meta|data-\d{5}-of-\d{5})$", n))


def test_ls_and_prune_recursive_give_sizes_per_directory_and_a_total(copy_fixture, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    for name in ("prune_run", "tf2_many"):
        shutil.move(str(copy_fixture(name)), root / name)
    sizes = {f"{root}/{n}": _checkpoint_bytes(root / n) for n in ("prune_run", "tf2_many")}
    doc = run_cli("ls", "--json", "-r", root).json()
    assert {d["directory"]: d["size_bytes"] for d in doc["directories"]} == sizes
    assert doc["total_bytes"] == sum(sizes.values())
    text = run_cli("ls", "-r", root).stdout.splitlines()
    from ckpttool.cli.render import human_bytes

    assert text[-1] == (f"2 run directories, {doc['num_checkpoints']} checkpoints, "
                        f"{human_bytes(sum(sizes.values()))} in total")
    plan = run_cli("prune", "--json", "-r", "--dry-run", "--keep-last", "1", root).json()
    freed = {d["directory"]: sum(x["size_bytes"] for x in d["deleted"]) for d in plan["directories"]}
    assert plan["freed_bytes"] == sum(freed.values()) and set(freed) == set(sizes)
    applied = run_cli("prune", "--json", "-r", "--yes", "--keep-last", "1", root).json()
    assert applied["freed_bytes"] == plan["freed_bytes"]
    after = {f"{root}/{n}": _checkpoint_bytes(root / n) for n in ("prune_run", "tf2_many")}
    assert {d: sizes[d] - after[d] for d in sizes} == freed  # what it said it freed is what went
    summary = run_cli("prune", "-r", "--dry-run", "--keep-last", "1", root).stdout.splitlines()[-1]
    assert summary == "2 run directories: 0 to delete, " + f"{applied['kept_count']} kept, 0 B would be freed"
