"""Adversarial checks of the fleet's batched apply (ops/retention/batches.py) against moto's S3
server: a plan changed after plan_prune made it (by a caller of the Python API, or by the budget)
is checked again before anything goes, and what it may not delete is left: TensorFlow's latest,
a file of no checkpoint, a save in progress the state file does not list yet. And a failed
start-up's run directory in a bucket holding a key never followed is kept whole."""
from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import uuid

import numpy as np
import pytest

from tests.remote_servers import BUCKET
from tests.test_remote import servers  # noqa: F401 - a fixture (the suite's S3 server and GCS emulator)


def _s3(servers):  # noqa: F811
    from ckpttool.storage import remote

    return remote.filesystem("s3")


def _upload(fs, local: str, prefix: str, names) -> None:
    for name in names:
        with open(os.path.join(local, name), "rb") as handle:
            fs.pipe_file(f"{prefix}/{name}", handle.read())


def _keys(fs, prefix: str) -> set[str]:
    return {name[len(prefix) + 1:] for name in fs.find(prefix, refresh=True) if not name.endswith("/")}


def _later_than(fs, prefix: str, key: str) -> None:
    """Wait until the server's clock has passed `key`'s LastModified (S3 lists whole seconds): an
    object written next is listed as newer. A readiness condition polled, not a timed sleep."""
    first = fs.info(f"{prefix}/{key}", refresh=True)["LastModified"]
    while True:
        fs.pipe_file(f"{prefix}/.clock", b"")
        if fs.info(f"{prefix}/.clock", refresh=True)["LastModified"] > first:
            fs.rm_file(f"{prefix}/.clock")
            return
        threading.Event().wait(0.05)


def _run(fixtures_dir, tmp_path, fs, first=()) -> tuple[str, str, str]:
    """TF's CheckpointManager run (six saves) copied to a fresh prefix, the files named in `first`
    uploaded a second before the others; (URL, bucket prefix, local copy)."""
    local = str(tmp_path / "run-a")
    shutil.copytree(fixtures_dir / "tf2_many", local)
    for source, target in dict(first).items():
        shutil.copyfile(os.path.join(local, source), os.path.join(local, target))
    prefix = f"{BUCKET}/attack-{uuid.uuid4().hex[:8]}/run-a"
    if first:
        _upload(fs, local, prefix, dict(first).values())
        _later_than(fs, prefix, next(iter(dict(first).values())))
    _upload(fs, local, prefix, sorted(set(os.listdir(local)) - set(dict(first).values())))
    return f"s3://{prefix}", prefix, local


@pytest.mark.parametrize("added", ["latest", "notes"])
def test_apply_prunes_checks_a_plan_changed_by_its_caller(servers, fixtures_dir, tmp_path, added):  # noqa: F811
    """A plan_prune plan with a deletion added by hand (TensorFlow's latest, or a user's file named
    as a file of a planned checkpoint): apply_prunes leaves it, as apply_prune does; the rest goes."""
    import tensorflow as tf

    import ckpttool
    from ckpttool.ops.retention.prune import Deletion

    fs = _s3(servers)
    url, prefix, local = _run(fixtures_dir, tmp_path, fs, first={"checkpoint": "notes.txt"})
    latest = os.path.basename(tf.train.latest_checkpoint(local))
    saves = [os.path.basename(p) for p in tf.train.get_checkpoint_state(local).all_model_checkpoint_paths]
    plan = ckpttool.plan_prune(url, keep_last=3)
    assert plan.batchable and {d.name for d in plan.deleted} == set(saves[:-3])
    if added == "latest":
        c = plan.scan.by_name(latest)
        extra = Deletion(c.name, c.step, c.size_bytes, "checkpoint", c.files)
    else:
        first = plan.deleted[0]
        extra = dataclasses.replace(first, paths=first.paths + (f"{url}/notes.txt",))
    changed = dataclasses.replace(plan, deleted=plan.deleted[1:] + (extra,) if added == "notes"
                                  else plan.deleted + (extra,))
    [result] = ckpttool.apply_prunes([changed])
    assert not isinstance(result, Exception), result
    keys = _keys(fs, prefix)
    assert "notes.txt" in keys
    assert {f"{latest}.index", f"{latest}.data-00000-of-00001"} <= keys
    assert not any(k.startswith(tuple(f"{name}." for name in saves[:-3])) for k in keys)
    fs.get(f"{prefix}/checkpoint", os.path.join(local, "checkpoint.after"))
    os.replace(os.path.join(local, "checkpoint.after"), os.path.join(local, "checkpoint"))
    assert os.path.basename(tf.train.latest_checkpoint(local)) == latest  # the state file still names it


def test_budget_deletion_of_an_unlisted_save_is_checked_under_the_lock(servers, fixtures_dir, tmp_path):  # noqa: F811
    """`prune -r --budget` through the API: a save the state file does not list (an older run's
    step 9, written before the latest) is taken by the budget; by apply time a writer saves step 9
    again, after the latest, and has not yet listed it. Applied from the plan's scan alone, the
    batch would delete the save in progress; checked under the lock, it is kept."""
    import tensorflow as tf

    import ckpttool

    fs = _s3(servers)
    orphan = {"ckpt-1.index": "ckpt-9.index", "ckpt-1.data-00000-of-00001": "ckpt-9.data-00000-of-00001"}
    url, prefix, local = _run(fixtures_dir, tmp_path, fs, first=orphan)
    saves = [os.path.basename(p) for p in tf.train.get_checkpoint_state(local).all_model_checkpoint_paths]
    assert "ckpt-9" not in saves
    plan = ckpttool.plan_prune(url, keep_last=5)
    assert plan.batchable
    [fitted], _outcome = ckpttool.fit_budget([plan], 0)
    assert "ckpt-9" in {d.name for d in fitted.deleted}
    _later_than(fs, prefix, f"{saves[-1]}.index")
    _upload(fs, local, prefix, orphan.values())  # the writer's save of step 9, not listed yet
    [result] = ckpttool.apply_prunes([fitted])
    assert not isinstance(result, Exception), result
    assert set(orphan.values()) <= _keys(fs, prefix)
    reader = tf.train.load_checkpoint(os.path.join(local, "ckpt-9"))
    fs.get(f"{prefix}/ckpt-9.index", os.path.join(local, "ckpt-9.index"))
    fs.get(f"{prefix}/ckpt-9.data-00000-of-00001", os.path.join(local, "ckpt-9.data-00000-of-00001"))
    again = tf.train.load_checkpoint(os.path.join(local, "ckpt-9"))
    names = reader.get_variable_to_shape_map()
    assert again.get_variable_to_shape_map() == names
    assert all(np.array_equal(again.get_tensor(k), reader.get_tensor(k)) for k in names)  # TF reads it whole


@pytest.mark.parametrize("hidden", ["train/../notes.txt", "train//notes.txt", "./notes.txt"])
def test_a_failed_run_holding_a_key_never_followed_is_kept(servers, series_dir, tmp_path, hidden):  # noqa: F811
    """A bucket run directory holding what a TF job writes at start-up (its step-0 checkpoint and
    event file), and a key its listings leave out (a `.`, `..` or empty segment): that key is
    anything else, which keeps the run and every file in it, as a link does on disk."""
    import ckpttool

    fs = _s3(servers)
    local = str(tmp_path / "tf_failed")
    shutil.copytree(series_dir / "fleet" / "tf_failed", local)
    prefix = f"{BUCKET}/attack-{uuid.uuid4().hex[:8]}/runs"
    names = [os.path.relpath(os.path.join(d, f), local) for d, _s, files in os.walk(local) for f in files]
    _upload(fs, local, f"{prefix}/run-f", names)
    fs.pipe_file(f"{prefix}/run-f/{hidden}", b"a user's notes")
    before = _keys(fs, prefix)
    plan = ckpttool.plan_failed_runs(f"s3://{prefix}", 0)
    assert not plan.dropped, plan.dropped
    assert [k.directory for k in plan.kept] == [f"s3://{prefix}/run-f"]
    assert ckpttool.apply_failed_runs(plan).dropped == ()
    assert _keys(fs, prefix) == before
