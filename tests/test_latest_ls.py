"""`latest` agrees with tf.train.latest_checkpoint, and keeps answering where
TensorFlow gives up; `ls` shows everything a crashed or moved run leaves."""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone

import pytest

from tests.conftest import run_cli

RUN_DIRS = ["saver_run", "sharded", "partitioned", "tf2_manager", "v1_format", "ema_run"]


@pytest.mark.parametrize("name", RUN_DIRS)
def test_latest_prints_what_tensorflow_returns(fixtures_dir, tf, name):
    directory = str(fixtures_dir / name)
    expected = tf.train.latest_checkpoint(directory)
    assert expected is not None
    result = run_cli("latest", directory)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == expected
    assert result.stderr == ""
    doc = run_cli("latest", "--json", directory).json()
    assert doc["latest"] == expected and doc["source"] == "state"


def test_latest_relative_directory_matches_tensorflow(fixtures_dir, tf, monkeypatch):
    monkeypatch.chdir(fixtures_dir)
    assert run_cli("latest", "tf2_manager/").stdout.strip() == tf.train.latest_checkpoint("tf2_manager/")
    assert run_cli("latest", "--step", "tf2_manager").stdout.strip() == "3"
    assert run_cli("latest", "--absolute", "tf2_manager").stdout.strip() == str(fixtures_dir / "tf2_manager" / "ckpt-3")


def test_latest_after_directory_moved(copy_fixture, tmp_path, tf):
    run = copy_fixture("saver_run")  # its state file holds absolute paths into the fixture dir
    moved = tmp_path / "elsewhere"
    shutil.move(str(run), moved)
    state = (moved / "checkpoint").read_text()
    assert str(moved) not in state
    result = run_cli("latest", "--json", moved)
    assert result.exit_code == 0
    doc = result.json()
    assert doc["source"] == "relocated" and doc["latest"] == str(moved / "model.ckpt-50")
    assert "warning:" in result.stderr
    tf.train.load_checkpoint(doc["latest"])  # what we name really is a checkpoint


def test_latest_without_state_file(copy_fixture):
    run = copy_fixture("saver_run")
    os.remove(run / "checkpoint")
    result = run_cli("latest", "--json", run)
    assert result.exit_code == 0 and result.json()["latest"] == str(run / "model.ckpt-50")
    assert result.json()["source"] == "scan" and "no state file" in result.stderr


def test_latest_with_garbage_state_file(copy_fixture, tf):
    run = copy_fixture("tf2_manager")
    (run / "checkpoint").write_bytes(b"\x00\xffthis is { not a state file")
    with pytest.raises(Exception):
        tf.train.latest_checkpoint(str(run))
    result = run_cli("latest", run)
    assert result.exit_code == 0 and result.stdout.strip() == str(run / "ckpt-3")
    assert "warning:" in result.stderr and "unparseable" in result.stderr


def test_latest_exit_1_when_no_checkpoint(tmp_path):
    result = run_cli("latest", tmp_path)
    assert result.exit_code == 1 and result.stdout == ""
    assert run_cli("latest", "--json", tmp_path).json()["latest"] is None


def test_ls_json_shape_and_order(fixtures_dir):
    doc = run_cli("ls", "--json", fixtures_dir / "saver_run").json()
    assert doc["command"] == "ls" and doc["latest"] == "model.ckpt-50"
    assert [c["name"] for c in doc["checkpoints"]] == ["model.ckpt-30", "model.ckpt-40", "model.ckpt-50"]
    first = doc["checkpoints"][0]
    assert set(first) == {"name", "prefix", "step", "format", "size_bytes", "num_shards", "complete", "has_meta",
                          "in_state", "is_latest", "mtime", "mtime_epoch", "timestamp", "timestamp_epoch"}
    assert first["prefix"] == str(fixtures_dir / "saver_run" / "model.ckpt-30")
    assert first["complete"] and first["has_meta"] and first["in_state"] and first["step"] == 30
    assert first["mtime"].endswith("Z")
    # Every time twice: ISO-8601 UTC text and Unix seconds (issue 10 item 4).
    newest = max(os.stat(f).st_mtime for f in (fixtures_dir / "saver_run").glob("model.ckpt-30.*")
                 if not str(f).endswith(".meta"))
    assert first["mtime_epoch"] == newest
    assert first["mtime"] == datetime.fromtimestamp(newest, timezone.utc).isoformat(timespec="seconds")[:19] + "Z"
    assert first["timestamp"] is None and first["timestamp_epoch"] is None  # a TF1 Saver records no save times
    assert doc["problems"] == []
    tf2 = run_cli("ls", "--json", fixtures_dir / "tf2_manager").json()
    assert all(c["timestamp"].endswith("Z") and c["timestamp_epoch"] for c in tf2["checkpoints"])  # Manager records them


def test_ls_shows_orphans_incomplete_temp_stale_and_outside(copy_fixture, tmp_path):
    run = copy_fixture("tf2_manager")
    # A restarted job's orphan: on disk, not in the state file.
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(run / f"ckpt-2{suffix}", run / f"ckpt-1{suffix}")
    # An interrupted save: data without index, and a leftover temp directory.
    shutil.copy(run / "ckpt-3.data-00000-of-00001", run / "ckpt-4.data-00000-of-00001")
    (run / "ckpt-5_temp").mkdir()
    (run / "ckpt-5_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    state = (run / "checkpoint").read_text()
    state = state.replace('all_model_checkpoint_paths: "ckpt-2"',
                          'all_model_checkpoint_paths: "../outside/x"\nall_model_checkpoint_paths: "/old/place/ckpt-2"')
    (run / "checkpoint").write_text(state)
    doc = run_cli("ls", "--json", run).json()
    by_name = {c["name"]: c for c in doc["checkpoints"]}
    assert by_name["ckpt-1"]["in_state"] is False and by_name["ckpt-1"]["complete"]
    assert by_name["ckpt-4"]["complete"] is False
    kinds = {p["kind"] for p in doc["problems"]}
    assert {"data_without_index", "temp_dir", "outside", "stale_path"} <= kinds
    human = run_cli("ls", run)
    assert "ckpt-1" in human.stdout and "problems:" in human.stdout
    assert run_cli("ls", "-q", run).stdout.split() == ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-4"]


def test_ls_missing_shard_is_incomplete(copy_fixture):
    run = copy_fixture("sharded")
    os.remove(run / "model.ckpt-1.data-00001-of-00002")
    doc = run_cli("ls", "--json", run).json()
    assert doc["checkpoints"][0]["complete"] is False
    assert any(p["kind"] == "missing_shards" for p in doc["problems"])


def test_ls_recursive(fixtures_dir):
    doc = run_cli("ls", "--json", "--recursive", fixtures_dir).json()
    dirs = {os.path.basename(d["directory"]) for d in doc["directories"]}
    assert {"saver_run", "tf2_manager", "v1_format"} <= dirs
    assert "variables" not in dirs  # SavedModel variables are not run directories


def test_ls_nonexistent_directory(tmp_path):
    from tests.conftest import assert_one_line_error

    assert_one_line_error(run_cli("ls", tmp_path / "nope"), 3)


def test_a_long_run_of_10000_checkpoints(tmp_path, tf):
    """What CheckpointManager(max_to_keep=None) leaves after a long run: every checkpoint
    in the state file with its save time, the file written by TensorFlow itself. The
    answers must be right (bench/bench_scale.py times 100,000 of them)."""
    import time

    from tensorflow.python.checkpoint import checkpoint_management

    count = 10_000
    one = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])).write(str(tmp_path / "source" / "one"))
    run = tmp_path / "run"
    run.mkdir()
    names = [f"ckpt-{step}" for step in range(1, count + 1)]
    for name in names:
        for suffix in (".index", ".data-00000-of-00001"):
            os.link(one + suffix, run / (name + suffix))
    now = time.time()
    checkpoint_management.update_checkpoint_state_internal(
        str(run), str(run / names[-1]), all_model_checkpoint_paths=[str(run / n) for n in names],
        all_model_checkpoint_timestamps=[now - count + i for i in range(count)],
        last_preserved_timestamp=now - count - 1, save_relative_paths=True)
    state = tf.train.get_checkpoint_state(str(run))
    assert run_cli("latest", run).stdout.strip() == tf.train.latest_checkpoint(str(run))
    doc = run_cli("ls", "--json", run).json()
    assert [c["name"] for c in doc["checkpoints"]] == names and doc["latest"] == names[-1]
    assert [c["timestamp_epoch"] for c in doc["checkpoints"]] == list(state.all_model_checkpoint_timestamps)
    assert all(c["in_state"] and c["complete"] for c in doc["checkpoints"]) and doc["problems"] == []
    plan = run_cli("prune", "--dry-run", "--json", "--keep-last", "5", run).json()
    assert [k["name"] for k in plan["kept"]] == names[-5:] and len(plan["deleted"]) == count - 5
    os.remove(run / "checkpoint")  # every index looked at, none named by a state file
    scanned = run_cli("latest", "--json", run).json()
    assert scanned["latest"] == str(run / names[-1]) and scanned["source"] == "scan"
    assert len(run_cli("ls", "--json", run).json()["checkpoints"]) == count
