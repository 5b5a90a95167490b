"""Bucket and prune safety (issue 16): object keys are opaque strings, never
normalised; prune deletes exact keys from its plan only; capped reads are capped
on the bytes read; a lock never locks anyone out. Against the real moto S3
server and GCS emulator of tests/test_remote.py, with TensorFlow-written
checkpoints, TensorFlow restoring what prune leaves."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from tests.conftest import run_cli
from tests.remote_servers import BUCKET, upload_tree
from tests.test_prune_repair import _many_checkpoint_dir, assert_tf_restores_latest
from tests.test_remote import fresh_prefix, servers, store  # noqa: F401 - the servers, as fixtures here


def _s3_client(s3):
    import boto3

    return boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _keys(client, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every key under `prefix` with its bytes, listed by boto3 (nothing normalised)."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def _put_dir(client, bucket: str, key_prefix: str, local) -> None:
    """A local directory's files as objects `key_prefix/NAME`, keys exactly as written."""
    for name in os.listdir(local):
        client.put_object(Bucket=bucket, Key=f"{key_prefix}/{name}", Body=(local / name).read_bytes())


def _store_keys(store, url: str) -> set[str]:
    """Every key below `url` (relative), by the store's own recursive listing."""
    from ckpttool.storage import remote
    fs = remote.filesystem(store.protocol)
    root = url.split("://", 1)[1]
    return {name[len(root) + 1:] for name in fs.find(root)}


def _download_keys(store, url: str, keys, local) -> None:
    from ckpttool.storage import remote
    fs = remote.filesystem(store.protocol)
    root = url.split("://", 1)[1]
    local.mkdir(parents=True, exist_ok=True)
    for key in keys:
        fs.get_file(f"{root}/{key}", str(local / key))


# -- item 1: a `..` key never leads a walk into another bucket or prefix -------------------------

def test_recursive_prune_never_follows_dot_dot_keys(servers, fixtures_dir, tmp_path, tf):
    """`root/../../victim/prod/run/checkpoint` is a legal S3 key; a normalised walk pruned the
    victim bucket through it (4 of 5 checkpoints and its state file), and `root/../sibling/...`
    another prefix of the same bucket; ls -r and verify -r read there too."""
    s3 = servers["s3"]
    client = _s3_client(s3)
    victim = f"victim-{fresh_prefix('b')}".lower().replace("_", "-")[:60]
    client.create_bucket(Bucket=victim)
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 5)
    root = fresh_prefix("root")
    _put_dir(client, victim, "prod/run", run)
    _put_dir(client, BUCKET, f"{root}-sibling/run", run)
    _put_dir(client, BUCKET, f"{root}/own", run)  # a real run under the root, pruned as asked
    state = (run / "checkpoint").read_bytes()
    hostile = [f"{root}/../../{victim}/prod/run/checkpoint", f"{root}/../{root}-sibling/run/checkpoint"]
    for key in hostile:
        client.put_object(Bucket=BUCKET, Key=key, Body=state)
    victim_before = _keys(client, victim)
    sibling_before = _keys(client, BUCKET, f"{root}-sibling/")
    url = f"s3://{BUCKET}/{root}"

    result = run_cli("prune", url, "--recursive", "--keep-last", "1", "--yes", "--json")
    assert _keys(client, victim) == victim_before
    assert _keys(client, BUCKET, f"{root}-sibling/") == sibling_before
    assert result.exit_code == 0, result.stderr
    assert [d["directory"] for d in result.json()["directories"]] == [f"{url}/own"]
    assert result.stderr.count("never followed") == 2, result.stderr
    assert {k.rsplit("/", 1)[1] for k in _keys(client, BUCKET, f"{root}/own/")} == \
        {"checkpoint", "ckpt-5.index", "ckpt-5.data-00000-of-00001"}
    assert set(hostile) <= set(_keys(client, BUCKET, f"{root}/"))  # reported, left alone
    downloaded = tmp_path / "victim"
    downloaded.mkdir()
    for key, data in victim_before.items():
        (downloaded / key.rsplit("/", 1)[1]).write_bytes(data)
    assert_tf_restores_latest(tf, downloaded, "ckpt-5")

    listing = run_cli("ls", "--recursive", "--json", url)
    assert listing.exit_code == 0, listing.stderr
    assert [d["directory"] for d in listing.json()["directories"]] == [f"{url}/own"]
    assert listing.stderr.count("never followed") == 2, listing.stderr
    verify = run_cli("verify", "--recursive", "--json", url)
    assert verify.exit_code == 0, verify.stderr
    assert {r["checkpoint"].rsplit("/", 1)[0] for r in verify.json()["checkpoints"]} == {f"{url}/own"}


def test_an_empty_segment_key_is_reported_not_followed(servers, fixtures_dir, tmp_path):
    """`root//run/checkpoint`: the walk made it `root//run`, normalised to `root/run` (exit 3, "no
    directory"); it is now reported and the rest of the tree listed."""
    s3 = servers["s3"]
    client = _s3_client(s3)
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 2)
    root = fresh_prefix("root")
    _put_dir(client, BUCKET, f"{root}/own", run)
    client.put_object(Bucket=BUCKET, Key=f"{root}//run/checkpoint", Body=(run / "checkpoint").read_bytes())
    url = f"s3://{BUCKET}/{root}"
    listing = run_cli("ls", "--recursive", "--json", url)
    assert listing.exit_code == 0, listing.stderr
    assert [d["directory"] for d in listing.json()["directories"]] == [f"{url}/own"]
    assert listing.stderr.count("never followed") == 1, listing.stderr


def test_a_dot_dot_url_is_refused_not_normalised(servers, fixtures_dir, tmp_path):
    """Given outright, `s3://b/root/../x` is refused before any request (exit 3), not read as `s3://b/x`."""
    from tests.conftest import assert_one_line_error

    s3 = servers["s3"]
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 3)
    url = upload_tree(s3, str(run), fresh_prefix("target"))
    dotted = url.rsplit("/", 1)[0] + "/anything/../" + url.rsplit("/", 1)[1]
    for args in (["ls", dotted], ["prune", "--yes", "--keep-last", "1", dotted], ["latest", dotted]):
        result = run_cli(*args)
        assert_one_line_error(result, 3)
    assert {k for k in _store_keys(s3, url) if k.endswith(".index")} == {f"ckpt-{i}.index" for i in (1, 2, 3)}


# -- item 8: --clean and prune delete exact keys only ------------------------------------------------

def test_clean_deletes_temp_parts_not_an_object_named_like_the_prefix(store, fixtures_dir, tmp_path):
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 3)
    url = upload_tree(store, str(run), fresh_prefix("clean"))
    from ckpttool.storage import remote
    fs = remote.filesystem(store.protocol)
    root = url.split("://", 1)[1]
    fs.pipe_file(f"{root}/ckpt-60_temp", b"a user's notes, not debris")
    index = (fixtures_dir / "prune_run" / "model.ckpt-1000.index").read_bytes()
    fs.pipe_file(f"{root}/ckpt-60_temp/part-00000-of-00001.index", index)
    result = run_cli("prune", "--clean", "--min-age", "0s", "--keep-last", "3", "--yes", "--json", url)
    assert result.exit_code == 0, result.stderr
    keys = _store_keys(store, url)
    assert "ckpt-60_temp/part-00000-of-00001.index" not in keys
    assert "ckpt-60_temp" in keys
    assert fs.cat_file(f"{root}/ckpt-60_temp") == b"a user's notes, not debris"


def test_an_index_that_is_also_a_prefix_goes_with_its_data(store, fixtures_dir, tmp_path, tf):
    """`run/ckpt-1.index` beside `run/ckpt-1.index/notes.txt`: pruning ckpt-1 deleted its data and
    kept its index (a half checkpoint). The index object goes, index first; notes.txt stays."""
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 4)
    url = upload_tree(store, str(run), fresh_prefix("both"))
    from ckpttool.storage import remote
    fs = remote.filesystem(store.protocol)
    root = url.split("://", 1)[1]
    fs.pipe_file(f"{root}/ckpt-1.index/notes.txt", b"notes")
    result = run_cli("prune", "--keep-last", "2", "--yes", "--json", url)
    assert result.exit_code == 0, result.stderr
    assert sorted(d["name"] for d in result.json()["deleted"]) == ["ckpt-1", "ckpt-2"]
    keys = _store_keys(store, url)
    assert {k for k in keys if k.startswith("ckpt-1")} == {"ckpt-1.index/notes.txt"}
    kept = sorted(k for k in keys if "/" not in k)
    assert kept == ["checkpoint"] + [f"ckpt-{i}{s}" for i in (3, 4) for s in (".data-00000-of-00001", ".index")]
    downloaded = tmp_path / "downloaded"
    _download_keys(store, url, kept, downloaded)
    assert_tf_restores_latest(tf, downloaded, "ckpt-4")


def test_a_glob_character_in_a_name_deletes_that_key_only(store, fixtures_dir, tmp_path, tf):
    """fsspec's rm expands `*`: deleting `m*-5.index` also deleted `model.ckpt-5.index`, kept by
    the rules (its own family's newest)."""
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 1)
    source = fixtures_dir / "prune_run" / "model.ckpt-1000"
    for name in ("model.ckpt-5", "m*-5", "m*-6"):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(f"{source}{suffix}", run / f"{name}{suffix}")
    url = upload_tree(store, str(run), fresh_prefix("glob"))
    result = run_cli("prune", "--keep-last", "1", "--yes", "--json", url)
    assert result.exit_code == 0, result.stderr
    assert [d["name"] for d in result.json()["deleted"]] == ["m*-5"]
    keys = _store_keys(store, url)
    assert {"model.ckpt-5.index", "model.ckpt-5.data-00000-of-00001", "m*-6.index"} <= keys
    assert not {k for k in keys if k.startswith("m*-5")}
    downloaded = tmp_path / "downloaded"
    _download_keys(store, url, ["model.ckpt-5.index", "model.ckpt-5.data-00000-of-00001"], downloaded)
    reader = tf.train.load_checkpoint(str(downloaded / "model.ckpt-5"))
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


# -- item 18: caps hold on the bytes read --------------------------------------------------------

def test_capped_read_is_capped_on_the_bytes_read(store, monkeypatch):
    """A state file swapped for a big object after it was looked up is refused, and no more than
    the cap (plus one byte) is fetched."""
    from ckpttool.errors import BadInput
    from ckpttool.storage import remote
    fs = remote.filesystem(store.protocol)
    root = "/".join((BUCKET, fresh_prefix("capped")))
    fs.pipe_file(f"{root}/checkpoint", b"x" * (3 << 20))
    url = f"{store.protocol}://{root}/checkpoint"
    looked_up = remote.info
    monkeypatch.setattr(remote, "info", lambda u: {**looked_up(u), "size": 100})  # as the listing said
    fetched = []
    cat_file = fs.cat_file

    def counting_cat_file(*args, **kwargs):
        data = cat_file(*args, **kwargs)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(fs, "cat_file", counting_cat_file)
    with pytest.raises(BadInput, match="larger than"):
        remote.read_capped(url, 1 << 20, "state file")
    assert fetched and max(fetched) <= (1 << 20) + 1


# -- item 19: an unreadable lock object is stale -----------------------------------------------

def test_an_oversized_lock_object_is_broken(servers, fixtures_dir, tmp_path):
    """A lock object over 64 KiB cannot be ckpttool's: it was never broken, whatever its age, and
    every prune waited out its timeout (exit 4). On S3 only: the GCS emulator ignores
    ifGenerationMatch=0 (real GCS honours it), so there a held lock is simply overwritten."""
    from ckpttool.ops.runs.lock import directory_lock
    from ckpttool.storage import remote
    store = servers["s3"]
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 2)
    url = upload_tree(store, str(run), fresh_prefix("biglock"))
    body = json.dumps({"host": "elsewhere", "pid": 1, "time": 0, "padding": "x" * (70 << 10)}).encode()
    remote.write_whole(f"{url}/.ckpttool.lock", body)
    with directory_lock(url, timeout=3):
        assert remote.read_capped(f"{url}/.ckpttool.lock", 1 << 16, "lock object") != body
    assert ".ckpttool.lock" not in _store_keys(store, url)


# -- item 14: a plan applied twice -------------------------------------------------------------

def test_a_plan_applied_twice_deletes_nothing_the_second_time(store, fixtures_dir, tmp_path, copy_fixture):
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 4)
    url = upload_tree(store, str(run), fresh_prefix("twice"))
    local = copy_fixture("prune_run")
    for directory in (url, str(local)):
        plan = plan_prune(directory, RetentionRules(keep_last=2))
        first = apply_prune(plan)
        assert first.deleted and {d.name for d in first.deleted} == {d.name for d in plan.deleted}
        second = apply_prune(plan)
        assert second.deleted == () and second.freed_bytes == 0


# -- item 21: a local lock leaves nothing that locks anyone out ------------------------------------

def _as_user(uid: int, gid: int, function) -> str:
    """Run `function()` in a forked child with the given ids; "ok" or the error it raised.
    (A fork, not a new interpreter: the interpreter lives where `nobody` may not read.)"""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            function()
            message = b"ok"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"{type(exc).__name__}: {exc}".encode()
        os.write(write_end, message)
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to prune as root and then as another user")
def test_a_prune_by_root_does_not_lock_the_owner_out(fixtures_dir, tf):
    """root's cron pruned DIR and left DIR/.ckpttool.lock (root, 0644): the owner's next prune
    failed to open it (Permission denied, exit 3). No lock file is left now, and a leftover one
    that cannot be written does not matter."""
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules
    import pwd

    nobody = pwd.getpwnam("nobody")
    top = tempfile.mkdtemp(prefix="ckpttool-owner-")
    try:
        os.chmod(top, 0o755)
        run = os.path.join(top, "run")
        shutil.copytree(fixtures_dir / "prune_run", run)
        for current, _dirs, files in os.walk(run):
            for name in [current] + [os.path.join(current, f) for f in files]:
                os.chown(name, nobody.pw_uid, nobody.pw_gid)
        apply_prune(plan_prune(run, RetentionRules(keep_last=5)))  # root's cron
        assert not [n for n in os.listdir(run) if n.startswith(".ckpttool")]
        stale = os.path.join(run, ".ckpttool.lock")  # as an older ckpttool run by root left it
        with open(stale, "w"):
            pass
        os.chmod(stale, 0o600)
        outcome = _as_user(nobody.pw_uid, nobody.pw_gid,
                           lambda: apply_prune(plan_prune(run, RetentionRules(keep_last=2))))
        assert outcome == "ok"
        assert {n[:-6] for n in os.listdir(run) if n.endswith(".index")} == \
            {"model.ckpt-900", "model.ckpt-1000", "best.ckpt-300", "best.ckpt-700"}
        assert_tf_restores_latest(tf, run, "model.ckpt-1000")
    finally:
        shutil.rmtree(top)
