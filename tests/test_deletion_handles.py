"""Issue 24, items 6 and 13: prune deletes through the descriptor of the directory it checked.

Someone who may write into a shared run directory swaps names while a prune (root's cron) is
deleting: a user's directory renamed to the data shard about to go, the run directory itself
swapped for a symlink to another run, a `*_temp` debris directory or a step directory replaced
by a user's tree. Each swap happens at a point the test controls (apply_prune's `fault` hook,
called after every file operation), so the race is deterministic. What is found in the place of
what was planned is never deleted nor followed: it is reported, and the prune exits 4 (refused
for safety) once everything else is done. A step directory nested deeper than ckpttool goes is
refused the same way (exit 4, never an internal error), and a journal naming one does not wedge
the prunes after it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.test_prune_repair import _many_checkpoint_dir, assert_tf_restores_latest, on_disk
from tests.test_series import _hf_step, _orbax_step

JOURNAL = ".ckpttool-prune.journal"


def _snapshot(root) -> dict[str, str]:
    """Every entry under `root` (links not followed): a file's sha256, a link's target, `dir`."""
    found = {}
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(current, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                found[relative] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                found[relative] = "dir"
            else:
                with open(path, "rb") as handle:
                    found[relative] = hashlib.sha256(handle.read()).hexdigest()
    return found


def _users_tree(path):
    (path / "thesis").mkdir(parents=True)
    (path / "thesis" / "paper.tex").write_text("\\documentclass{article} alice's thesis")
    (path / "notes.txt").write_text("three years of notes")


def _prune_with_swap(monkeypatch, swap, *args):
    """`ckpttool prune ARGS` with `swap(step)` run after each file operation of the apply."""
    from ckpttool.ops.retention import batches
    from ckpttool.ops.retention import prune as prune_ops

    real_apply = prune_ops.apply_prune
    for module in (prune_ops, batches):  # prune -r applies through batches (several run directories at once)
        monkeypatch.setattr(module, "apply_prune", lambda plan, fault=None, *rest: real_apply(plan, swap, *rest))
    return run_cli("prune", "--yes", *map(str, args))


# -- 6a: a user's directory renamed to the data shard about to be removed -----------------------

def test_a_directory_renamed_to_a_planned_shard_is_never_removed(fixtures_dir, tmp_path, monkeypatch, tf):
    """Right after prune removed ckpt-1.index, another user renamed alice's directory (in the shared
    run directory) to ckpt-1.data-00000-of-00001: prune saw a directory there and rmtree'd it, all
    of alice's files. A name planned as a file is unlinked only while it is a regular file."""
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 3)
    alice = run / "alice"
    _users_tree(alice)
    before = _snapshot(alice)
    shard = run / "ckpt-1.data-00000-of-00001"

    def swap(step):
        if step == "removed ckpt-1.index":
            shard.unlink()
            os.rename(alice, shard)

    result = _prune_with_swap(monkeypatch, swap, "--keep-last", "1", "--json", run)
    assert _snapshot(shard) == before  # alice's tree, whole, under the name it was given
    assert_one_line_error(result, 4)
    assert "ckpt-1.data-00000-of-00001" in result.stderr
    doc = result.json()
    assert sorted(d["name"] for d in doc["deleted"]) == ["ckpt-1", "ckpt-2"]
    assert [p["path"] for p in doc["problems"] if p["kind"] == "not_deleted"] == [str(shard)]
    assert on_disk(run) == {"ckpt-3"} and not (run / JOURNAL).exists()
    assert_tf_restores_latest(tf, run, "ckpt-3")


# -- 6b: the run directory swapped for a symlink after it was checked ---------------------------

@pytest.mark.parametrize("when", ["journal written", "removed ckpt-1.index"])
def test_the_run_directory_swapped_for_a_link_redirects_nothing(fixtures_dir, tmp_path, monkeypatch, tf, when):
    """`team/run` swapped for a symlink to /victim/run (same checkpoint names, as one training script
    writes them) once prune had checked it: everything after went by path, into the victim's
    directory (its state file rewritten, its ckpt-1 and ckpt-2 deleted, our journal left there).
    Every deletion and write goes through the descriptor of the directory checked: the victim's
    files stay as they were, and the prune finishes in the directory it was given."""
    team, victim = tmp_path / "team", tmp_path / "victim"
    team.mkdir()
    victim.mkdir()
    _many_checkpoint_dir(fixtures_dir, team / "run", 3)
    _many_checkpoint_dir(fixtures_dir, victim / "run", 3)
    before = _snapshot(victim)
    moved = tmp_path / "moved"

    def swap(step):
        if step == when:
            os.rename(team / "run", moved)
            os.symlink(victim / "run", team / "run")

    result = _prune_with_swap(monkeypatch, swap, "--keep-last", "1", team / "run")
    assert _snapshot(victim) == before
    assert result.exit_code == 0, result.stderr
    assert on_disk(moved) == {"ckpt-3"} and not (moved / JOURNAL).exists()
    assert_tf_restores_latest(tf, moved, "ckpt-3")
    assert [os.path.basename(p) for p in tf.train.get_checkpoint_state(str(moved)).all_model_checkpoint_paths] == [
        "ckpt-3"]


# -- debris and step directories swapped for a user's tree while the prune runs -----------------

def _old(path, seconds=7200):
    stamp = time.time() - seconds
    for current, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(current, name), (stamp, stamp))
    os.utime(path, (stamp, stamp))


@pytest.mark.parametrize("replacement", ["directory", "symlink"])
def test_a_temp_directory_swapped_for_a_users_tree_is_not_removed(fixtures_dir, tmp_path, monkeypatch, replacement):
    """`--clean` judged ckpt-9_temp/ debris (part files only), then removed whatever was at that
    name with rmtree: alice's tree renamed there after the check was deleted whole (a link to it
    made rmtree fail with an internal error). Only the part files listed under the lock are
    unlinked, each through its directory's descriptor, never following a link."""
    run = tmp_path / "run"
    _many_checkpoint_dir(fixtures_dir, run, 3)
    temp = run / "ckpt-9_temp"
    temp.mkdir()
    shutil.copy(run / "ckpt-1.index", temp / "part-00000-of-00001.index")
    _old(temp)
    alice = tmp_path / "alice" if replacement == "symlink" else run / "alice"
    _users_tree(alice)
    before = _snapshot(alice)

    def swap(step):
        if step == "journal written":  # after the listing, before any removal
            shutil.rmtree(temp)
            if replacement == "symlink":
                os.symlink(alice, temp)
            else:
                os.rename(alice, temp)

    result = _prune_with_swap(monkeypatch, swap, "--keep-last", "1", "--clean", "--min-age", "1m", "--json", run)
    assert _snapshot(alice if replacement == "symlink" else temp) == before
    assert_one_line_error(result, 4)
    assert "ckpt-9_temp" in result.stderr
    assert on_disk(run) == {"ckpt-1", "ckpt-2", "ckpt-3"}  # younger than --min-age


def test_a_step_directory_swapped_for_a_users_tree_is_not_removed(tmp_path, monkeypatch):
    """An Orbax step listed under the lock, then renamed away and replaced by alice's directory:
    only the files listed are unlinked, each a regular file in a directory of the same device
    opened without following links; alice's files stay, and the step is reported as not deleted
    (it was reported deleted, whatever was left)."""
    for step in (100, 200):
        _orbax_step(tmp_path, str(step), "_CHECKPOINT_METADATA")
    alice = tmp_path / "alice"
    _users_tree(alice)
    before = _snapshot(alice)
    from ckpttool.ops.retention import prune as prune_ops
    from ckpttool.ops.retention.rules import RetentionRules

    plan = prune_ops.plan_prune(str(tmp_path), RetentionRules(keep_last=1))
    assert [d.name for d in plan.deleted] == ["100"]
    listed = prune_ops.series.plain_tree

    def list_then_swap(path):
        found = listed(path)
        os.rename(path, tmp_path / "100-moved")
        os.rename(alice, path)
        return found

    monkeypatch.setattr(prune_ops.series, "plain_tree", list_then_swap)
    result = prune_ops.apply_prune(plan)
    assert _snapshot(tmp_path / "100") == before
    assert result.deleted == () and [p.kind for p in result.problems] == ["not_deleted"]


# -- 13a: a step directory nested deeper than ckpttool goes --------------------------------------

def _nest(directory, depth: int) -> None:
    """`directory/a/a/.../a/f`, `depth` levels (made through descriptors: the path grows long)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("a", dir_fd=fd)
            inner = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)


def _unnest(directory) -> None:
    """Remove what _nest made, from the deepest level up, without recursion: pytest removes an old
    run's temporary directories with shutil.rmtree, which recurses once per level and fails at exit
    (RecursionError, after every test passed) on 1,500 of them."""
    fds = [os.open(directory, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        while "a" in os.listdir(fds[-1]):
            fds.append(os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        for name in os.listdir(fds[-1]):
            os.unlink(name, dir_fd=fds[-1])
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("a", dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


def test_a_deeply_nested_step_directory_is_refused_and_never_wedges_the_journal(tmp_path):
    """checkpoint-5/global_step5/a/a/... 1,500 levels deep (DeepSpeed's directory may hold
    anything): prune crashed with RecursionError (exit 70) after writing its journal, and every
    later prune resumed the journal and crashed again. Now the plan keeps the directory, saying
    why (the dry run and the run agree: exit 0, nothing of it deleted, no journal written), and a
    journal that the crashed runs left naming it is reported and cleared, whether the rules would
    delete the directory or not."""
    _hf_step(tmp_path, 5)
    _hf_step(tmp_path, 10)
    (tmp_path / "checkpoint-5" / "global_step5").mkdir()
    _nest(tmp_path / "checkpoint-5" / "global_step5", 1500)
    journal = json.dumps({"deletions": [{"name": "checkpoint-5", "step": 5, "paths": ["checkpoint-5"]}]})
    for keep, left_by_a_crash in ((1, True), (1, False), (5, True)):
        if left_by_a_crash:
            (tmp_path / JOURNAL).write_text(journal)
        result = run_cli("prune", "--yes", "--keep-last", str(keep), tmp_path)
        assert result.exit_code == 0 and "Traceback" not in result.stderr, result.stderr
        assert "checkpoint-5/: it nests 1502 levels deep" in result.stderr
        assert (tmp_path / "checkpoint-5" / "trainer_state.json").exists()
        assert not (tmp_path / JOURNAL).exists()
    after = run_cli("prune", "--yes", "--keep-last", "5", tmp_path)
    assert after.exit_code == 0, after.stderr
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10", "checkpoint-5"]
    _unnest(tmp_path / "checkpoint-5" / "global_step5")


# -- repair writes through the descriptor of the directory it planned on -------------------------

@pytest.mark.parametrize("when", ["after the plan", "after the check"])
def test_repair_writes_only_into_the_directory_planned(fixtures_dir, tmp_path, monkeypatch, tf, when):
    """`team/run` swapped for a symlink to /victim/run (the same checkpoints and state file) between
    plan_repair and apply_repair: repair replaced the victim's state file and wrote a checkpoint.bak
    there. The directory applied must be the one planned, and every write goes through its
    descriptor: swapped before the check, nothing is written (exit 4 from the CLI); after it, the
    repair is done in the directory planned."""
    from ckpttool.formats.tf.state import CheckpointState, write_state
    from ckpttool.ops.runs.repair import apply_repair, plan_repair
    from ckpttool.storage import fs

    team, victim = tmp_path / "team", tmp_path / "victim"
    team.mkdir()
    _many_checkpoint_dir(fixtures_dir, team / "run", 3)
    write_state(str(team / "run"), CheckpointState("ckpt-2", ("ckpt-1", "ckpt-2"), ()))  # ckpt-3 missing
    shutil.copytree(team / "run", victim / "run")
    before = _snapshot(victim)
    moved = tmp_path / "moved"

    def swap():
        os.rename(team / "run", moved)
        os.symlink(victim / "run", team / "run")

    plan = plan_repair(str(team / "run"))
    assert plan.changed
    if when == "after the plan":
        swap()
        with pytest.raises(Exception, match="changed since") as refused:
            apply_repair(plan)
        assert refused.type.__name__ == "Refused"
        assert _snapshot(victim) == before and not (moved / "checkpoint.bak").exists()
        return
    opened = fs.open_checked_directory

    def open_then_swap(path):
        checked = opened(path)
        swap()
        return checked

    monkeypatch.setattr(fs, "open_checked_directory", open_then_swap)
    apply_repair(plan)
    assert _snapshot(victim) == before
    assert (moved / "checkpoint.bak").exists()
    assert_tf_restores_latest(tf, moved, "ckpt-2")
    assert [os.path.basename(p) for p in tf.train.get_checkpoint_state(str(moved)).all_model_checkpoint_paths] == [
        "ckpt-1", "ckpt-3", "ckpt-2"]
