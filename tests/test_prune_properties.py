"""Property test of prune's evidence rule (issue 24): random run directories mixing every series
with damaged members, users' files named like members or debris, symlinks out of the directory
and nested runs; after any prune (`--keep-last`, `--keep-best --metric`, `--clean`, `-r`):

- nothing is gone that the dry run's plan (`prune --dry-run --json`, made first) did not list;
- no user's file is gone or changed, and nothing a symlink leads to outside the run is touched;
- each series keeps its newest complete member, and with a metric its best (by the values
  tf.summary wrote, not by our reader); the HF Trainer's best_model_checkpoint is kept.

Members are REAL bytes written once per session by TensorFlow, Keras and safetensors
(tests/series_fixtures.py, and the `materials` fixture below), copied under the names each
example draws; damage is what a crash or a full disk leaves (a file cut short, a shard missing).
Hypothesis runs with a fixed seed and budget (derandomize, max_examples), the CLI in-process.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import run_cli
from tests.test_deletion_handles import _snapshot as snapshot
from tests.test_metric_evidence import _trainer_state

TAG = "val_loss"
STEPS = st.integers(1, 9)
OLD = time.time() - 3 * 86400  # everything is old enough for --clean's default --min-age


@dataclass(frozen=True)
class Materials:
    tf_prefix: Path  # a TF2 checkpoint (.index, .data-00000-of-00001) tf.train.Checkpoint wrote
    weights: Path  # a Keras ModelCheckpoint `.weights.h5`
    keras: Path  # a Keras `.keras` model
    saved_model: Path  # a SavedModel version directory
    safetensors: Path  # HF weights, by the safetensors library
    plain_hdf5: Path  # an h5py data file (not Keras)
    events: tuple[tuple[Path, dict[int, float]], ...]  # event files tf.summary wrote, and their values


@pytest.fixture(scope="session")
def materials(series_dir, tf, tmp_path_factory) -> Materials:
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("prune_materials")
    tf.train.Checkpoint(v=tf.Variable(np.arange(4096, dtype=np.float32))).write(str(root / "tf" / "one"))
    rng = np.random.default_rng(11)
    events = []
    for pattern in range(3):
        # distinct values, exact in float32 (what tf.summary.scalar stores): no ties to argue about
        values = {step: float(v) for step, v in enumerate(rng.permutation(12) / 8 + 0.125)}
        out = root / f"events{pattern}"
        writer = tf.summary.create_file_writer(str(out))
        with writer.as_default():
            for step, value in values.items():
                tf.summary.scalar(TAG, value, step=step)
        writer.close()
        events.append((next(out.iterdir()), values))
    save_file({"w": np.arange(6000, dtype=np.float32).reshape(200, 30)}, str(root / "model.safetensors"))
    return Materials(root / "tf" / "one", sorted((series_dir / "keras" / "ckpt").iterdir())[0],
                     series_dir / "kinds" / "models" / "m-1.keras", series_dir / "export" / "1",
                     root / "model.safetensors", series_dir / "kinds" / "data" / "eval_predictions_2022.h5",
                     tuple(events))


# -- what an example builds ----------------------------------------------------------------------

def _members(damages):
    return st.lists(st.tuples(STEPS, st.sampled_from(damages)), max_size=4, unique_by=lambda m: m[0])


USER_FILES = ("eval_2024.h5", "temp-2024/drafts/paper.tex", "notes.index", "README.md", "ckpt-notes.txt",
              "temp-7/saved_model.pb.txt", "w.99-0.10.weights.h5.bak")
LINKS = ("out_file", "out_dir", "out_member", "out_index")

RUNS = st.fixed_dictionaries({
    "tf": _members(["whole", "whole", "cut_index", "no_data", "cut_data"]),
    "weights": _members(["whole", "whole", "cut"]),
    "keras": _members(["whole", "cut"]),
    "savedmodel": _members(["whole", "no_shard"]),
    "hf": _members(["whole", "whole", "cut_weights"]),
    "hf_best": st.integers(0, 3),
    "user": st.sets(st.sampled_from(USER_FILES)),
    "links": st.sets(st.sampled_from(LINKS)),
    "events": st.integers(0, 2),
    "nested": st.none() | st.tuples(_members(["whole", "cut_index"]), st.integers(0, 2)),
})
PRUNES = st.fixed_dictionaries({
    "rule": st.sampled_from(["keep-last", "keep-best"]),
    "n": st.integers(0, 2),
    "clean": st.booleans(),
    "drop_unscored": st.booleans(),
    "recursive": st.booleans(),
})


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copyfile(source, destination)


def _tf_run(m: Materials, run: Path, members) -> None:
    for step, damage in members:
        prefix = run / f"ckpt-{step}"
        _copy(Path(f"{m.tf_prefix}.index"), Path(f"{prefix}.index"))
        if damage != "no_data":
            _copy(Path(f"{m.tf_prefix}.data-00000-of-00001"), Path(f"{prefix}.data-00000-of-00001"))
        if damage == "cut_index":
            _cut(Path(f"{prefix}.index"))
        if damage == "cut_data":
            _cut(Path(f"{prefix}.data-00000-of-00001"))
    if members:
        steps = sorted(step for step, _ in members)
        # TensorFlow's text format of the state file, as CheckpointManager writes it
        (run / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{steps[-1]}"\n' + "".join(
            f'all_model_checkpoint_paths: "ckpt-{s}"\n' for s in steps))


def _hf_step(m: Materials, run: Path, step: int, damage: str, best: str | None) -> None:
    member = run / f"checkpoint-{step}"
    member.mkdir()
    _copy(m.safetensors, member / "model.safetensors")
    if damage == "cut_weights":
        _cut(member / "model.safetensors")
    (member / "config.json").write_text("{}")
    (member / "trainer_state.json").write_text(_trainer_state([], global_step=step, best_model_checkpoint=best))


def build(m: Materials, root: Path, runs: dict) -> dict:
    """The run directory (root/run) an example draws, a directory outside it that links lead to
    (root/outside), and what the checks need to know."""
    run, outside = root / "run", root / "outside"
    run.mkdir()
    _tf_run(m, run, runs["tf"])
    for step, damage in runs["weights"]:
        _copy(m.weights, run / f"w.{step:02d}-0.50.weights.h5")
        if damage == "cut":
            _cut(run / f"w.{step:02d}-0.50.weights.h5")
    for step, damage in runs["keras"]:
        _copy(m.keras, run / f"m-{step}.keras")
        if damage == "cut":
            _cut(run / f"m-{step}.keras")
    for step, damage in runs["savedmodel"]:
        _copy(m.saved_model, run / str(step))
        if damage == "no_shard":
            for shard in (run / str(step) / "variables").glob("variables.data-*"):
                shard.unlink()
    hf_steps = sorted(step for step, _ in runs["hf"])
    best = f"/out/checkpoint-{hf_steps[runs['hf_best'] % len(hf_steps)]}" if hf_steps else None
    for step, damage in runs["hf"]:
        _hf_step(m, run, step, damage, best)
    event_file, values = m.events[runs["events"]]
    _copy(event_file, run / "logs" / event_file.name)
    user = {}
    for name in runs["user"]:
        path = run / name
        if name.endswith(".h5"):
            _copy(m.plain_hdf5, path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"a user's {name}\n")
        user[name] = path
    outside.mkdir()
    _copy(m.weights, outside / "w.20-0.10.weights.h5")
    _copy(m.tf_prefix.parent, outside / "tfrun")
    _copy(m.saved_model, outside / "20")
    links = {"out_file": ("w.20-0.10.weights.h5", outside / "w.20-0.10.weights.h5"),
             "out_dir": ("30", outside / "20"), "out_member": ("checkpoint-40", outside / "tfrun"),
             "out_index": ("ckpt-50.index", outside / "tfrun" / "one.index")}
    for key in runs["links"]:
        name, target = links[key]
        os.symlink(target, run / name)
    nested_values = None
    if runs["nested"] is not None:
        members, pattern = runs["nested"]
        nested = run / "finetune"
        nested.mkdir()
        _tf_run(m, nested, members or [(1, "whole")])
        nested_file, nested_values = m.events[pattern]
        _copy(nested_file, nested / nested_file.name)
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(current, name)
            os.utime(path, (OLD, OLD), follow_symlinks=False)
    return {"run": run, "outside": outside, "user": user, "values": values, "nested_values": nested_values,
            "best": best}


# -- what must hold ------------------------------------------------------------------------------

def _planned(doc: dict, recursive: bool) -> dict[Path, set[str]]:
    """Directory -> names its plan deletes."""
    docs = doc["directories"] if recursive else [doc]
    return {Path(d["directory"]).resolve(): {x["name"] for x in d.get("deleted", [])} for d in docs}


def _covered(relative: Path, names: set[str]) -> bool:
    """Whether an entry (relative to its run directory) belongs to one of the deleted `names`: a
    TF prefix's files (NAME.index, NAME.data-...), a member file, or anything inside a member or
    debris directory."""
    top = relative.parts[0]
    return any(top == name or top.startswith(name + ".") for name in names)


def _series_expectations(family_steps, score_of) -> list[str]:
    """Names each series must keep: its newest complete member, and its best scored one."""
    must = []
    for namer, entries in family_steps:
        whole = sorted(step for step, damage in entries if damage == "whole")
        if not whole:
            continue
        must.append(namer(whole[-1]))
        if score_of is not None:
            scored = [(score_of(namer, step), step) for step in whole if score_of(namer, step) is not None]
            if scored:
                must.append(namer(min(scored)[1]))
    return must


def _families(runs: dict):
    return [(lambda s: f"ckpt-{s}", runs["tf"]), (lambda s: f"w.{s:02d}-0.50.weights.h5", runs["weights"]),
            (lambda s: f"m-{s}.keras", runs["keras"]), (lambda s: str(s), runs["savedmodel"]),
            (lambda s: f"checkpoint-{s}", runs["hf"])]


def _present(run: Path, name: str) -> bool:
    return (run / name).exists() or (run / f"{name}.index").exists()


def _score_in(values: dict[int, float]):
    def score(_namer, step):
        # Logged by step (tf.summary's step), not by Keras epoch: every series is scored at its step.
        return values.get(step)
    return score


@settings(derandomize=True, max_examples=60, deadline=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(runs=RUNS, prune=PRUNES)
def test_prune_deletes_only_what_its_plan_says_and_keeps_each_series_newest_and_best(materials, runs, prune):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        built = build(materials, root, runs)
        run, outside = built["run"], built["outside"]
        args = [f"--{prune['rule']}", str(max(prune["n"], 1) if prune["rule"] == "keep-best" else prune["n"])]
        if prune["rule"] == "keep-best":
            args += ["--metric", TAG] + (["--drop-unscored"] if prune["drop_unscored"] else [])
        args += ["--clean"] * prune["clean"] + ["-r"] * prune["recursive"]
        before, outside_before = snapshot(run), snapshot(outside)

        dry = run_cli("prune", "--dry-run", "--json", *args, run)
        assert dry.exit_code in (0, 3), dry.stderr
        assert snapshot(run) == before
        real = run_cli("prune", "--yes", "--json", *args, run)
        assert real.exit_code in (0, 3, 4) and "Traceback" not in real.stderr, real.stderr
        after = snapshot(run)

        # 1. nothing gone or changed that the plan did not list (the state file is rewritten)
        planned = _planned(dry.json(), prune["recursive"]) if dry.exit_code == 0 else {}
        if dry.exit_code == 3 and not prune["recursive"]:
            assert after == before
        for relative in sorted(set(before) - set(after)) + [r for r in after if r in before and
                                                            after[r] != before[r]]:
            path = Path(relative)
            directory = (run / path).parent
            while directory != run and directory.resolve() not in planned:
                directory = directory.parent
            names = planned.get(directory.resolve(), set())
            inner = (run / path).relative_to(directory)
            assert inner.name == "checkpoint" and len(inner.parts) == 1 or _covered(inner, names), (
                f"{relative} gone or changed, not in the plan of {directory}: {sorted(names)}")
        assert not (run / ".ckpttool-prune.journal").exists()

        # 2. users' files and whatever links lead to outside the run
        for name, path in built["user"].items():
            assert before[name] == after.get(name), f"the user's {name} is gone or changed"
        assert snapshot(outside) == outside_before
        assert {r: v for r, v in before.items() if v.startswith("link:")} == \
               {r: v for r, v in after.items() if v.startswith("link:")}

        # 3. each series' newest complete member and its best (by what tf.summary wrote)
        if real.exit_code == 3:
            return  # refused (a damaged source): nothing deleted, checked above
        scoring = _score_in(built["values"]) if prune["rule"] == "keep-best" else None
        for name in _series_expectations(_families(runs), scoring):
            assert _present(run, name), f"{name}: newest complete or best of its series, deleted"
        if built["best"] is not None:
            best = built["best"].rpartition("/")[2]
            assert (run / best).exists(), f"{best}: the HF Trainer's best_model_checkpoint, deleted"
        if runs["nested"] is not None:
            nested = run / "finetune"
            members = runs["nested"][0] or [(1, "whole")]
            nested_scoring = _score_in(built["nested_values"]) if prune["rule"] == "keep-best" else None
            for name in _series_expectations([(lambda s: f"ckpt-{s}", members)], nested_scoring):
                assert _present(nested, name), f"finetune/{name}: newest complete or best, deleted"
