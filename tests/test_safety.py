"""Data-loss paths found by an adversarial run (issue 8, items 1-6): a crafted
prune journal, rename-vars onto its own source, user files that look like
debris, an unreadable state file, lost file modes and stale temp shards.
Each test fails on the code before its fix."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from ckpttool.formats.tf.state import CheckpointState, read_state, write_state
from tests.conftest import assert_one_line_error, run_cli
from tests.test_prune_repair import HOUR, STEPS, assert_tf_restores_latest, names, on_disk
from tests.test_rename_diff import assert_same_tensors, digest

JOURNAL = ".ckpttool-prune.journal"


def tree_listing(root) -> dict[str, int]:
    """Every file under `root` with its size: what must not change when nothing may be deleted."""
    listing = {}
    for current, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(current, name)
            listing[os.path.relpath(path, root)] = os.lstat(path).st_size
    return listing


def write_journal(run, deletions) -> None:
    (run / JOURNAL).write_text(json.dumps({"deletions": deletions}))


# -- 1. a crafted journal ------------------------------------------------------------

def _hostile_journals(run):
    latest = "model.ckpt-1000"
    return {
        "parent": [{"name": "model.ckpt-100", "step": 100, "paths": [str(run / "..")]}],
        "itself": [{"name": "model.ckpt-100", "step": 100, "paths": [str(run / ".")]}],
        "dotdot-name": [{"name": "..", "step": None, "paths": [".."]}],
        "user-file": [{"name": "model.ckpt-100", "step": 100, "paths": [str(run / "userdata")]}],
        "state-file": [{"name": "model.ckpt-100", "step": 100, "paths": [str(run / "checkpoint")]}],
        "state-file-as-name": [{"name": "checkpoint", "step": None, "paths": ["checkpoint"]}],
        "latest-index": [{"name": latest, "step": 1000, "paths": [str(run / f"{latest}.index")]}],
        "other-checkpoint": [{"name": "model.ckpt-100", "step": 100, "paths": [str(run / "model.ckpt-200.index")]}],
        "outside": [{"name": "x", "step": None, "paths": [str(run.parent / "sibling" / "x.index")]}],
        "relative-escape": [{"name": "x", "step": None, "paths": ["../sibling/x.index"]}],
        "directory": [{"name": "sub", "step": None, "paths": ["sub"]}],
        "not-a-list": [{"name": "model.ckpt-100", "step": 100, "paths": "model.ckpt-100.index"}],
    }


@pytest.mark.parametrize("case", list(_hostile_journals(__import__("pathlib").Path("/x"))))
def test_crafted_journal_is_refused_and_nothing_is_deleted(copy_fixture, tmp_path, tf, case):
    run = copy_fixture("prune_run")
    (run / "userdata").write_text("precious")
    (run / "sub").mkdir()
    (run / "sub" / "file").write_text("precious too")
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    (sibling / "x.index").write_text("precious, outside")
    write_journal(run, _hostile_journals(run)[case])
    before = tree_listing(tmp_path)
    result = run_cli("prune", "--yes", "--keep-last", "20", run)
    assert_one_line_error(result, 3)
    assert "journal" in result.stderr
    assert tree_listing(tmp_path) == before
    assert_tf_restores_latest(tf, run, "model.ckpt-1000")


def test_journal_that_is_a_fifo_is_refused_without_hanging(copy_fixture):
    run = copy_fixture("prune_run")
    os.mkfifo(run / JOURNAL)
    proc = subprocess.run([sys.executable, "-m", "ckpttool", "prune", "--yes", "--keep-last", "2", str(run)],
                          capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, 3)
    assert on_disk(run) == names(STEPS) | {"best.ckpt-300", "best.ckpt-700"}


def test_genuine_journal_is_resumed_after_the_directory_moved(copy_fixture, tmp_path, tf):
    """An interrupted prune's journal names files only, so it still applies after a move."""
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules

    run = copy_fixture("prune_run")

    class Crash(Exception):
        pass

    def crash_after_journal(step):
        if step == "journal written":
            raise Crash

    with pytest.raises(Crash):
        apply_prune(plan_prune(str(run), RetentionRules(keep_last=2)), fault=crash_after_journal)
    moved = tmp_path / "moved"
    os.rename(run, moved)
    result = run_cli("prune", "--yes", "--json", "--keep-last", "20", moved)
    assert result.exit_code == 0, result.stderr
    assert {d["name"] for d in result.json()["deleted"]} == names(range(100, 801, 100))
    assert on_disk(moved) == names([900, 1000]) | {"best.ckpt-300", "best.ckpt-700"}
    assert not (moved / JOURNAL).exists()


# -- 2. rename-vars never writes onto its source ------------------------------------------

def test_rename_through_a_symlinked_directory_is_refused(fixtures_dir, tmp_path, tf):
    run = tmp_path / "run"
    shutil.copytree(fixtures_dir / "saver_run", run)
    os.symlink(run, tmp_path / "alias")
    before = digest(run / "model.ckpt-50")
    result = run_cli("rename-vars", "--overwrite", "--add-prefix", "x/", run / "model.ckpt-50",
                     tmp_path / "alias" / "model.ckpt-50")
    assert_one_line_error(result, 4)
    assert digest(run / "model.ckpt-50") == before
    assert_same_tensors(tf, fixtures_dir / "saver_run" / "model.ckpt-50", run / "model.ckpt-50")



@pytest.mark.parametrize("to", ["tf", "safetensors"])
def test_convert_through_a_symlinked_directory_is_refused(fixtures_dir, tmp_path, tf, to):
    """convert's twin of the rename-vars case: `--overwrite` onto SRC reached through a symlink
    replaced SRC's files with the converted ones (found in the final review)."""
    run = tmp_path / "run"
    shutil.copytree(fixtures_dir / "saver_run", run)
    os.symlink(run, tmp_path / "alias")
    source = run / "model.ckpt-50"
    if to == "safetensors":
        assert run_cli("convert", source, run / "model.safetensors").exit_code == 0
        source = run / "model.safetensors"
    destination = tmp_path / "alias" / source.name
    before = {name: (run / name).read_bytes() for name in os.listdir(run)}
    result = run_cli("convert", "--to", to, "--overwrite", "--drop", "Adam", source, destination)
    assert_one_line_error(result, 4)
    assert {name: (run / name).read_bytes() for name in os.listdir(run)} == before
    assert_same_tensors(tf, fixtures_dir / "saver_run" / "model.ckpt-50", run / "model.ckpt-50")

@pytest.mark.parametrize("suffix", [".index", ".data-00000-of-00001", ".meta"])
def test_rename_onto_one_of_the_sources_files_is_refused(fixtures_dir, tmp_path, tf, suffix):
    run = tmp_path / "run"
    shutil.copytree(fixtures_dir / "saver_run", run)
    state_before = (run / "checkpoint").read_bytes()
    before = digest(run / "model.ckpt-40")
    result = run_cli("rename-vars", "--overwrite", run / "model.ckpt-40", run / f"model.ckpt-40{suffix}")
    assert_one_line_error(result, 4)
    assert (run / "checkpoint").read_bytes() == state_before
    assert digest(run / "model.ckpt-40") == before
    assert os.path.basename(tf.train.latest_checkpoint(str(run))) == "model.ckpt-50"


# -- 3. --clean deletes only provable debris --------------------------------------------

def test_clean_leaves_user_files_that_look_like_debris(copy_fixture, tf):
    run = copy_fixture("prune_run")
    old = (os.path.getmtime(run / "checkpoint") - 30 * HOUR,) * 2
    user_files = {
        "vocab.index": b"the\nof\nand\n" * 100,
        "embeddings.data-00000-of-00001": os.urandom(4096),
        "checkpoint.tmpl": b"template of my own",
        "notes.tempstate5": b"mine",
        "eval_temp/results.json": b"{}",
        "eval_temp/part-00000-of-00001.index": b"not from a save",
        "scratch_temp/sub/deep.txt": b"x",
    }
    for name, data in user_files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    for path in [run / n for n in user_files] + [run / "eval_temp", run / "scratch_temp"]:
        os.utime(path, old)
    result = run_cli("prune", "--yes", "--json", "--clean", "--min-age", "1h", "--keep-last", "20", run)
    assert result.exit_code == 0, result.stderr
    assert result.json()["deleted"] == []
    for name, data in user_files.items():
        assert (run / name).read_bytes() == data, name
    left_alone = {os.path.basename(p["path"]) for p in result.json()["problems"] if p["kind"] == "not_debris"}
    assert {"eval_temp", "scratch_temp"} <= left_alone
    kept = {k["name"]: k["reasons"] for k in result.json()["kept"]}
    assert any("not provably" in r for r in kept["vocab"]) and any("not provably" in r for r in kept["embeddings"])
    assert_tf_restores_latest(tf, run, "model.ckpt-1000")


def test_clean_removes_debris_of_saves_the_state_file_knew(copy_fixture, tf):
    """Data shards whose index is gone count as debris when the state file listed them."""
    run = copy_fixture("prune_run")
    os.unlink(run / "model.ckpt-500.index")  # an index lost, its shards and state entry left
    stale = os.path.getmtime(run / "checkpoint") - 30 * HOUR
    for name in os.listdir(run):
        if name.startswith("model.ckpt-500."):
            os.utime(run / name, (stale, stale))
    doc = run_cli("prune", "--yes", "--json", "--clean", "--keep-last", "20", run).json()
    assert [d["name"] for d in doc["deleted"]] == ["model.ckpt-500"]
    assert not [n for n in os.listdir(run) if n.startswith("model.ckpt-500.")]
    assert_tf_restores_latest(tf, run, "model.ckpt-1000")


# -- 4. an unreadable state file: prune refuses --------------------------------------------

def _rolled_back_then_garbled(run):
    """The state file names model.ckpt-300 (a rollback), then gets damaged."""
    write_state(str(run), CheckpointState("model.ckpt-300", tuple(f"model.ckpt-{s}" for s in STEPS)))
    (run / "checkpoint").write_text((run / "checkpoint").read_text() + "garbage {{{\n")


def test_prune_refuses_when_the_state_file_is_unreadable(copy_fixture):
    run = copy_fixture("prune_run")
    _rolled_back_then_garbled(run)
    before = tree_listing(run)
    result = run_cli("prune", "--yes", "--keep-last", "1", run)
    assert_one_line_error(result, 3)
    assert "ckpttool repair" in result.stderr
    assert tree_listing(run) == before
    assert run_cli("latest", run).exit_code == 0  # latest still answers, with a warning


def test_prune_ignore_bad_state_prunes_by_file_times(copy_fixture):
    run = copy_fixture("prune_run")
    _rolled_back_then_garbled(run)
    result = run_cli("prune", "--yes", "--json", "--ignore-bad-state", "--keep-last", "1", run)
    assert result.exit_code == 0, result.stderr
    assert on_disk(run) == {"model.ckpt-1000", "best.ckpt-700"}


def test_recursive_prune_skips_an_unreadable_directory_and_prunes_the_others(fixtures_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(fixtures_dir / "prune_run", root / "bad")
    shutil.copytree(fixtures_dir / "tf2_many", root / "good")
    _rolled_back_then_garbled(root / "bad")
    before = tree_listing(root / "bad")
    result = run_cli("prune", "--yes", "--json", "--recursive", "--keep-last", "1", root)
    assert result.exit_code == 3
    assert tree_listing(root / "bad") == before
    assert on_disk(root / "good") == {"ckpt-6"}
    errors = [d for d in result.json()["directories"] if "error" in d]
    assert [os.path.basename(d["directory"]) for d in errors] == ["bad"]


# -- 5. rewritten files keep their modes ---------------------------------------------------

@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_prune_and_repair_keep_the_state_files_mode(copy_fixture, umask_022):
    run = copy_fixture("prune_run")
    os.chmod(run / "checkpoint", 0o644)
    assert prune_ok(run, "--keep-last", "3")
    assert _mode(run / "checkpoint") == 0o644
    os.chmod(run / "checkpoint", 0o640)
    state = read_state(str(run))
    write_state(str(run), CheckpointState(state.model_checkpoint_path, ("/elsewhere/model.ckpt-1",)
                                          + state.all_model_checkpoint_paths))
    os.chmod(run / "checkpoint", 0o640)
    assert run_cli("repair", run).exit_code == 0
    assert _mode(run / "checkpoint") == 0o640
    assert _mode(run / "checkpoint.bak") == 0o640


def prune_ok(run, *args) -> bool:
    result = run_cli("prune", "--yes", run, *args)
    return result.exit_code == 0


def test_rename_vars_writes_files_with_the_umask_mode_and_keeps_replaced_modes(fixtures_dir, tmp_path, umask_022):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint").write_text('model_checkpoint_path: "x"\nall_model_checkpoint_paths: "x"\n')
    os.chmod(out / "checkpoint", 0o664)
    assert run_cli("rename-vars", fixtures_dir / "saver_run" / "model.ckpt-50", out / "renamed").exit_code == 0
    assert _mode(out / "checkpoint") == 0o664
    written = [p for p in os.listdir(out) if p.startswith("renamed.")]
    assert written and all(_mode(out / p) == 0o644 for p in written), {p: oct(_mode(out / p)) for p in written}


# -- 6. a killed rename-vars' temp shards ----------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temp_names(pid: int) -> list[str]:
    """A killed rename-vars' temp data shard: this version's name (`.tmp`, the pid in 8 hex digits,
    24 random ones) and the `.tempstate<pid>` of versions before."""
    return [f".tmp{pid:08x}{os.urandom(12).hex()}", f".tempstate{pid}"]


@pytest.mark.parametrize("suffix", _temp_names(_dead_pid()))
def test_next_rename_removes_temp_shards_of_a_killed_one(fixtures_dir, tmp_path, suffix):
    dst = tmp_path / "dst"
    stale = tmp_path / f"dst.data-00000-of-00001{suffix}"
    stale.write_bytes(b"\0" * 1024)
    listing = run_cli("ls", "--json", tmp_path).json()
    assert str(stale) in {p["path"] for p in listing["problems"]}
    assert run_cli("rename-vars", fixtures_dir / "saver_run" / "model.ckpt-50", dst).exit_code == 0
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "dst.data-00000-of-00001", "dst.index"]


def test_next_rename_leaves_temp_shards_of_a_live_one(fixtures_dir, tmp_path):
    """A temp named for a running process (here: the test's parent) may be another rename-vars at work."""
    live = tmp_path / f"dst.data-00000-of-00001{_temp_names(os.getppid())[0]}"
    live.write_bytes(b"\0" * 1024)
    assert run_cli("rename-vars", fixtures_dir / "saver_run" / "model.ckpt-50", tmp_path / "dst").exit_code == 0
    assert live.read_bytes() == b"\0" * 1024


@pytest.mark.parametrize("suffix", _temp_names(_dead_pid()))
def test_prune_clean_removes_old_temp_shards(copy_fixture, suffix):
    """A temp data shard of a checkpoint the directory holds is debris. One of no checkpoint here
    (a killed rename-vars' destination, or a user's file so named: its bytes cannot tell) is
    reported and kept; rename-vars' next run removes its own."""
    run = copy_fixture("prune_run")
    name = run_cli("ls", "--json", run).json()["checkpoints"][0]["name"]
    stale = run / f"{name}.data-00000-of-00001{suffix}"
    orphan = run / f"renamed.data-00000-of-00001{suffix}"
    old = os.path.getmtime(run / "checkpoint") - 30 * HOUR
    for path in (stale, orphan):
        path.write_bytes(b"\0" * 1024)
        os.utime(path, (old, old))
    doc = run_cli("prune", "--yes", "--json", "--clean", "--keep-last", "20", run).json()
    assert [d["name"] for d in doc["deleted"]] == [stale.name]
    assert not stale.exists() and orphan.exists()
    assert [p["kind"] for p in doc["problems"] if p["path"] == str(orphan)] == ["temp_file", "not_debris"]


@pytest.mark.parametrize("link", [False, True])
def test_rename_never_writes_through_a_planted_symlink(fixtures_dir, tmp_path, tf, link):
    """Someone who may write into DST's directory plants symlinks at every name rename-vars' data
    temp could take (the old `.tempstate<pid>` name, for this pid and the next ones): the files
    they point to keep their bytes, and DST is a checkpoint TensorFlow restores."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    for pid in range(os.getpid(), os.getpid() + 50):
        os.symlink(victim, out / f"dst.data-00000-of-00001.tempstate{pid}")
    src = tmp_path / "src"
    shutil.copytree(fixtures_dir / "saver_run", src)  # --link needs SRC on this file system
    result = run_cli("rename-vars", *(["--link"] if link else []), "--add-prefix", "x/", src / "model.ckpt-50",
                     out / "dst")
    assert result.exit_code == 0, result.stderr
    assert victim.read_bytes() == b"precious"
    assert not os.path.islink(out / "dst.data-00000-of-00001")
    reader = tf.train.load_checkpoint(str(out / "dst"))
    expected = tf.train.load_checkpoint(str(src / "model.ckpt-50"))
    for name in expected.get_variable_to_shape_map():
        assert (reader.get_tensor("x/" + name) == expected.get_tensor(name)).all()


def test_temps_are_created_exclusively_without_following_symlinks(tmp_path, monkeypatch):
    """The one helper every writer goes through: random names, O_CREAT|O_EXCL|O_NOFOLLOW."""
    from ckpttool.storage import atomic

    names = {atomic.temp_name_for(str(tmp_path / "f")) for _ in range(100)}
    assert len(names) == 100 and all(atomic.TEMP_SUFFIX_RE.search(n) for n in names)
    assert {atomic.temp_writer_pid(n) for n in names} == {os.getpid()}
    planted = str(tmp_path / "f.tmp") + "0" * 32
    os.symlink(tmp_path / "victim", planted)
    monkeypatch.setattr(atomic, "temp_name_for", lambda path: planted)
    with pytest.raises(FileExistsError):
        atomic.create_temp_beside(str(tmp_path / "f"))
    assert not (tmp_path / "victim").exists()


def test_rename_vars_never_reads_a_fifo(fixtures_dir, tmp_path):
    """A FIFO as --map-file, or in place of a data shard: one line, exit 3, no hang."""
    os.mkfifo(tmp_path / "map")
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    proc = subprocess.run([sys.executable, "-m", "ckpttool", "rename-vars", "--map-file", str(tmp_path / "map"),
                           str(src), str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, 3)
    run = tmp_path / "run"
    shutil.copytree(fixtures_dir / "saver_run", run)
    os.unlink(run / "model.ckpt-50.data-00000-of-00001")
    os.mkfifo(run / "model.ckpt-50.data-00000-of-00001")
    proc = subprocess.run([sys.executable, "-m", "ckpttool", "rename-vars", str(run / "model.ckpt-50"),
                           str(tmp_path / "out2")], capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, 3)
    assert not list(tmp_path.glob("out*"))
