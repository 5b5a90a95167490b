"""Every command on object stores (issue 11), against real servers on 127.0.0.1:
moto's S3 server and the GCS emulator. TensorFlow stays the oracle on the
local copy: each answer on a bucket must equal the answer on the same files
on disk, and what prune leaves in a bucket must restore in TensorFlow once
downloaded."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import assert_one_line_error, run_cli, run_subprocess
from tests.remote_servers import BUCKET, CountingProxy, start_gcs, start_s3, upload_tree
from tests.test_keras_legacy import legacy_dir  # noqa: F401 - a fixture
from tests.test_keras_like import like_dir  # noqa: F401 - a fixture

READ_FIXTURES = [("saver_run", None), ("sharded", None), ("partitioned", None), ("tf2_manager", None),
                 ("tf2_saved_model", "model")]


@pytest.fixture(scope="session")
def servers():
    """Both servers, with the backends' standard settings pointing at them for this process and
    for every subprocess the tests start."""
    started = {"s3": start_s3(), "gs": start_gcs()}
    saved = dict(os.environ)
    for server in started.values():
        os.environ.update(server.env)
    from ckpttool.storage import remote
    remote.set_storage_options({})  # forget backends made before the environment was set
    yield started
    os.environ.clear()
    os.environ.update(saved)
    for server in started.values():
        server.stop()


@pytest.fixture(params=["s3", "gs"])
def store(request, servers):
    return servers[request.param]


_counter = iter(range(1_000_000))


def fresh_prefix(name: str) -> str:
    return f"{name}-{next(_counter)}-{os.getpid()}"


def upload(store, fixtures_dir, name: str, sub: str | None = None) -> tuple[str, str]:
    """(local directory, its URL in the bucket)."""
    local = fixtures_dir / name / sub if sub else fixtures_dir / name
    return str(local), upload_tree(store, str(local), fresh_prefix(name))


def _localize(doc, local: str, url: str):
    """The document with the remote URL replaced by the local path, for comparison."""
    return json.loads(json.dumps(doc).replace(url, local))


def _without_times(listing: dict) -> dict:
    # A TF1 Saver's state file holds the writer's absolute paths: stale once the files are in a bucket.
    listing["problems"] = [p for p in listing["problems"] if p["kind"] != "stale_path"]
    for c in listing["checkpoints"]:
        for field in ("mtime", "mtime_epoch"):
            c.pop(field)  # upload time in the bucket, not the file's
    return listing


# -- reading --------------------------------------------------------------------------

@pytest.mark.parametrize("name,sub", READ_FIXTURES, ids=[f[0] for f in READ_FIXTURES])
def test_reads_on_a_bucket_equal_reads_on_disk(store, fixtures_dir, tf, name, sub):
    from tests.oracle import assert_inspect_matches_tf

    local, url = upload(store, fixtures_dir, name, sub)
    remote_inspect = run_cli("inspect", "--json", "--all", "--values", url)
    assert remote_inspect.exit_code == 0, remote_inspect.stderr
    local_inspect = run_cli("inspect", "--json", "--all", "--values", local).json()
    assert _localize(remote_inspect.json(), local, url) == local_inspect
    target = local if sub else tf.train.latest_checkpoint(local)
    assert_inspect_matches_tf(remote_inspect.json(), tf.train.load_checkpoint(
        target if sub is None else os.path.join(local, "variables", "variables")))
    remote_verify = run_cli("verify", "--json", url)
    assert remote_verify.exit_code == 0, remote_verify.stderr
    assert _localize(remote_verify.json(), local, url) == run_cli("verify", "--json", local).json()
    diff = run_cli("diff", local, url)
    assert diff.exit_code == 0, diff.stdout + diff.stderr
    if sub is None:
        remote_ls = run_cli("ls", "--json", url).json()
        assert remote_ls["directory"] == url
        assert all(c["prefix"].startswith(f"{store.protocol}://") for c in remote_ls["checkpoints"])
        assert _without_times(_localize(remote_ls, local, url)) == _without_times(run_cli("ls", "--json", local).json())
        latest = run_cli("latest", url)
        assert latest.exit_code == 0, latest.stderr
        assert latest.stdout.strip() == f"{url}/{os.path.basename(tf.train.latest_checkpoint(local))}"


def test_inspect_reads_the_index_only(servers, fixtures_dir, tmp_path, tf):
    """Names and shapes of a checkpoint with a 100 MB shard cost under 1 MB of transfer."""
    import numpy as np

    prefix = tmp_path / "big" / "ckpt"
    prefix.parent.mkdir()
    tensors = {"big/w": np.zeros((25, 1024, 1024), np.float32), "small/b": np.ones(3, np.float32)}
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=sorted(tensors), shape_and_slices=["", ""],
                      tensors=[tf.constant(tensors[n]) for n in sorted(tensors)])
    s3 = servers["s3"]
    url = upload_tree(s3, str(prefix.parent), fresh_prefix("big"))
    proxy = CountingProxy(int(s3.endpoint.rsplit(":", 1)[1]))
    try:
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        proc = subprocess.run([sys.executable, "-m", "ckpttool", "inspect", "--json", f"{url}/ckpt"],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert {v["name"] for v in json.loads(proc.stdout)["variables"]} == set(tensors)
        assert 0 < proxy.downstream_bytes < 1 << 20, proxy.downstream_bytes
        proxy.reset()
        proc = subprocess.run([sys.executable, "-m", "ckpttool", "verify", f"{url}/ckpt"], capture_output=True,
                              text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proxy.downstream_bytes > 100 << 20  # verify does read every byte
    finally:
        proxy.close()


def test_remote_paths_are_urls_in_every_document(store, fixtures_dir):
    _local, url = upload(store, fixtures_dir, "saver_run")
    doc = run_cli("inspect", "--json", url).json()
    assert doc["checkpoint"] == f"{url}/model.ckpt-50"
    assert run_cli("latest", "--json", url).json()["latest"] == f"{url}/model.ckpt-50"


# -- prune and repair on a bucket ------------------------------------------------------------

def _download(store, url: str, local) -> None:
    from ckpttool.storage import remote
    fs = remote.filesystem(store.protocol)
    path = remote.split_url(url)[1]
    local.mkdir(parents=True, exist_ok=True)
    for entry in fs.ls(path, detail=True, refresh=True):
        if entry["type"] == "file":
            fs.get_file(entry["name"], str(local / os.path.basename(entry["name"])))


def _names_in_bucket(store, url: str) -> set[str]:
    from ckpttool.storage import remote
    fs = remote.filesystem(store.protocol)
    return {os.path.basename(name.rstrip("/")) for name in fs.ls(remote.split_url(url)[1], detail=False, refresh=True)}


def test_prune_on_a_bucket_keeps_what_it_keeps_on_disk(store, copy_fixture, tmp_path, tf):
    from tests.test_prune_repair import assert_tf_restores_latest, restore_with_saver

    run = copy_fixture("prune_run")
    url = upload_tree(store, str(run), fresh_prefix("prune"))
    remote_doc = run_cli("prune", "--yes", "--json", "--keep-last", "3", "--keep-step", "200", url)
    assert remote_doc.exit_code == 0, remote_doc.stderr
    local_doc = run_cli("prune", "--yes", "--json", "--keep-last", "3", "--keep-step", "200", run).json()
    assert {d["name"] for d in remote_doc.json()["deleted"]} == {d["name"] for d in local_doc["deleted"]}
    assert not any(".ckpttool" in n for n in _names_in_bucket(store, url))  # lock and journal gone
    downloaded = tmp_path / "downloaded"
    _download(store, url, downloaded)
    assert sorted(os.listdir(downloaded)) == sorted(n for n in os.listdir(run) if not n.startswith(".ckpttool"))
    latest = assert_tf_restores_latest(tf, downloaded, "model.ckpt-1000")
    restore_with_saver(tf, latest)


def _prune_paused_after_its_journal(url: str) -> subprocess.Popen:
    """A `prune --yes --keep-last 5` of `url`, stopped right after it wrote its journal, with its lock
    held and nothing deleted yet (the process says so on stderr): the readiness a signal test waits for."""
    env = {**os.environ, "CKPTTOOL_TEST_PAUSE": "prune: journal written"}
    proc = subprocess.Popen([sys.executable, "-m", "ckpttool", "prune", "--yes", "--keep-last", "5", url],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()
    assert line == "paused: prune: journal written\n", line + proc.stderr.read()
    return proc


def test_prune_killed_mid_run_leaves_a_bucket_tensorflow_can_use(servers, fixtures_dir, tmp_path, tf):
    from tests.test_prune_repair import _many_checkpoint_dir, assert_tf_restores_latest

    s3 = servers["s3"]
    local = tmp_path / "many"
    _many_checkpoint_dir(fixtures_dir, local, 60)
    url = upload_tree(s3, str(local), fresh_prefix("killed"))
    proc = _prune_paused_after_its_journal(url)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    proc.stderr.close()
    first = tmp_path / "after-kill"
    _download(s3, url, first)
    assert_tf_restores_latest(tf, first, "ckpt-60")
    finish = run_cli("prune", "--yes", "--keep-last", "5", url)
    assert finish.exit_code == 0, finish.stderr
    second = tmp_path / "after-finish"
    _download(s3, url, second)
    assert {n[:-6] for n in os.listdir(second) if n.endswith(".index")} == {f"ckpt-{i}" for i in range(56, 61)}
    assert_tf_restores_latest(tf, second, "ckpt-60")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_prune_terminated_mid_run_releases_its_lock(servers, fixtures_dir, tmp_path, tf, sig):
    """SIGTERM (cron's `timeout`, systemd, Kubernetes) or SIGHUP unwinds a bucket prune as Ctrl-C
    does: its lock object is removed, so the next run (on any host) goes ahead at once."""
    from tests.test_prune_repair import _many_checkpoint_dir, assert_tf_restores_latest

    s3 = servers["s3"]
    local = tmp_path / "many"
    _many_checkpoint_dir(fixtures_dir, local, 60)
    url = upload_tree(s3, str(local), fresh_prefix("terminated"))
    proc = _prune_paused_after_its_journal(url)
    assert ".ckpttool.lock" in _names_in_bucket(s3, url)
    proc.send_signal(sig)
    proc.stdin.close()  # the signal has been delivered: the pause may end (it unwinds with it)
    proc.stdin = None
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert_one_line_error(subprocess.CompletedProcess([], proc.returncode, "", err), 128 + sig)
    assert ".ckpttool.lock" not in _names_in_bucket(s3, url)
    first = tmp_path / "after-signal"
    _download(s3, url, first)
    assert_tf_restores_latest(tf, first, "ckpt-60")
    finish = subprocess.run([sys.executable, "-m", "ckpttool", "prune", "--yes", "--keep-last", "5", url],
                            capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr
    assert {n[:-6] for n in _names_in_bucket(s3, url) if n.endswith(".index")} == {f"ckpt-{i}" for i in range(56, 61)}


def test_two_prunes_at_once_on_one_prefix(store, fixtures_dir, tmp_path):
    from tests.test_prune_repair import _many_checkpoint_dir

    local = tmp_path / "twice"
    _many_checkpoint_dir(fixtures_dir, local, 40)
    url = upload_tree(store, str(local), fresh_prefix("twice"))
    cmd = [sys.executable, "-m", "ckpttool", "prune", "--yes", "--keep-last", "3", url]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    names = _names_in_bucket(store, url)
    assert {n[:-6] for n in names if n.endswith(".index")} == {"ckpt-38", "ckpt-39", "ckpt-40"}


def test_bucket_lock_object_keeps_a_second_prune_out(servers, fixtures_dir, tmp_path):
    """A lock object held by another host: prune waits for it (S3's If-None-Match: *)."""
    from ckpttool.storage import remote
    from ckpttool.ops.runs.lock import directory_lock

    s3 = servers["s3"]
    local = tmp_path / "locked"
    _local_dir = shutil.copytree(fixtures_dir / "tf2_many", local)
    url = upload_tree(s3, str(_local_dir), fresh_prefix("locked"))
    with directory_lock(url):
        assert ".ckpttool.lock" in _names_in_bucket(s3, url)
        with pytest.raises(Exception) as refused:
            remote.write_whole(f"{url}/.ckpttool.lock", b"{}", create_only=True)
        assert "exists" in str(refused.value)
    assert ".ckpttool.lock" not in _names_in_bucket(s3, url)


def test_repair_on_a_bucket(store, copy_fixture, tmp_path, tf):
    run = copy_fixture("saver_run")  # absolute paths from another machine in its state file
    url = upload_tree(store, str(run), fresh_prefix("repair"))
    result = run_cli("repair", "--json", url)
    assert result.exit_code == 0, result.stderr
    assert result.json()["changed"] is True
    downloaded = tmp_path / "downloaded"
    _download(store, url, downloaded)
    assert tf.train.latest_checkpoint(str(downloaded)) == str(downloaded / "model.ckpt-50")
    assert (downloaded / "checkpoint.bak").exists()


# -- writing -------------------------------------------------------------------------

def test_rename_vars_between_local_and_bucket(store, fixtures_dir, tmp_path, tf):
    from tests.test_rename_diff import assert_same_tensors

    src = fixtures_dir / "tf2_manager" / "ckpt-3"
    _local, url = upload(store, fixtures_dir, "tf2_manager")
    to_bucket = run_cli("rename-vars", "--regex", "^model/dense1/=model/encoder/", src, f"{url}/renamed-3")
    assert to_bucket.exit_code == 0, to_bucket.stderr
    within = run_cli("rename-vars", "--regex", "^model/dense1/=model/encoder/", f"{url}/ckpt-3", f"{url}/copy-3")
    assert within.exit_code == 0, within.stderr
    back = tmp_path / "back" / "renamed-3"
    assert run_cli("rename-vars", f"{url}/renamed-3", back).exit_code == 0
    mapping = {k: k.replace("model/dense1/", "model/encoder/")
               for k in tf.train.load_checkpoint(str(src)).get_variable_to_shape_map()}
    assert_same_tensors(tf, src, back, mapping)
    downloaded = tmp_path / "downloaded"
    _download(store, url, downloaded)
    assert_same_tensors(tf, src, downloaded / "copy-3", mapping)
    assert tf.train.latest_checkpoint(str(downloaded)) == str(downloaded / "copy-3")
    linked = run_cli("rename-vars", "--link", src, f"{url}/linked")
    assert_one_line_error(linked, 2)


def test_convert_and_export_to_a_bucket(store, fixtures_dir, tmp_path, tf):
    import numpy as np

    _local, url = upload(store, fixtures_dir, "saver_run")
    result = run_cli("convert", f"{url}/model.ckpt-50", f"{url}/weights.safetensors")
    assert result.exit_code == 0, result.stderr
    doc = run_cli("inspect", "--json", "--values", f"{url}/weights.safetensors").json()
    reader = tf.train.load_checkpoint(str(fixtures_dir / "saver_run" / "model.ckpt-50"))
    for var in doc["variables"]:
        np.testing.assert_array_equal(np.array(var["value"], dtype=np.float64).reshape(var["shape"]),
                                      reader.get_tensor(var["name"]).astype(np.float64))
    exported = run_cli("export-json", "--part", "saver", "-o", f"{url}/saver.json", f"{url}/model.ckpt-50.meta")
    assert exported.exit_code == 0, exported.stderr
    frozen = run_cli("freeze", "--output-nodes", "output", "-o", f"{url}/frozen.pb", f"{url}/model.ckpt-50")
    assert frozen.exit_code == 0, frozen.stderr
    assert {"saver.json", "frozen.pb", "weights.safetensors"} <= _names_in_bucket(store, url)


def test_average_with_layout_and_dtype_to_a_bucket(store, fixtures_dir, tmp_path, tf):
    """average reads its sources from the bucket and writes there, through the staged transpose and cast."""
    import numpy as np

    _local, url = upload(store, fixtures_dir, "saver_run")
    result = run_cli("average", f"{url}/model.ckpt-30", f"{url}/model.ckpt-50", "-o", f"{url}/avg.safetensors",
                     "--layout", "torch", "--dtype", "float16")
    assert result.exit_code == 0, result.stderr
    doc = run_cli("inspect", "--json", "--values", f"{url}/avg.safetensors").json()
    values = {v["name"]: np.array(v["value"]) for v in doc["variables"]}
    readers = [tf.train.load_checkpoint(str(fixtures_dir / "saver_run" / f"model.ckpt-{s}")) for s in (30, 50)]
    mean = np.mean([r.get_tensor("dense/kernel").astype(np.float64) for r in readers], axis=0)
    np.testing.assert_array_equal(values["dense.weight"], mean.astype(np.float32).T.astype(np.float16))
    assert values["global_step"] == readers[1].get_tensor("global_step")


# -- failures: one line, exit 3, nothing deleted ---------------------------------------------

@pytest.mark.parametrize("killed", [False, True], ids=["index-put-fails", "killed-during-index-put"])
def test_convert_overwrite_to_a_bucket_never_pairs_an_old_index_with_new_data(servers, fixtures_dir, tmp_path, tf,
                                                                             monkeypatch, killed):
    """`convert --overwrite` to a bucket whose index PUT fails (or that is killed during it, so that
    nothing is cleaned up): DST is the old checkpoint, whole, or no checkpoint; never an old index
    over new data, and never the old index without its data."""
    from ckpttool.errors import BadInput
    from ckpttool.storage import fs, remote
    from tests.test_rename_diff import assert_same_tensors

    s3 = servers["s3"]
    url = s3.url(fresh_prefix("overwrite"))
    old_src, new_src = fixtures_dir / "saver_run" / "model.ckpt-50", fixtures_dir / "tf2_manager" / "ckpt-3"
    assert run_cli("convert", old_src, f"{url}/out").exit_code == 0
    upload_file = remote.upload

    def index_put_fails(path, target):
        if target.endswith(".index"):
            if killed:  # a killed process cleans nothing up
                monkeypatch.setattr(fs, "remove_files", lambda paths: None)
            raise BadInput(f"{target}: the server said no")
        upload_file(path, target)

    monkeypatch.setattr(remote, "upload", index_put_fails)
    result = run_cli("convert", "--overwrite", new_src, f"{url}/out")
    assert result.exit_code == 3, result.stderr
    monkeypatch.undo()
    downloaded = tmp_path / "downloaded"
    _download(s3, url, downloaded)
    if (downloaded / "out.index").exists():
        assert_same_tensors(tf, old_src, downloaded / "out")
    else:
        assert tf.train.latest_checkpoint(str(downloaded)) is None


@pytest.mark.parametrize("command,sent", [("rename-vars", ".data-00000-of-00001"), ("convert", ".data-00000-of-00001"),
                                          ("rename-vars", ".index")])
def test_ctrl_c_while_an_upload_completes_leaves_no_object(servers, tmp_path, tf, monkeypatch, sigint_reaches_children,
                                                           command, sent):
    """Ctrl-C lands while rename-vars (or convert) to a bucket sends a data shard or the index (the
    request sends the signal just then): exit 130, and once no request of the run is in flight DST
    is nothing, or (the index being the commit) a checkpoint TensorFlow restores; before, the upload
    went on behind the exit and left the shard, or an index without its data, behind."""
    from tests.test_rename_diff import assert_same_tensors

    import asyncio

    import s3fs
    from fsspec.asyn import sync_wrapper

    from ckpttool.storage import remote

    s3 = servers["s3"]
    src = tmp_path / "src" / "model.ckpt-1"
    tf.raw_ops.SaveV2(prefix=str(src), tensor_names=["w"], shape_and_slices=[""],
                      tensors=[tf.ones((1 << 20,), tf.float32)])
    url = s3.url(fresh_prefix("ctrl-c"))
    call_s3 = s3fs.S3FileSystem._call_s3

    async def interrupt_while_the_shard_goes(self, method, *args, **kwargs):
        if method in ("put_object", "complete_multipart_upload") and kwargs["Key"].endswith(sent):
            os.kill(os.getpid(), signal.SIGINT)  # handled by the main thread, waiting for this request
        return await call_s3(self, method, *args, **kwargs)

    monkeypatch.setattr(remote, "_instances", {})
    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", interrupt_while_the_shard_goes)
    monkeypatch.setattr(s3fs.S3FileSystem, "call_s3", sync_wrapper(interrupt_while_the_shard_goes))  # S3File's way
    result = run_cli(command, src, f"{url}/dst")
    monkeypatch.undo()
    assert result.exit_code == 130, result.stderr
    fs = remote.filesystem("s3")

    async def requests_in_flight_end():  # readiness: whatever the run left running has ended
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=60)

    asyncio.run_coroutine_threadsafe(requests_in_flight_end(), fs.loop).result()
    left = {os.path.basename(path) for path in fs.find(remote.split_url(url)[1])}
    if left:
        assert sent == ".index" and left == {"checkpoint", "dst.index", "dst.data-00000-of-00001"}
        _download(s3, url, tmp_path / "downloaded")
        assert_same_tensors(tf, src, tmp_path / "downloaded" / "dst")
        assert tf.train.latest_checkpoint(str(tmp_path / "downloaded")) == str(tmp_path / "downloaded" / "dst")


def test_missing_bucket_and_missing_prefix(store):
    for url in (f"{store.protocol}://no-such-bucket-{os.getpid()}/run", store.url("no", "such", "run")):
        for args in (["ls", url], ["latest", url], ["inspect", url], ["prune", "--yes", "--keep-last", "1", url]):
            result = run_cli(*args)
            assert_one_line_error(result, 3)


def test_server_down_is_one_line(tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_MAX_ATTEMPTS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ckpttool", "ls", f"s3://{BUCKET}/run"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert_one_line_error(proc, 3)


def test_access_denied_is_one_line_and_deletes_nothing(servers, fixtures_dir):
    import urllib.request

    s3 = servers["s3"]
    _local, url = upload(s3, fixtures_dir, "prune_run")
    before = _names_in_bucket(s3, url)

    def auth_after(count: str) -> None:  # moto's switch: credentials are checked after `count` requests
        request = urllib.request.Request(f"{s3.endpoint}/moto-api/reset-auth", method="POST", data=count.encode(),
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request).read()

    auth_after("0")  # from now on the server checks credentials, and ours are unknown to it
    try:
        result = run_cli("prune", "--yes", "--keep-last", "1", url)
    finally:
        auth_after("inf")
    assert_one_line_error(result, 3)
    assert _names_in_bucket(s3, url) == before


def test_data_shard_vanished_after_listing(store, fixtures_dir):
    from ckpttool.storage import remote
    _local, url = upload(store, fixtures_dir, "saver_run")
    remote.remove_many([f"{url}/model.ckpt-50.data-00000-of-00001"])
    assert_one_line_error(run_cli("inspect", "--values", f"{url}/model.ckpt-50"), 3)
    verify = run_cli("verify", "--json", f"{url}/model.ckpt-50")
    assert verify.exit_code == 1 and {e["problem"] for e in verify.json()["errors"]} == {"missing_shard"}


def test_unknown_backend_names_the_extra_to_install():
    result = run_cli("ls", "az://container/run")
    assert_one_line_error(result, 3)
    assert "pip install" in result.stderr or "install" in result.stderr


def test_storage_option_reaches_the_backend(servers, fixtures_dir):
    gcs = servers["gs"]
    _local, url = upload(gcs, fixtures_dir, "tf2_many")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSSPEC_GS")}
    proc = subprocess.run([sys.executable, "-m", "ckpttool", "--storage-option", "token=anon", "latest", url],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{url}/ckpt-6"


def test_local_commands_never_import_fsspec(fixtures_dir):
    probe = ("import sys\nfrom ckpttool.cli.app import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
             "    pass\nprint('FSSPEC' if 'fsspec' in sys.modules else 'NO_FSSPEC', file=sys.stderr)")
    for args in (["latest", str(fixtures_dir / "saver_run")], ["inspect", "--json", str(fixtures_dir / "saver_run")],
                 ["prune", "--dry-run", "--keep-last", "1", str(fixtures_dir / "prune_run")]):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        assert "NO_FSSPEC" in proc.stderr, (args, proc.stderr[-500:])


def test_rename_within_a_bucket_copies_on_the_server(servers, fixtures_dir, tmp_path, tf):
    """Shards move by server-side copy: the transfer is the index and the object graph, not the data."""
    import numpy as np

    prefix = tmp_path / "big" / "ckpt"
    prefix.parent.mkdir()
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=["w"], shape_and_slices=[""],
                      tensors=[tf.constant(np.ones((16, 1024, 1024), np.float32))])  # 64 MiB
    s3 = servers["s3"]
    url = upload_tree(s3, str(prefix.parent), fresh_prefix("copy"))
    proxy = CountingProxy(int(s3.endpoint.rsplit(":", 1)[1]))
    try:
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        proc = subprocess.run([sys.executable, "-m", "ckpttool", "rename-vars", "--map", "w=renamed",
                               f"{url}/ckpt", f"{url}/copy"], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proxy.downstream_bytes < 1 << 20, proxy.downstream_bytes
    finally:
        proxy.close()
    downloaded = tmp_path / "downloaded"
    _download(s3, url, downloaded)
    np.testing.assert_array_equal(tf.train.load_checkpoint(str(downloaded / "copy")).get_tensor("renamed"),
                                  np.ones((16, 1024, 1024), np.float32))


def test_a_store_without_conditional_writes(fixtures_dir, tf):
    """memory:// (fsspec's in-process store): every command works; prune keeps runs of this host apart."""
    from ckpttool.storage import remote
    fs = remote.filesystem("memory")
    root = f"/mem-{os.getpid()}"
    for name in os.listdir(fixtures_dir / "tf2_many"):
        fs.pipe_file(f"{root}/run/{name}", (fixtures_dir / "tf2_many" / name).read_bytes())
    url = f"memory://{root}/run"
    assert run_cli("latest", url).stdout.strip() == f"{url}/ckpt-6"
    assert run_cli("verify", url).exit_code == 0
    result = run_cli("prune", "--yes", "--json", "--keep-last", "2", url)
    assert result.exit_code == 0, result.stderr
    assert sorted(d["name"] for d in result.json()["deleted"]) == [f"ckpt-{i}" for i in range(1, 5)]
    assert sorted(n.rsplit("/", 1)[1] for n in fs.ls(f"{root}/run", detail=False)) == \
        sorted(["checkpoint"] + [f"ckpt-{i}{s}" for i in (5, 6) for s in (".index", ".data-00000-of-00001")])


def test_an_object_removed_between_listing_and_read_counts_as_missing(monkeypatch):
    """A second prune planning beside a running one sees its journal listed, then gone when it
    reads it (test_two_prunes_at_once_on_one_prefix met this in 1 run of 3: exit 3 "no prune
    journal"). Reproduced exactly on memory://: the object vanishes right after the listing."""
    from ckpttool.errors import NotFound
    from ckpttool.storage import remote
    store = remote.filesystem("memory")
    store.pipe_file("/race/.ckpttool-prune.journal", b"{}")
    assert "/race/.ckpttool-prune.journal" in store.ls("/race", detail=False)
    store.rm("/race/.ckpttool-prune.journal")
    assert remote.read_capped("memory://race/.ckpttool-prune.journal", 1 << 20, "prune journal",
                              missing_ok=True) is None
    with pytest.raises(NotFound):
        remote.read_capped("memory://race/.ckpttool-prune.journal", 1 << 20, "prune journal")
    store.pipe_file("/race/prefix/.ckpttool-prune.journal/part", b"{}")  # a prefix is never read as the object
    with pytest.raises(NotFound):
        remote.read_capped("memory://race/prefix/.ckpttool-prune.journal", 1 << 20, "prune journal", missing_ok=True)


def test_a_small_object_is_read_in_one_request(monkeypatch):
    """State files, journals and lock objects are read with one GET, no lookup before it: `prune -r`
    reads several per run directory (issue 21), each a request that waits on the network."""
    from ckpttool.storage import remote
    store = remote.filesystem("memory")
    store.pipe_file("/one/checkpoint", b'model_checkpoint_path: "ckpt-1"\n')

    def no_lookup(url):
        raise AssertionError(f"looked up {url} before reading it")

    monkeypatch.setattr(remote, "info", no_lookup)
    assert remote.read_capped("memory://one/checkpoint", 1 << 20, "state file") == b'model_checkpoint_path: "ckpt-1"\n'


# -- weights files in a bucket (issue 16 item 15) -----------------------------------------------

def test_npz_and_safetensors_in_a_bucket_read_as_on_disk(store, fixtures_dir, tmp_path):
    import numpy as np

    local = tmp_path / "weights"
    local.mkdir()
    rng = np.random.default_rng(3)
    arrays = {"w": rng.standard_normal((300, 7)).astype(np.float32), "flags": np.array([True, False]),
              "f": np.asfortranarray(rng.standard_normal((5, 3)))}
    np.savez(local / "numpy.npz", **arrays)
    np.savez_compressed(local / "compressed.npz", **arrays)
    for fmt in ("npz", "safetensors"):  # files ckpttool wrote itself
        written = run_cli("convert", fixtures_dir / "saver_run", local / f"ours.{fmt}")
        assert written.exit_code == 0, written.stderr
    url = upload_tree(store, str(local), fresh_prefix("weights"))
    for name in ("numpy.npz", "compressed.npz", "ours.npz", "ours.safetensors"):
        remote = run_cli("inspect", "--json", "--values", f"{url}/{name}")
        assert remote.exit_code == 0, (name, remote.stderr)
        on_disk = run_cli("inspect", "--json", "--values", local / name).json()
        assert _localize(remote.json(), str(local), url) == on_disk
        assert run_cli("verify", f"{url}/{name}").exit_code == 0
    import ckpttool

    with ckpttool.open(f"{url}/numpy.npz") as ckpt:  # numpy is the oracle of the values
        for key, array in arrays.items():
            np.testing.assert_array_equal(ckpt.read(key), array)


def test_keras_files_in_a_bucket_open_as_files(store, fixtures_dir):
    """The storage side of reading .keras and .weights.h5 from a bucket: the object is a seekable
    file that zipfile and h5py read as they read the local file."""
    import zipfile

    import h5py
    import numpy as np

    from ckpttool.storage.remote import RemoteInput

    local, url = upload(store, fixtures_dir, "keras3")
    with zipfile.ZipFile(os.path.join(local, "m.keras")) as on_disk, \
            zipfile.ZipFile(RemoteInput.open(f"{url}/m.keras", "Keras archive")) as remote:
        assert remote.namelist() == on_disk.namelist()
        for name in on_disk.namelist():
            assert remote.read(name) == on_disk.read(name)

    def datasets(handle) -> dict:
        found = {}
        handle.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                          else None)
        return found

    with h5py.File(os.path.join(local, "m.weights.h5"), "r") as on_disk, \
            h5py.File(RemoteInput.open(f"{url}/m.weights.h5", "Keras weights file"), "r") as remote:
        expected, got = datasets(on_disk), datasets(remote)
    assert expected and set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
    keras_inspect = run_cli("inspect", "--json", "--values", f"{url}/m.keras")
    assert keras_inspect.exit_code == 0, keras_inspect.stderr
    assert _localize(keras_inspect.json(), local, url) == run_cli("inspect", "--json", "--values",
                                                                  os.path.join(local, "m.keras")).json()


def test_keras_weights_and_legacy_h5_in_a_bucket_read_as_on_disk(store, fixtures_dir, legacy_dir, tmp_path):
    """A Keras 3 .weights.h5 (and a legacy Keras HDF5 model) in a bucket: h5py reads the object
    through RemoteInput; every answer equals the local one."""
    local = tmp_path / "keras"
    local.mkdir()
    shutil.copyfile(fixtures_dir / "keras3" / "m.weights.h5", local / "m.weights.h5")
    shutil.copyfile(fixtures_dir / "keras3" / "m.keras", local / "m.keras")
    shutil.copyfile(legacy_dir / "full.h5", local / "full.h5")
    url = upload_tree(store, str(local), fresh_prefix("keras"))
    for name, fmt in (("m.weights.h5", "keras"), ("m.keras", "keras"), ("full.h5", "keras_h5")):
        remote = run_cli("inspect", "--json", "--values", f"{url}/{name}")
        assert remote.exit_code == 0, (name, remote.stderr)
        on_disk = run_cli("inspect", "--json", "--values", local / name).json()
        assert on_disk["format"] == fmt and on_disk["variables"]
        assert _localize(remote.json(), str(local), url) == on_disk
        assert run_cli("verify", f"{url}/{name}").exit_code == 0


def test_convert_like_into_a_bucket(store, like_dir, tmp_path):
    """A Keras 3 file written after a template into a bucket, and from a template in it: the same
    bytes of weights as the local convert."""
    local = tmp_path / "local.weights.h5"
    assert run_cli("convert", like_dir / "trained.weights.h5", local, "--like",
                   like_dir / "template.weights.h5").exit_code == 0
    url = upload_tree(store, str(like_dir), fresh_prefix("like"))
    for template in (like_dir / "template.weights.h5", f"{url}/template.weights.h5"):
        out = f"{url}/out-{next(_counter)}.weights.h5"
        written = run_cli("convert", like_dir / "trained.weights.h5", out, "--like", template)
        assert written.exit_code == 0, written.stderr
        remote = run_cli("inspect", "--json", "--values", out).json()
        assert remote["variables"] == run_cli("inspect", "--json", "--values", local).json()["variables"]


@pytest.mark.parametrize("where", ["bucket", "local"])
def test_recursive_prune_applies_run_directories_concurrently(servers, fixtures_dir, tmp_path, monkeypatch, where):
    """`prune -r` carries out its plans several run directories at a time, in a bucket (each
    directory's lock, journal and state file: requests that wait on the network) and locally: two
    of them meet at a barrier, which one-by-one applies never reach. What is deleted in the bucket
    is what a local prune -r deletes."""
    import threading

    import ckpttool.ops.retention.batches as batches

    local = tmp_path / "runs"
    for run in ("a", "b"):
        shutil.copytree(fixtures_dir / "tf2_many", local / run)
    url = upload_tree(servers["s3"], str(local), fresh_prefix("runs"))
    met = threading.Barrier(2, timeout=300)  # a readiness condition, not a measured time
    step = "_journal_and_rewrite_state" if where == "bucket" else "apply_prune"
    real_step = getattr(batches, step)
    calls = []

    def step_after_meeting(*args, **kwargs):
        calls.append(1)
        try:
            met.wait()
        except threading.BrokenBarrierError:
            raise AssertionError("run directories applied one at a time") from None
        return real_step(*args, **kwargs)

    monkeypatch.setattr(batches, step, step_after_meeting)
    first = run_cli("prune", "-r", "--yes", "--json", "--keep-last", "1", url if where == "bucket" else local)
    assert first.exit_code == 0, first.stderr
    assert len(calls) == 2 and not met.broken
    if where == "local":
        return
    monkeypatch.setattr(batches, step, real_step)
    local_doc = run_cli("prune", "-r", "--yes", "--json", "--keep-last", "1", local).json()
    deleted = {d["directory"].rsplit("/", 1)[-1]: sorted(x["name"] for x in d["deleted"])
               for d in first.json()["directories"]}
    assert deleted == {d["directory"].rsplit("/", 1)[-1]: sorted(x["name"] for x in d["deleted"])
                       for d in local_doc["directories"]}
    assert all(deleted.values())


def test_average_counts_a_checkpoint_once_through_a_protocol_alias(store, fixtures_dir, tmp_path):
    """s3a:// is s3://, gcs:// is gs:// (fsspec's registry): one checkpoint given through both would
    count twice in the mean; refused (exit 2) naming both arguments."""
    _local, url = upload(store, fixtures_dir, "saver_run")
    alias = {"s3": "s3a", "gs": "gcs"}[store.protocol] + url[len(store.protocol):]
    first, second = f"{url}/model.ckpt-50", f"{alias}/model.ckpt-50"
    result = run_cli("average", first, second, "-o", str(tmp_path / "o.npz"))
    assert_one_line_error(result, 2)
    assert first in result.stderr and second in result.stderr and not (tmp_path / "o.npz").exists()


class _RefusingFtpServer:
    """An FTP server on 127.0.0.1 that greets, takes one command and refuses the login: enough to see
    what reached it (the host and port connected to, the user named)."""

    def __init__(self):
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.commands: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection, connection.makefile("rwb") as stream:
            stream.write(b"220 ready\r\n")
            stream.flush()
            self.commands.append(stream.readline().decode().strip())
            stream.write(b"530 Login incorrect.\r\n")
            stream.flush()

    def close(self) -> None:
        import socket

        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes an accept() still waiting (close alone does not)
        except OSError:
            pass
        self.listener.close()
        self.thread.join()


def test_ftp_url_reaches_its_server_and_fails_in_one_line():
    """`ls ftp://alice@127.0.0.1:PORT/run`: the backend connects to that host and port as alice (the
    URL's server never reached it: `FTPFileSystem.__init__() missing ... 'host'`), and what the server
    answers is one error line, with no destructor traceback after it."""
    server = _RefusingFtpServer()
    try:
        proc = run_subprocess("ls", f"ftp://alice@127.0.0.1:{server.port}/run")
    finally:
        server.close()
    assert_one_line_error(proc, 3)
    assert server.commands == ["USER alice"]
    assert "530" in proc.stderr and "Exception ignored" not in proc.stderr


def test_ftp_url_without_a_server_is_one_line():
    proc = run_subprocess("ls", "ftp:///run")
    assert_one_line_error(proc, 3)
    assert "Exception ignored" not in proc.stderr and "ftp://HOST" in proc.stderr


def test_file_urls_never_open_a_fifo(like_dir, tmp_path):
    """A FIFO named like a Keras checkpoint beside a real one: `ls file:///DIR` lists what `ls DIR`
    lists (it waited forever in the FIFO's open), and reading the FIFO by URL is refused at once.
    The timeout only turns a hang into a failure."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(like_dir / "trained.weights.h5", run / "w.02.weights.h5")
    os.mkfifo(run / "w.01.weights.h5")
    by_url = run_subprocess("ls", "--json", f"file://{run}", timeout=300)
    assert by_url.returncode == 0, by_url.stderr
    by_path = run_cli("ls", "--json", run)
    assert [c["name"] for c in json.loads(by_url.stdout)["checkpoints"]] == \
        [c["name"] for c in by_path.json()["checkpoints"]] == ["w.02.weights.h5"]
    for command in ("inspect", "verify"):
        proc = run_subprocess(command, f"file://{run}/w.01.weights.h5", timeout=300)
        assert_one_line_error(proc, 3)
        assert "FIFO" in proc.stderr
