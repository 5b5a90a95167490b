"""Attack tests of the cut-short data changes (a TF checkpoint whose data shard is shorter than its
index says: TensorFlow cannot restore it). TensorFlow is the oracle: a checkpoint is restorable when
tf.train.load_checkpoint reads every tensor it lists."""
from __future__ import annotations

import json
import os
import shutil
import uuid

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.remote_servers import upload_tree
from tests.test_bucket_prune_batches import logged_s3  # noqa: F401 - a fixture
from tests.test_remote import servers  # noqa: F401 - a fixture (the suite's S3 server and GCS emulator)


def _restorable(tf, prefix: str) -> bool:
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception:  # TensorFlow's verdict, whatever it raises
        return False
    return True


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_prune_keep_best_keeps_the_best_checkpoint_tensorflow_restores(tf, tmp_path, request, where):
    """The best-scored checkpoint is cut short: `latest --best` passes over it to the best one
    TensorFlow restores; prune --keep-best 1 must not delete that one while keeping, as "best", one
    TensorFlow cannot restore (it did: the only restorable best went, the cut one stayed). In a
    bucket the plan applied with --yes is batched, its newest index left to the apply."""
    run = tmp_path / "run"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(np.ones(100, np.float32))),
                                         str(run), max_to_keep=None)
    for _ in range(4):
        manager.save()
    prefixes = list(manager.checkpoints)
    os.truncate(prefixes[2] + ".data-00000-of-00001", 5)  # ckpt-3, the best scored
    metrics = tmp_path / "m.jsonl"
    losses = {1: 9.0, 2: 5.0, 3: 3.0, 4: 8.0}
    metrics.write_text("".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in losses.items()))
    # TensorFlow's answer: the lowest loss among the checkpoints it restores.
    restorable = [p for p in prefixes if _restorable(tf, p)]
    best = min(restorable, key=lambda p: losses[int(p.rsplit("-", 1)[1])])
    target = str(run)
    if where == "bucket":
        target = upload_tree(request.getfixturevalue("logged_s3"), str(run), f"best-{uuid.uuid4().hex[:8]}")
    chosen = run_cli("latest", "--best", "--metric", "loss", "--metrics", str(metrics), target)
    assert chosen.exit_code == 0 and os.path.basename(chosen.stdout.strip()) == os.path.basename(best), chosen.stderr
    done = run_cli("prune", "--keep-best", "1", "--metric", "loss", "--metrics", str(metrics),
                   "--keep-last", "1", "--yes", target)
    assert done.exit_code == 0, done.stderr
    if where == "bucket":  # what is left in the bucket, brought back for TensorFlow to read
        shutil.rmtree(run)
        from ckpttool.storage import remote
        remote.filesystem("s3").get(remote.split_url(target)[1] + "/", str(run) + "/", recursive=True)
    assert _restorable(tf, best), done.stdout  # still there, and TensorFlow still restores it


def _rewrite_entries(prefix: str, change) -> None:
    """Rewrite `prefix.index` with `change(entry)` applied to each entry (TensorFlow's own proto)."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    from ckpttool.formats.tf.table import build_table, read_table_file

    items = read_table_file(prefix + ".index", "checkpoint index")
    rewritten = [items[0]]
    for key, value in items[1:]:
        entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
        change(entry)
        rewritten.append((key, entry.SerializeToString(deterministic=True)))
    with open(prefix + ".index", "wb") as handle:
        handle.write(build_table(rewritten))


def test_a_zero_size_tensor_placed_past_the_shard_end_is_not_cut_short(tf, tmp_path):
    """An empty tensor's entry says where its zero bytes are; TensorFlow reads none of them, so an
    offset past the shard's end does not stop it restoring the checkpoint: latest --complete must
    not pass over it (it did: furthest_ends counted offset + 0 as an end)."""
    values = {"v": tf.Variable(np.ones(10, np.float32)), "empty": tf.Variable(np.zeros((0, 3), np.float32))}
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(**values), str(tmp_path), max_to_keep=None)
    for _ in range(2):
        manager.save()
    newest = manager.checkpoints[-1]

    def far(entry):
        if entry.size == 0 and not entry.slices:
            entry.offset = 10**6
    _rewrite_entries(newest, far)
    assert _restorable(tf, newest)
    doc = run_cli("latest", "--complete", str(tmp_path))
    assert (doc.exit_code, doc.stdout.strip()) == (0, newest), doc.stderr
