"""A bucket prune protects the newest TF checkpoint whose data is whole by reading its index, the
listing's sizes notwithstanding, against moto's S3 server (its request log is the witness) and
checkpoints TensorFlow's CheckpointManager wrote: one index read per run directory to plan; a newest
data shard cut short in the bucket is found, also when a string variable makes it exactly an older
save's size (the older whole one kept, TensorFlow restores it); one of the right size with other
bytes is verify's to find, not prune's."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.remote_servers import upload_tree
from tests.test_bucket_prune_batches import RUNS, _fleet, _requests_of, logged_s3  # noqa: F401 - a fixture
from tests.test_remote import servers  # noqa: F401 - a fixture (the suite's S3 server and GCS emulator)


def _index_reads(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("GET ") and ".index" in line]


def _state_reads(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("GET ") and "/checkpoint " in line]


@pytest.mark.parametrize("how", ["recursive", "policy", "each"])
def test_equal_sizes_plan_with_one_index_read_per_run(logged_s3, fixtures_dir, tmp_path, how):  # noqa: F811
    """Six saves of one variable set per run: every index and shard has the size of the others',
    which proves nothing (see the string variable below): `prune -r`, `prune --policy` and `prune
    s3://run` read each run's state file and its newest index, and plan what TensorFlow's state
    files say `--keep-last 2` deletes."""
    url, expected = _fleet(fixtures_dir, tmp_path, logged_s3)
    result = {}
    if how == "recursive":
        lines = _requests_of(logged_s3, lambda: result.update(
            doc=run_cli("prune", "-r", "--dry-run", "--json", "--keep-last", "2", url)))
    elif how == "policy":
        policy = tmp_path / "retention.toml"
        policy.write_text(f'[[rule]]\npaths = ["{url}"]\nkeep_last = 2\n')
        lines = _requests_of(logged_s3, lambda: result.update(
            doc=run_cli("prune", "--policy", policy, "--dry-run", "--json")))
    else:
        lines = _requests_of(logged_s3, lambda: result.update(
            doc=run_cli("prune", "--dry-run", "--json", "--keep-last", "2", f"{url}/{RUNS[0]}")))
    doc = result["doc"]
    assert doc.exit_code == 0, doc.stderr
    planned = ({d["directory"].rsplit("/", 1)[-1]: {x["name"] for x in d["deleted"]} for d in doc.json()["directories"]}
               if how != "each" else {RUNS[0]: {x["name"] for x in doc.json()["deleted"]}})
    assert planned == (expected if how != "each" else {RUNS[0]: expected[RUNS[0]]})  # TF's state file's verdict
    runs = 1 if how == "each" else len(RUNS)
    assert len(_index_reads(lines)) == runs, lines
    assert len(_state_reads(lines)) == runs, lines


def _manager_run(tf, tmp_path, server) -> tuple[str, str]:
    """Three CheckpointManager saves of one variable (values 1, 2, 3), uploaded; (URL, local copy)."""
    variable = tf.Variable(np.zeros(4096, np.float32))
    local = tmp_path / "run"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(local), max_to_keep=None)
    for step in (1, 2, 3):
        variable.assign(np.full(4096, step, np.float32))
        manager.save(checkpoint_number=step)
    return upload_tree(server, str(local), f"sizes-{uuid.uuid4().hex[:8]}"), str(local)


def _replace_object(server, url: str, data: bytes) -> None:
    from ckpttool.storage import remote

    remote.filesystem(server.protocol).pipe_file(remote.split_url(url)[1], data)


def test_a_newest_shard_cut_short_in_the_bucket_is_still_found(logged_s3, tmp_path, tf):  # noqa: F811
    """ckpt-3's data shard cut short in the bucket (smaller than the others'): its index is read as
    before, ckpt-2 is kept with the reason, and TensorFlow restores it from a download."""
    url, local = _manager_run(tf, tmp_path, logged_s3)
    shard = f"{url}/ckpt-3.data-00000-of-00001"
    with open(f"{local}/ckpt-3.data-00000-of-00001", "rb") as handle:
        _replace_object(logged_s3, shard, handle.read()[:-100])
    dry = run_cli("prune", "-r", "--keep-last", "1", "--dry-run", "--json", url)
    assert dry.exit_code == 0, dry.stderr
    result = {}
    lines = _requests_of(logged_s3, lambda: result.update(
        doc=run_cli("prune", "-r", "--keep-last", "1", "--yes", "--json", url)))
    doc = result["doc"]
    assert doc.exit_code == 0, doc.stderr
    assert _index_reads(lines), lines
    (run,) = doc.json()["directories"]
    assert [d["name"] for d in run["deleted"]] == ["ckpt-1"]
    reasons = {k["name"]: k["reasons"] for k in run["kept"]}
    assert "ckpt-3.data-00000-of-00001 has" in reasons["ckpt-2"][0]
    # The dry run read the index to plan, the real run as it applied (issue 26's planning costs one
    # request less per run directory): both say the same.
    (planned,) = dry.json()["directories"]
    assert (planned["deleted"], planned["kept"]) == (run["deleted"], run["kept"])
    from ckpttool.storage import remote

    down = tmp_path / "down"
    remote.filesystem("s3").get(remote.split_url(url)[1] + "/", str(down) + "/", recursive=True)
    restored = tf.Variable(np.zeros(4096, np.float32))
    tf.train.Checkpoint(v=restored).read(str(down / "ckpt-2")).assert_existing_objects_matched()
    assert (restored.numpy() == 2).all()


def test_a_newest_shard_of_the_right_size_with_other_bytes_is_verifys_to_find(logged_s3, tmp_path, tf):  # noqa: F811
    """ckpt-3's data shard with its bytes changed but not its size: its index is read and says the
    shard is long enough, so the rules alone decide (ckpt-1 and ckpt-2 go); `verify` reports the
    damage, as it did before."""
    url, local = _manager_run(tf, tmp_path, logged_s3)
    with open(f"{local}/ckpt-3.data-00000-of-00001", "rb") as handle:
        data = bytearray(handle.read())
    data[:16] = bytes(b ^ 0xFF for b in data[:16])
    _replace_object(logged_s3, f"{url}/ckpt-3.data-00000-of-00001", bytes(data))
    result = {}
    lines = _requests_of(logged_s3, lambda: result.update(
        doc=run_cli("prune", "--keep-last", "1", "--dry-run", "--json", url)))
    assert result["doc"].exit_code == 0, result["doc"].stderr
    assert len(_index_reads(lines)) == 1, lines
    assert [d["name"] for d in result["doc"].json()["deleted"]] == ["ckpt-1", "ckpt-2"]
    verify = run_cli("verify", f"{url}/ckpt-3")
    assert verify.exit_code != 0, verify.stdout


def _string_run(tf, tmp_path, server) -> tuple[str, str, int]:
    """Three CheckpointManager saves of a float variable and a string one whose value grows at the
    last save (a string tensor's bytes in the data shard are its value's, not fixed by its shape);
    uploaded: (URL, local copy, ckpt-2's data shard size)."""
    import os

    number = tf.Variable(np.zeros(1024, np.float32))
    text = tf.Variable("y" * 150)
    local = tmp_path / "run"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=number, s=text), str(local), max_to_keep=None)
    for step, length in ((1, 150), (2, 150), (3, 200)):
        number.assign(np.full(1024, step, np.float32))
        text.assign("y" * length)
        manager.save(checkpoint_number=step)
    size = os.path.getsize(local / "ckpt-2.data-00000-of-00001")
    return upload_tree(server, str(local), f"strings-{uuid.uuid4().hex[:8]}"), str(local), size


def test_a_newest_shard_cut_short_to_the_others_size_is_still_found(logged_s3, tmp_path, tf):  # noqa: F811
    """A string variable makes ckpt-3's data shard longer than ckpt-2's (its index no longer): cut
    short in the bucket to exactly ckpt-2's size, every listed size matches the others', yet ckpt-3
    cannot be restored (TensorFlow says so) and ckpt-2 is the newest whole: it is kept, as a local
    prune keeps it, and TensorFlow restores it from a download."""
    url, local, size = _string_run(tf, tmp_path, logged_s3)
    with open(f"{local}/ckpt-3.data-00000-of-00001", "rb") as handle:
        whole = handle.read()
    assert len(whole) > size  # the string's bytes: the same shape, a longer shard
    _replace_object(logged_s3, f"{url}/ckpt-3.data-00000-of-00001", whole[:size])
    with open(f"{local}/ckpt-3.data-00000-of-00001", "wb") as handle:
        handle.write(whole[:size])  # the local witness, cut alike
    with pytest.raises(Exception):  # TensorFlow's own verdict: ckpt-3 is not whole
        tf.train.Checkpoint(v=tf.Variable(np.zeros(1024, np.float32)), s=tf.Variable("")).read(
            f"{local}/ckpt-3").assert_existing_objects_matched()
    here = run_cli("prune", "--keep-last", "1", "--dry-run", "--json", local)
    assert here.exit_code == 0, here.stderr
    doc = run_cli("prune", "-r", "--keep-last", "1", "--yes", "--json", url)
    assert doc.exit_code == 0, doc.stderr
    (run,) = doc.json()["directories"]
    assert [d["name"] for d in run["deleted"]] == [d["name"] for d in here.json()["deleted"]] == ["ckpt-1"]
    from ckpttool.storage import remote

    down = tmp_path / "down"
    remote.filesystem("s3").get(remote.split_url(url)[1] + "/", str(down) + "/", recursive=True)
    number, text = tf.Variable(np.zeros(1024, np.float32)), tf.Variable("")
    tf.train.Checkpoint(v=number, s=text).read(str(down / "ckpt-2")).assert_existing_objects_matched()
    assert (number.numpy() == 2).all() and text.numpy() == b"y" * 150
