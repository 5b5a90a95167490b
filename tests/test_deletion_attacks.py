"""An attacker's pass over what deletes and overwrites after issue 24 (prune, prune -r, prune
--clean, repair, convert and average outputs): each way found to make ckpttool delete something
outside the evidence rule is a test here that failed before its fix (or is marked xfail, strict,
with what is left). Checkpoints are written by TensorFlow (tf.train.CheckpointManager), SavedModels
by tf.saved_model (tests/series_fixtures.py); TensorFlow restores what prune keeps."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.test_deletion_handles import _snapshot

OLD = time.time() - 3 * 86400


def _manager_run(tf, run: Path, steps=(1, 2, 3)) -> None:
    variable = tf.Variable(np.zeros(64, np.float32))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(run), max_to_keep=None)
    for step in steps:
        variable.assign(np.full(64, step, np.float32))
        manager.save(checkpoint_number=step)


def _age(root: Path) -> None:
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(current, name), (OLD, OLD), follow_symlinks=False)


def _restores(tf, prefix: Path, value: float) -> None:
    restored = tf.Variable(np.zeros(64, np.float32))
    tf.train.Checkpoint(v=restored).read(str(prefix)).assert_existing_objects_matched()
    assert (restored.numpy() == value).all()


# -- temp files deleted by their names alone -------------------------------------------------------

USERS_TEMPS = ("notes.data-00000-of-00001.tempstate7", "paper.index.tempstate12",
               "paper.index.tmp0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize("name", USERS_TEMPS)
def test_clean_never_deletes_a_users_file_named_like_a_temp_of_a_save(tf, tmp_path, name):
    """`--clean` deleted any file named `X.index.tempstate<digits>`, `X.data-…tempstate<digits>` or
    `X.tmp<32 hex>` with no checkpoint X anywhere and bytes that are no index: a name is no
    evidence. Such a temp is debris when the directory holds checkpoint X (or the state file lists
    it), or when it is the state file's temp, or its bytes begin like an index."""
    run = tmp_path / "run"
    _manager_run(tf, run)
    (run / name).write_text("a user's text, not a save's\n")
    # TensorFlow's own leftovers beside them stay debris: a data temp of ckpt-2, the state file's temp
    (run / "ckpt-2.data-00000-of-00001.tempstate99").write_bytes(b"\0" * 64)
    (run / "checkpoint.tmp" f"{'ab' * 16}").write_text('model_checkpoint_path: "ckpt-3"\n')
    _age(run)
    result = run_cli("prune", "--keep-last", "1", "--clean", "--yes", "--json", run)
    assert result.exit_code == 0, result.stderr
    assert (run / name).read_text() == "a user's text, not a save's\n"
    assert not (run / "ckpt-2.data-00000-of-00001.tempstate99").exists()
    assert not (run / f"checkpoint.tmp{'ab' * 16}").exists()
    assert any(p["kind"] == "not_debris" and p["path"] == str(run / name) for p in result.json()["problems"])
    _restores(tf, run / "ckpt-3", 3)


def test_a_half_written_index_temp_is_debris_by_its_bytes(tf, tmp_path):
    """An index temp whose checkpoint never got its name (the save died before the rename): its
    bytes begin like a tensor-bundle index, which is evidence."""
    run = tmp_path / "run"
    _manager_run(tf, run)
    (run / "ckpt-9.index.tempstate5").write_bytes((run / "ckpt-1.index").read_bytes()[:200])
    _age(run)
    result = run_cli("prune", "--keep-last", "1", "--clean", "--yes", run)
    assert result.exit_code == 0, result.stderr
    assert not (run / "ckpt-9.index.tempstate5").exists()


# -- names a writer never gives: a trailing newline ---------------------------------------------------

def test_names_with_a_trailing_newline_are_not_a_writers(series_dir, tmp_path):
    """`$` matches before a final newline: `temp-4\\n/` was an exporter's debris, `checkpoint-7\\n/`
    an HF Trainer step, though neither writer ever names one so."""
    run = tmp_path / "export"
    shutil.copytree(series_dir / "export", run)
    os.rename(run / "temp-4", run / "temp-4\n")
    shutil.copytree(run / "1", run / "temp-5\n" / "variables", dirs_exist_ok=True)
    (run / "checkpoint-7\n").mkdir()
    (run / "checkpoint-7\n" / "trainer_state.json").write_text('{"log_history": []}')
    _age(run)
    before = _snapshot(run)
    ls = run_cli("ls", "--json", run).json()
    assert sorted(c["name"] for c in ls["checkpoints"]) == ["1", "2", "3"]
    result = run_cli("prune", "--keep-last", "3", "--clean", "--yes", "--json", run)
    assert result.exit_code == 0, result.stderr
    assert result.json()["deleted"] == [] and _snapshot(run) == before


# -- special files named like members ----------------------------------------------------------------

def _special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()


@pytest.mark.parametrize("kind", ["fifo", "socket"])
@pytest.mark.parametrize("where", ["ckpt-1.data-00000-of-00001", "w.01-0.50.weights.h5", "checkpoint-4/trainer_state.json",
                                   "logs/events.out.tfevents.1.host"])
def test_special_files_named_like_members_are_never_opened_nor_deleted(tf, tmp_path, kind, where):
    """A FIFO or socket where a member's file (or a log scored from) would be: no command may hang
    opening it, and none removes it (it is not a regular file). Run as a subprocess under a bound
    so that a hang fails the test instead of the suite."""
    run = tmp_path / "run"
    _manager_run(tf, run, (1, 2, 3))
    (run / "checkpoint-4").mkdir()
    (run / "checkpoint-5").mkdir()
    (run / "checkpoint-5" / "trainer_state.json").write_text('{"log_history": []}')
    (run / "logs").mkdir()
    if where.startswith("ckpt-1"):
        (run / where).unlink()
    _special(run / where, kind)
    _age(run)
    for args in (["--keep-last", "1", "--clean"], ["--keep-best", "1", "--metric", "val_loss", "--drop-unscored"]):
        done = subprocess.run([sys.executable, "-m", "ckpttool", "prune", "--yes", *args, str(run)],
                              capture_output=True, text=True, timeout=60)
        assert "Traceback" not in done.stderr and done.returncode in (0, 3), done.stderr
        assert os.path.lexists(run / where)
    _restores(tf, run / "ckpt-3", 3)


# -- races between plan and apply -----------------------------------------------------------------

def test_a_member_directory_swapped_for_a_link_after_planning_is_not_followed(tmp_path):
    """An HF step directory renamed away and a symlink to a victim's tree put in its place between
    plan and apply: nothing of the victim's goes, and the link itself stays (it is not the
    directory planned)."""
    from ckpttool.ops.retention.prune import apply_prune, plan_prune
    from ckpttool.ops.retention.rules import RetentionRules
    from tests.test_series import _hf_step

    run, victim = tmp_path / "run", tmp_path / "victim"
    run.mkdir()
    for step in (1, 2, 3):
        _hf_step(run, step)
    shutil.copytree(run / "checkpoint-1", victim)
    before = _snapshot(victim)
    plan = plan_prune(str(run), RetentionRules(keep_last=1))
    assert {d.name for d in plan.deleted} == {"checkpoint-1", "checkpoint-2"}
    os.rename(run / "checkpoint-1", tmp_path / "moved")
    os.symlink(victim, run / "checkpoint-1")
    result = apply_prune(plan)
    assert _snapshot(victim) == before
    assert os.path.islink(run / "checkpoint-1")
    assert [d.name for d in result.deleted] == ["checkpoint-2"]
    assert [p.path for p in result.problems] == [str(run / "checkpoint-1")]


# -- outputs written over what they should not --------------------------------------------------------

def test_average_output_given_as_a_link_replaces_the_link_not_its_target(tf, tmp_path):
    """`average -o OUT --overwrite` where OUT is a symlink to a user's file: the user's file must
    keep its bytes (the link is replaced, or the write refused)."""
    run = tmp_path / "run"
    _manager_run(tf, run)
    users = tmp_path / "users_model.safetensors"
    users.write_bytes(b"a user's weights")
    out = tmp_path / "avg.safetensors"
    os.symlink(users, out)
    result = run_cli("average", "--last", "2", "-o", out, "--overwrite", run)
    assert result.exit_code in (0, 4), result.stderr
    assert users.read_bytes() == b"a user's weights"


def test_a_member_hard_linked_to_a_users_file_loses_only_its_name(tf, tmp_path):
    """A pruned checkpoint's data shard that is a hard link of a user's backup: unlinking removes
    the run's name, never the user's bytes (no truncation, no write through the link)."""
    run = tmp_path / "run"
    _manager_run(tf, run)
    backup = tmp_path / "backup.data"
    os.link(run / "ckpt-1.data-00000-of-00001", backup)
    before = backup.read_bytes()
    result = run_cli("prune", "--keep-last", "1", "--yes", run)
    assert result.exit_code == 0, result.stderr
    assert not (run / "ckpt-1.index").exists() and backup.read_bytes() == before
    _restores(tf, run / "ckpt-3", 3)
