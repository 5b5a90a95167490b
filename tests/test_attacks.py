"""Adversarial review after issue 16: attacks that got through the fixes, each a test that failed
before its fix. Buckets against the moto S3 server and GCS emulator of tests/test_remote.py."""
from __future__ import annotations

import os

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.remote_servers import upload_tree
from tests.test_prune_repair import _many_checkpoint_dir, assert_tf_restores_latest
from tests.test_remote import fresh_prefix, servers, store  # noqa: F401 - the servers, as fixtures here
from tests.test_safety_buckets import _download_keys, _store_keys


# -- a key that a backend splits: s3fs reads `KEY?versionId=V` as object KEY (version V) ---------

def test_clean_never_deletes_the_key_a_version_suffix_names(store, fixtures_dir, tmp_path, tf):
    """`run/ckpt-4.index?versionId=x_temp/part-00000-of-00001.index` is a legal key and a `*_temp`
    debris part by name; s3fs splits every path at `?versionId=`, so deleting it deleted
    `run/ckpt-4.index`, the latest checkpoint's index."""
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 4)
    url = upload_tree(store, str(run), fresh_prefix("version"))
    from ckpttool.storage import remote
    fs = remote.filesystem(store.protocol)
    root = url.split("://", 1)[1]
    index = (run / "ckpt-4.index").read_bytes()
    hostile = "ckpt-4.index?versionId=x_temp/part-00000-of-00001.index"
    client_put(store, f"{root}/{hostile}", index)
    result = run_cli("prune", "--clean", "--min-age", "0s", "--keep-last", "1", "--yes", "--json", url)
    keys = _store_keys(store, url)
    assert {"ckpt-4.index", "ckpt-4.data-00000-of-00001", "checkpoint"} <= keys, (keys, result.stderr)
    assert result.exit_code == 0, result.stderr
    downloaded = tmp_path / "downloaded"
    _download_keys(store, url, ["checkpoint", "ckpt-4.index", "ckpt-4.data-00000-of-00001"], downloaded)
    assert_tf_restores_latest(tf, downloaded, "ckpt-4")


def test_prune_never_deletes_the_key_a_version_suffix_names(store, fixtures_dir, tmp_path, tf):
    """Checkpoints named `ckpt-4.index?versionId=v-1` and `-2` (one family): pruning the older one
    deleted `ckpt-4.index?versionId=v-1.index`, which s3fs sends as a delete of `ckpt-4.index`
    (version ignored): the latest checkpoint of the other family lost its index, exit 0."""
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 4)
    url = upload_tree(store, str(run), fresh_prefix("version"))
    root = url.split("://", 1)[1]
    for step in (1, 2):
        for suffix in (".index", ".data-00000-of-00001"):
            client_put(store, f"{root}/ckpt-4.index?versionId=v-{step}{suffix}", (run / f"ckpt-4{suffix}").read_bytes())
    result = run_cli("prune", "--keep-last", "1", "--yes", "--json", url)
    keys = _store_keys(store, url)
    assert {"ckpt-4.index", "ckpt-4.data-00000-of-00001", "checkpoint"} <= keys, (keys, result.stderr)
    assert result.exit_code == 0, result.stderr
    downloaded = tmp_path / "downloaded"
    _download_keys(store, url, ["checkpoint", "ckpt-4.index", "ckpt-4.data-00000-of-00001"], downloaded)
    assert_tf_restores_latest(tf, downloaded, "ckpt-4")


def client_put(store, path: str, data: bytes) -> None:
    """An object written with its key exactly as given (boto3 / the GCS JSON API, not fsspec,
    which would split or quote it)."""
    bucket, key = path.split("/", 1)
    if store.protocol == "s3":
        import boto3
        boto3.client("s3", endpoint_url=store.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").put_object(Bucket=bucket, Key=key, Body=data)
    else:
        import urllib.parse
        import urllib.request
        request = urllib.request.Request(
            f"{store.endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={urllib.parse.quote(key, safe='')}",
            data=data, method="POST", headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(request).read()


# -- metrics for --keep-best: a number too large for a float -------------------------------------

@pytest.mark.parametrize("line", ['{"step": 1, "loss": %s}' % ("9" * 400), '{"step": %s, "loss": 1}' % ("9" * 400)],
                         ids=["value", "step"])
def test_a_metric_too_large_for_a_float_is_bad_input(tmp_path, line):
    """JSON integers are unbounded (Python's json reads 400 digits as an int); float() of one
    raised OverflowError, which no reader caught (exit 70 for prune --keep-best)."""
    from ckpttool.errors import BadInput
    from ckpttool.ops.retention.metrics import read_metrics_file, read_trainer_state

    path = tmp_path / "metrics.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(BadInput, match="not a"):
        read_metrics_file(str(path), "loss")
    state = tmp_path / "trainer_state.json"
    state.write_text('{"log_history": [%s]}' % line)
    damaged = read_trainer_state(str(state), "loss")  # an entry that gives no number: damage, named
    assert damaged.values == {} and "not a number" in damaged.damage[0].message


# -- a prune journal planted by another user -----------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to plant another user's file")
def test_a_journal_of_another_user_is_not_resumed(copy_fixture, tmp_path, tf):
    """A journal names checkpoints an interrupted prune was deleting; resuming it overrides the
    rules (it must: the state file may already be rewritten). Anyone who may create a file in the
    directory could plant one: root's cron then deleted, as root, every checkpoint it named but the
    latest (here model.ckpt-100 to -900, which `--keep-last 20` keeps), even in a sticky directory
    where that user could delete none of them. A journal is resumed only when it belongs to the
    user running prune or to the directory's owner; another's is refused (exit 3, nothing deleted)."""
    from tests.test_prune_repair import names, on_disk
    from tests.test_safety import JOURNAL, tree_listing, write_journal

    run = copy_fixture("prune_run")
    os.chmod(run, 0o1777)  # a shared directory: anyone may add files, none may remove another's
    victims = [f"model.ckpt-{s}" for s in range(100, 1000, 100)]
    write_journal(run, [{"name": n, "step": int(n.rsplit("-", 1)[1]),
                         "paths": [f"{n}.index", f"{n}.data-00000-of-00001"]} for n in victims])
    os.chown(run / JOURNAL, 4242, 4242)
    before = tree_listing(run)
    result = run_cli("prune", "--yes", "--keep-last", "20", run)
    assert tree_listing(run) == before
    assert_one_line_error(result, 3)
    assert "journal" in result.stderr
    assert on_disk(run) >= names(range(100, 1001, 100))
    assert_tf_restores_latest(tf, run, "model.ckpt-1000")


# -- a directory swapped for a symlink between plan and apply ------------------------------------

def test_apply_refuses_a_directory_swapped_since_it_was_planned(fixtures_dir, tmp_path, tf):
    """`prune -r` plans every run under the root, then (after the prompt, or after planning the
    other runs) applies each plan by path. A user who may rename `root/team` swapped it for a
    symlink to another tree in between: apply_prune rescanned through the link and deleted
    ckpt-1..4 of /victim/run, a directory it was never given (same names, as one training script
    writes). The directory applied must be the one planned (device and inode)."""
    from ckpttool.errors import Refused
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules
    from tests.test_prune_repair import on_disk

    root, victim = tmp_path / "root", tmp_path / "victim"
    (root / "team").mkdir(parents=True)
    victim.mkdir()
    _many_checkpoint_dir(fixtures_dir, root / "team" / "run", 5)
    _many_checkpoint_dir(fixtures_dir, victim / "run", 5)
    before = on_disk(victim / "run")
    plan = plan_prune(str(root / "team" / "run"), RetentionRules(keep_last=1))
    assert [d.name for d in plan.deleted] == ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-4"]
    os.rename(root / "team", tmp_path / "moved")
    os.symlink(victim, root / "team")
    with pytest.raises(Refused, match="changed since"):
        apply_prune(plan)
    assert on_disk(victim / "run") == before
    assert_tf_restores_latest(tf, victim / "run", "ckpt-5")


# -- typed complex values of odd count -----------------------------------------------------------

def _const_graph(tf, tmp_path, values) -> tuple[str, object]:
    """A GraphDef (TensorFlow's own protos) with one complex64 Const of shape [4] stored as
    `scomplex_val` floats (pairs of real, imaginary)."""
    graph = tf.compat.v1.GraphDef()
    node = graph.node.add(name="c", op="Const")
    tensor = node.attr["value"].tensor
    tensor.dtype = tf.complex64.as_datatype_enum
    tensor.tensor_shape.dim.add(size=4)
    tensor.scomplex_val.extend(values)
    node.attr["dtype"].type = tf.complex64.as_datatype_enum
    path = tmp_path / "graph.pb"
    path.write_bytes(graph.SerializeToString())
    return str(path), tensor


def test_complex_typed_values_of_odd_count(tf, tmp_path):
    """TensorProto.scomplex_val holds (real, imaginary) pairs; an odd count made reshape(-1, 2)
    raise ValueError (exit 70) in the one decoder of V1 checkpoints and graph constants.
    TensorFlow uses the whole pairs and drops the odd float (tensor.cc, make_ndarray)."""
    import numpy as np

    from ckpttool.errors import CkptError
    from ckpttool.formats.tf.graphs.graphdef import GraphConstants

    path, tensor = _const_graph(tf, tmp_path, [1.0, 2.0, 3.0])
    with GraphConstants(path, min_elements=0) as reader:
        np.testing.assert_array_equal(reader.read(reader.variable("c")), tf.make_ndarray(tensor))
    path, _tensor = _const_graph(tf, tmp_path, [1.0])
    with pytest.raises(CkptError), GraphConstants(path, min_elements=0) as reader:
        reader.read(reader.variable("c"))


# -- the host lock's directory in a shared temp directory ----------------------------------------

@pytest.mark.parametrize("planted", ["symlink", "other_owner", "world_writable", "file", "dangling"])
def test_the_host_lock_directory_planted_in_tmp_is_refused(tmp_path, monkeypatch, planted):
    """A bucket prune also locks a file in /tmp/ckpttool-locks-<uid>/, made with makedirs(exist_ok):
    anyone may create that name first in /tmp. As a symlink to /etc (any directory), root's run
    created its lock file there (O_NOFOLLOW guards only the last component); as a directory of
    theirs, they could remove or hold root's lock files. It is used only when it is our own
    directory, writable by us alone."""
    if planted == "other_owner" and os.geteuid() != 0:
        pytest.skip("needs root to make another user's directory")
    from ckpttool.errors import Refused
    from ckpttool.ops.runs import lock

    monkeypatch.setattr(lock.tempfile, "gettempdir", lambda: str(tmp_path))
    name = tmp_path / f"ckpttool-locks-{os.getuid()}"
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    if planted == "symlink":
        os.symlink(elsewhere, name)
    elif planted == "file":
        name.write_text("")
    elif planted == "dangling":
        os.symlink(elsewhere / "missing", name)
    else:
        name.mkdir()
        if planted == "other_owner":
            os.chown(name, 4242, 4242)
        else:
            os.chmod(name, 0o777)
    with pytest.raises(Refused, match="ckpttool-locks"):
        with lock.directory_lock("memory://bucket/run", timeout=1):
            pass
    assert not list(elsewhere.iterdir())


@pytest.mark.parametrize("entry", ["ckpt-2.index?versionId=x", "ckpt-2?versionId=x", "a//ckpt-2", "./ckpt-2"])
def test_a_state_file_entry_the_backend_would_split_is_reported(store, fixtures_dir, tmp_path, entry):
    """State-file entries are hostile too: one naming `ckpt-2?versionId=x` must be reported as a
    problem (never looked up as ckpt-2), not stop ls or prune of the run."""
    from ckpttool.formats.tf.state import CheckpointState, write_state

    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 4)
    write_state(str(run), CheckpointState("ckpt-4", (entry, "ckpt-3", "ckpt-4"), ()))
    url = upload_tree(store, str(run), fresh_prefix("state"))
    listing = run_cli("ls", "--json", url)
    assert listing.exit_code == 0, listing.stderr
    assert [c["name"] for c in listing.json()["checkpoints"]] == [f"ckpt-{i}" for i in range(1, 5)]
    result = run_cli("prune", "--keep-last", "2", "--yes", "--json", url)
    assert result.exit_code == 0, result.stderr
    assert sorted(d["name"] for d in result.json()["deleted"]) == ["ckpt-1", "ckpt-2"]



# -- repair writes what it planned over a state file rewritten since -----------------------------

def test_repair_never_reverts_a_state_file_written_since_it_was_planned(fixtures_dir, tmp_path, tf):
    """repair plans from one read of the state file and wrote its plan under the lock without
    looking again: a training job's save in between (ckpt-6, now latest) was reverted to ckpt-4,
    so the job would resume from the older checkpoint. The state file must still be the one
    planned from, else nothing is written."""
    import shutil

    from ckpttool.errors import Refused
    from ckpttool.formats.tf.state import CheckpointState, write_state
    from ckpttool.ops.runs.repair import apply_repair, plan_repair

    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 5)
    write_state(str(run), CheckpointState("ckpt-4", tuple(f"ckpt-{i}" for i in range(1, 5)), ()))
    plan = plan_repair(str(run))
    assert plan.changed and plan.new_state.model_checkpoint_path == "ckpt-4"
    for suffix in (".index", ".data-00000-of-00001"):  # the training job saves ckpt-6 meanwhile
        shutil.copy(run / f"ckpt-5{suffix}", run / f"ckpt-6{suffix}")
    write_state(str(run), CheckpointState("ckpt-6", tuple(f"ckpt-{i}" for i in range(1, 7)), ()))
    with pytest.raises(Refused, match="changed since"):
        apply_repair(plan)
    assert tf.train.latest_checkpoint(str(run)) == str(run / "ckpt-6")


def test_recursive_prune_never_follows_a_symlink_put_in_a_found_path(fixtures_dir, tmp_path, monkeypatch, tf):
    """`prune -r` walks the tree without following links, then plans each run found by its path:
    `root/team` swapped for a symlink to /victim right after the walk made the plan (and the
    deletions) those of /victim/run. A directory whose path no longer leads where the walk found it
    is skipped and reported (exit 3), the others pruned."""
    from ckpttool.ops.runs import scan
    from tests.test_prune_repair import on_disk

    root, victim = tmp_path / "root", tmp_path / "victim"
    (root / "team").mkdir(parents=True)
    victim.mkdir()
    _many_checkpoint_dir(fixtures_dir, root / "team" / "run", 5)
    _many_checkpoint_dir(fixtures_dir, root / "own", 3)
    _many_checkpoint_dir(fixtures_dir, victim / "run", 5)
    before = on_disk(victim / "run")
    walk = scan.find_checkpoint_dirs

    def walk_then_swap(*args, **kwargs):
        found = walk(*args, **kwargs)
        os.rename(root / "team", tmp_path / "moved")
        os.symlink(victim, root / "team")
        return found
    monkeypatch.setattr(scan, "find_checkpoint_dirs", walk_then_swap)
    result = run_cli("prune", "--recursive", "--keep-last", "1", "--yes", "--json", root)
    assert on_disk(victim / "run") == before
    assert_tf_restores_latest(tf, victim / "run", "ckpt-5")
    assert_one_line_error(result, 3)
    assert on_disk(root / "own") == {"ckpt-3"}


def test_recursive_ls_reports_a_key_the_backend_would_split(servers, fixtures_dir, tmp_path):
    """`root/run?versionId=x/checkpoint` is the key s3fs reads as `root/run` (version dropped): the
    walk leaves it out and says so, and lists the real run."""
    s3 = servers["s3"]
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 2)
    url = upload_tree(s3, str(run), fresh_prefix("walk") + "/own")
    root = url.rsplit("/", 1)[0]
    hostile = root.split("://", 1)[1] + "/own?versionId=x/checkpoint"
    client_put(s3, hostile, (run / "checkpoint").read_bytes())
    listing = run_cli("ls", "--recursive", "--json", root)
    assert listing.exit_code == 0, listing.stderr
    assert [d["directory"] for d in listing.json()["directories"]] == [url]
    assert "store would read as another key" in listing.stderr


def test_a_bucket_journal_never_overrides_the_rules_for_a_complete_checkpoint(servers, fixtures_dir, tmp_path, tf):
    """A bucket has no file owner to tell a planted journal from prune's own: anyone who may put an
    object under the prefix (a PutObject-only policy too) could list ckpt-2 in one, and a prune
    keeping the last 10 deleted it. A bucket journal still finishes what is half deleted, but never
    deletes a complete checkpoint this run's rules keep (reported instead)."""
    import json

    s3 = servers["s3"]
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 5)
    url = upload_tree(s3, str(run), fresh_prefix("journal"))
    journal = {"deletions": [{"name": "ckpt-2", "step": 2, "paths": ["ckpt-2.index", "ckpt-2.data-00000-of-00001"]}]}
    client_put(s3, url.split("://", 1)[1] + "/.ckpttool-prune.journal", json.dumps(journal).encode())
    result = run_cli("prune", "--keep-last", "10", "--yes", "--json", url)
    keys = _store_keys(s3, url)
    assert {"ckpt-2.index", "ckpt-2.data-00000-of-00001"} <= keys, result.stderr
    assert result.exit_code == 0, result.stderr
    assert result.json()["deleted"] == []
    downloaded = tmp_path / "downloaded"
    _download_keys(s3, url, ["checkpoint", "ckpt-2.index", "ckpt-2.data-00000-of-00001"], downloaded)
    reader = tf.train.load_checkpoint(str(downloaded / "ckpt-2"))
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
