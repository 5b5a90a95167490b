"""`latest --complete` (and `latest`'s newest complete checkpoint on disk, without a state file)
never names a TF checkpoint whose data shard is shorter than its index says (a full disk, a copy
cut short: every file is there, TensorFlow cannot restore it), locally and in a bucket: it walks
down to the newest one TensorFlow restores, or exits 1 when there is none. TensorFlow is the
oracle: each run is CheckpointManager's, each checkpoint judged by Checkpoint.restore(...)
.assert_consumed(); a string variable whose value grows at the last save makes the newest shard
longer than the others, so it is also cut to exactly an older shard's size. Without --complete, a
state file's entry is still TensorFlow's own answer (tf.train.latest_checkpoint), read from no
index; the quick path prints the same bytes as Typer."""
from __future__ import annotations

import os
import shutil
import uuid

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.remote_servers import upload_tree
from tests.test_bucket_prune_batches import _requests_of, logged_s3  # noqa: F401 - a fixture
from tests.test_quick_path import _quick
from tests.test_remote import servers  # noqa: F401 - a fixture (the suite's S3 server and GCS emulator)

CASES = ["newest_cut", "string_cut_to_older_size", "every_one_cut"]


def _objects(tf, string: bool):
    values = {"v": tf.Variable(np.zeros(256, np.float32))}
    if string:
        values["s"] = tf.Variable("y" * 50)
    return values


def _manager_run(tf, directory, case: str) -> list[str]:
    """Three CheckpointManager saves, then the data shards cut as `case` says; the prefixes, oldest first
    (the manager's own list)."""
    string = case == "string_cut_to_older_size"
    values = _objects(tf, string)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(**values), str(directory), max_to_keep=None)
    for step in (1, 2, 3):
        values["v"].assign(np.full(256, step, np.float32))
        if string:
            values["s"].assign("y" * (50 if step < 3 else 90))  # the newest shard grows
        manager.save()
    prefixes = list(manager.checkpoints)
    shard = "{}.data-00000-of-00001".format
    if case == "newest_cut":
        os.truncate(shard(prefixes[-1]), os.path.getsize(shard(prefixes[-1])) - 7)
    elif string:
        older = os.path.getsize(shard(prefixes[-2]))
        assert os.path.getsize(shard(prefixes[-1])) > older
        os.truncate(shard(prefixes[-1]), older)
    else:
        for prefix in prefixes:
            os.truncate(shard(prefix), os.path.getsize(shard(prefix)) - 7)
    return prefixes


def _restorable(tf, prefix: str, string: bool) -> bool:
    try:
        tf.train.Checkpoint(**_objects(tf, string)).restore(prefix).assert_consumed()
    except Exception:  # TensorFlow's verdict, whatever it raises
        return False
    return True


def _tensorflow_newest_whole(tf, prefixes: list[str], case: str) -> str | None:
    """The newest checkpoint TensorFlow restores, by name."""
    string = case == "string_cut_to_older_size"
    return next((os.path.basename(p) for p in reversed(prefixes) if _restorable(tf, p, string)), None)


@pytest.fixture
def run(tf, tmp_path, request):
    case = request.param
    directory = tmp_path / "run"
    prefixes = _manager_run(tf, directory, case)
    return directory, prefixes, _tensorflow_newest_whole(tf, prefixes, case)


def _answer(doc) -> str | None:
    latest = doc.json()["latest"]
    return None if latest is None else os.path.basename(latest)


@pytest.mark.parametrize("run", CASES, indirect=True)
@pytest.mark.parametrize("state_file", ["kept", "removed"])
def test_latest_complete_names_the_newest_checkpoint_tensorflow_restores(tf, run, state_file):
    directory, prefixes, expected = run
    if state_file == "removed":
        os.remove(directory / "checkpoint")
    doc = run_cli("latest", "--complete", "--json", str(directory))
    assert _answer(doc) == expected
    assert doc.exit_code == (0 if expected is not None else 1), doc.stderr
    if expected != os.path.basename(prefixes[-1]):
        assert "cut short" in doc.stderr  # says why the newer ones were passed over
    plain = run_cli("latest", "--json", str(directory))
    if state_file == "kept":  # the state file's entry: TensorFlow's own answer, as before
        assert plain.exit_code == 0, plain.stderr
        assert plain.json()["latest"] == tf.train.latest_checkpoint(str(directory))
    else:  # the newest complete checkpoint on disk, as --complete finds it
        assert (_answer(plain), plain.exit_code) == (expected, doc.exit_code)


@pytest.mark.parametrize("run", CASES, indirect=True)
def test_the_quick_path_prints_what_typer_prints(run):
    directory = run[0]
    for argv in (["latest", "--complete", str(directory)], ["latest", "--complete", "--json", str(directory)],
                 ["latest", "--complete", "--step", str(directory)]):
        typer = run_cli(*argv)
        assert _quick(argv) == (typer.exit_code, typer.stdout, typer.stderr), argv


def test_a_whole_newest_is_answered_with_its_own_index_read_once(tf, tmp_path, monkeypatch):
    """The common case: the newest's data is whole, one index is read, and nothing is passed over."""
    from ckpttool.ops.runs import wholeness
    from ckpttool.ops.runs.latest import find_latest

    values = _objects(tf, False)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(**values), str(tmp_path), max_to_keep=None)
    for _ in range(3):
        manager.save()
    opened = []
    real = wholeness.shard_ends
    monkeypatch.setattr(wholeness, "shard_ends", lambda prefix: opened.append(prefix) or real(prefix))
    result = find_latest(str(tmp_path), complete=True)
    assert result.prefix == os.path.abspath(tf.train.latest_checkpoint(str(tmp_path)))
    assert opened == [result.prefix] and result.warnings == ()
    opened.clear()
    assert find_latest(str(tmp_path)).prefix == result.prefix and opened == []  # no --complete: no index read


def _index_reads(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("GET ") and ".index" in line]


@pytest.mark.parametrize("case", CASES + ["whole"])
def test_in_a_bucket_too(logged_s3, tmp_path, tf, case):  # noqa: F811
    """The same runs uploaded to moto's S3 server: the same answer as TensorFlow's; a whole newest
    costs one index read, each checkpoint found cut short one more."""
    directory = tmp_path / "run"
    if case == "whole":
        values = _objects(tf, False)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(**values), str(directory), max_to_keep=None)
        prefixes = [manager.save() for _ in range(3)]
        expected = _tensorflow_newest_whole(tf, prefixes, case)
    else:
        prefixes = _manager_run(tf, directory, case)
        expected = _tensorflow_newest_whole(tf, prefixes, case)
    url = upload_tree(logged_s3, str(directory), f"cut-{uuid.uuid4().hex[:8]}")
    result = {}
    lines = _requests_of(logged_s3, lambda: result.update(doc=run_cli("latest", "--complete", "--json", url)))
    doc = result["doc"]
    assert _answer(doc) == expected
    assert doc.exit_code == (0 if expected is not None else 1), doc.stderr
    passed_over = len(prefixes) - ([os.path.basename(p) for p in prefixes].index(expected)
                                   if expected is not None else -1) - 1
    assert len(_index_reads(lines)) == passed_over + (1 if expected is not None else 0), lines
    local = tmp_path / "again"
    shutil.copytree(directory, local)
    assert _answer(run_cli("latest", "--complete", "--json", str(local))) == expected


@pytest.mark.parametrize("fixture", ["partitioned", "sharded", "max_shard", "every_dtype", "tf2_manager"])
def test_shard_ends_are_where_tensorflow_ended_each_shard(fixtures_dir, fixture):
    """What the whole-data check reads from an index, against the shards TensorFlow wrote (each ends
    with its last tensor): partitioned variables (their slices hold the bytes), several shards,
    a variable split across shards, every dtype (strings' bytes their values')."""
    from ckpttool.formats.tf.shards import data_file_path, shard_ends

    indexes = sorted((fixtures_dir / fixture).rglob("*.index"))
    assert indexes
    for index in indexes:
        prefix = str(index)[:-len(".index")]
        num_shards, ends = shard_ends(prefix)
        written = {i: os.path.getsize(data_file_path(prefix, i, num_shards)) for i in range(num_shards)}
        assert ends == {i: size for i, size in written.items() if size}, prefix
