"""Two gaps left after issue 24, where a prune decided on less than the evidence rule asks, or its
plan said something its apply would not do:

- the HF Trainer's `best_model_checkpoint` read from a damaged `trainer_state.json` (a crash
  during the save, a torn byte): the best went unprotected and `--keep-last 1` deleted it. A prune
  whose deletions could take it now refuses (exit 3, naming file and byte) unless
  `--allow-damaged-metrics`, and the plan shows the damage, as with damaged event files;
- a step directory nested deeper than ckpttool removes: `--dry-run` listed it as deleted and every
  real run refused it at apply (exit 4). The plan now keeps it, saying why, so that the dry run
  and the run agree and no journal names it.

trainer_state.json is written as the Trainer writes it (json.dumps(asdict, indent=2, sort_keys=True))
and damaged where Python's json gives up (the oracle of where the damage is); the weights by the
safetensors library, which loads what is kept."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.test_deletion_handles import JOURNAL, _nest
from tests.test_metric_evidence import _trainer_state
from tests.test_series import _hf_step

STEPS = (500, 1000, 1500)
BEST = 500


def _hf_run(root: Path) -> Path:
    """Three Trainer steps whose newest names checkpoint-500 its best; its trainer_state.json path."""
    from safetensors.numpy import save_file

    for step in STEPS:
        member = root / f"checkpoint-{step}"
        member.mkdir()
        save_file({"w": np.full((2, 2), step, np.float32)}, str(member / "model.safetensors"))
        history = [{"epoch": s / 500, "eval_loss": 1.0 / s if s != BEST else 1e-6, "step": s}
                   for s in STEPS if s <= step]
        (member / "trainer_state.json").write_text(_trainer_state(
            history, global_step=step, best_model_checkpoint=f"/out/checkpoint-{min(BEST, step)}",
            best_metric=1e-6))
    return root / f"checkpoint-{max(STEPS)}" / "trainer_state.json"


def _damage(path: Path, where: str) -> int:
    """Damage the file as a crash or a torn write does; the byte offset where Python's json stops."""
    text = path.read_text()
    if where == "torn before the best":  # one byte of best_metric's value torn
        at = text.index('"best_metric": ') + len('"best_metric": ')
        text = text[:at] + "\x7f" + text[at + 1:]
    else:  # "cut in log_history": the save died while writing the log
        text = text[:text.index('"log_history"') + 40]
    path.write_text(text)
    with pytest.raises(ValueError) as parsed:
        json.loads(text)
    return parsed.value.pos


def _listing(root: Path) -> list[str]:
    return sorted(os.listdir(root))


@pytest.mark.parametrize("where", ["torn before the best", "cut in log_history"])
def test_a_damaged_trainer_state_refuses_a_prune_that_could_delete_the_best(tmp_path, where):
    state = _hf_run(tmp_path)
    offset = _damage(state, where)
    before = _listing(tmp_path)

    refused = run_cli("prune", "--keep-last", "1", "--yes", tmp_path)
    assert_one_line_error(refused, 3)
    assert str(state) in refused.stderr and f"byte {offset}" in refused.stderr
    assert _listing(tmp_path) == before

    plan = run_cli("prune", "--keep-last", "1", "--dry-run", "--json", tmp_path)
    assert plan.exit_code == 0, plan.stderr
    doc = plan.json()
    damaged = [p for p in doc["problems"] if p["kind"] == "metric_damaged"]
    assert [p["path"] for p in damaged] == [str(state)] and f"byte {offset}" in damaged[0]["message"]
    assert str(state) in doc["refusal"]
    human = run_cli("prune", "--keep-last", "1", "--dry-run", tmp_path)
    assert human.exit_code == 0 and str(state) in human.stderr

    # Nothing that could be the best goes: no refusal.
    kept_all = run_cli("prune", "--keep-last", "3", "--yes", "--json", tmp_path)
    assert kept_all.exit_code == 0, kept_all.stderr
    assert kept_all.json()["deleted"] == [] and _listing(tmp_path) == before

    allowed = run_cli("prune", "--keep-last", "1", "--yes", "--json", "--allow-damaged-metrics", tmp_path)
    assert allowed.exit_code == 0, allowed.stderr
    assert [p["path"] for p in allowed.json()["problems"] if p["kind"] == "metric_damaged"] == [str(state)]
    left = _listing(tmp_path)
    assert "checkpoint-1500" in left and "checkpoint-1000" not in left


def test_a_whole_trainer_state_still_protects_the_best(tmp_path):
    """The control: the same run undamaged keeps checkpoint-500 (safetensors loads it)."""
    from safetensors.numpy import load_file

    _hf_run(tmp_path)
    result = run_cli("prune", "--keep-last", "1", "--yes", "--json", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert [d["name"] for d in result.json()["deleted"]] == ["checkpoint-1000"]
    assert load_file(str(tmp_path / f"checkpoint-{BEST}" / "model.safetensors"))["w"][0, 0] == BEST


def test_the_api_plan_carries_the_refusal_and_the_allowance(tmp_path):
    import ckpttool
    from ckpttool.errors import BadInput

    _damage(_hf_run(tmp_path), "cut in log_history")
    plan = ckpttool.plan_prune(tmp_path, keep_last=1)
    assert plan.refusal and "trainer_state.json" in plan.refusal
    with pytest.raises(BadInput):
        ckpttool.apply_prune(plan)
    assert _listing(tmp_path) == sorted(f"checkpoint-{s}" for s in STEPS)
    allowed = ckpttool.plan_prune(tmp_path, keep_last=1, allow_damaged_metrics=True)
    assert allowed.refusal is None
    # The best was read before the cut (the Trainer sorts its keys): allowed, it is still kept.
    assert {d.name for d in ckpttool.apply_prune(allowed).deleted} == {"checkpoint-1000"}


# -- a step directory nested deeper than ckpttool removes: the plan says so --------------------------

def _deep_run(root: Path) -> None:
    _hf_step(root, 5)
    _hf_step(root, 10)
    (root / "checkpoint-5" / "global_step5").mkdir()
    _nest(root / "checkpoint-5" / "global_step5", 100)


def test_a_too_deep_step_directory_is_kept_by_the_plan_not_refused_at_apply(tmp_path):
    _deep_run(tmp_path)
    plan = run_cli("prune", "--keep-last", "1", "--dry-run", "--json", tmp_path)
    assert plan.exit_code == 0, plan.stderr
    doc = plan.json()
    assert doc["deleted"] == []
    kept = {k["name"]: k["reasons"] for k in doc["kept"]}
    assert any("nests 102 levels deep" in reason for reason in kept["checkpoint-5"])
    assert [p["kind"] for p in doc["problems"] if p["path"] == str(tmp_path / "checkpoint-5")] == ["too_deep"]

    real = run_cli("prune", "--keep-last", "1", "--yes", "--json", tmp_path)
    assert real.exit_code == 0, real.stderr
    assert real.json()["deleted"] == [] and real.json()["kept"] == doc["kept"]
    assert _listing(tmp_path) == ["checkpoint-10", "checkpoint-5"]
    assert (tmp_path / "checkpoint-5" / "trainer_state.json").exists()
    ls = run_cli("ls", "--json", tmp_path).json()
    assert {c["name"]: c["deletable"] for c in ls["checkpoints"]} == {"checkpoint-5": False, "checkpoint-10": True}


def test_a_journal_naming_a_too_deep_directory_is_reported_and_cleared(tmp_path):
    _deep_run(tmp_path)
    (tmp_path / JOURNAL).write_text(json.dumps(
        {"deletions": [{"name": "checkpoint-5", "step": 5, "paths": ["checkpoint-5"]}]}))
    plan = run_cli("prune", "--keep-last", "1", "--dry-run", "--json", tmp_path)
    assert plan.exit_code == 0, plan.stderr
    assert plan.json()["deleted"] == []
    assert any(p["kind"] == "journal_entry_kept" for p in plan.json()["problems"])
    real = run_cli("prune", "--keep-last", "1", "--yes", tmp_path)
    assert real.exit_code == 0, real.stderr
    assert _listing(tmp_path) == ["checkpoint-10", "checkpoint-5"]


def test_too_deep_exporter_debris_is_not_debris(series_dir, tmp_path):
    """An exporter's temp-<n>/ holding a tree deeper than ckpttool removes (assets/ may hold
    anything): --clean listed it as deleted and the apply refused it."""
    import shutil
    import time

    run = tmp_path / "export"
    shutil.copytree(series_dir / "export", run)
    (run / "temp-4" / "assets").mkdir()
    _nest(run / "temp-4" / "assets", 70)
    old = time.time() - 7200
    for current, dirs, files in os.walk(run / "temp-4"):
        for name in dirs + files:
            os.utime(os.path.join(current, name), (old, old))
    os.utime(run / "temp-4", (old, old))
    plan = run_cli("prune", "--keep-last", "3", "--clean", "--dry-run", "--json", run).json()
    assert plan["deleted"] == []
    assert [p["kind"] for p in plan["problems"] if p["path"] == str(run / "temp-4")] == ["not_debris"]
    real = run_cli("prune", "--keep-last", "3", "--clean", "--yes", run)
    assert real.exit_code == 0, real.stderr
    assert (run / "temp-4" / "saved_model.pb").exists()


# -- found by tests/test_prune_properties.py: a TF checkpoint whose data shard is cut short ----------

def test_a_tf_checkpoint_whose_data_is_cut_short_never_stands_for_the_newest(tf, tmp_path):
    """CheckpointManager's newest save with its data shard cut short (a full disk, an interrupted
    copy): every file is there, so it counted as complete, and `--keep-last 1` deleted every
    checkpoint TensorFlow can restore, keeping only the one it cannot. The newest whose data is
    whole is now kept too, saying why."""
    variable = tf.Variable(np.zeros(4096, np.float32))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(tmp_path), max_to_keep=None)
    for step in (1, 2, 3):
        variable.assign(np.full(4096, step, np.float32))
        manager.save(checkpoint_number=step)
    data = tmp_path / "ckpt-3.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-100])
    restored = tf.Variable(np.zeros(4096, np.float32))
    with pytest.raises((tf.errors.OpError, IndexError)):  # TensorFlow's own verdict: it cannot be restored
        tf.train.Checkpoint(v=restored).read(str(tmp_path / "ckpt-3")).expect_partial()

    result = run_cli("prune", "--keep-last", "1", "--yes", "--json", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert [d["name"] for d in result.json()["deleted"]] == ["ckpt-1"]
    reasons = {k["name"]: k["reasons"] for k in result.json()["kept"]}
    assert "ckpt-3.data-00000-of-00001 has" in reasons["ckpt-2"][0]
    tf.train.Checkpoint(v=restored).read(str(tmp_path / "ckpt-2")).assert_existing_objects_matched()
    assert (restored.numpy() == 2).all()
