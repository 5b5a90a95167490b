"""Retention by quality deletes only on evidence (issue 24): every score a deletion depends on is
read undamaged (or the user says otherwise), from the run's own logs; `--mode auto` reads whole
words of the metric's name; one function chooses the best for prune, latest --best, ls --sort
metric and average; a tag that does not exist is named as missing; an HF trainer_state.json is read
in bounded memory.

TensorFlow writes the runs (a TF1 Saver, its event files by FileWriter or tf.summary) and Keras the
ModelCheckpoint files; the oracle of every score is what TensorFlow's summary_iterator reads (of
the records a damaged file still holds whole: a copy without the damaged ones), Keras' own history,
or Python's json for a trainer_state.json; kept sets are computed here from those values, and
TensorFlow restores what prune keeps."""
from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import ckpttool
from ckpttool.errors import BadInput, UsageProblem
from tests.conftest import assert_one_line_error, run_cli
from tests.test_metric_rules import (assert_restorable, checkpoints_of, expected_kept, expected_scores, listing,
                                     ranked, restore_tf1, saver_checkpoints)

STEPS = tuple(range(10, 130, 10))
# The best two are late (90, 100): a damaged record before them, or theirs, hides them.
LOSS = {10: 0.9, 20: 0.8, 30: 0.7, 40: 0.65, 50: 0.6, 60: 0.55, 70: 0.5, 80: 0.45, 90: 0.1, 100: 0.2,
        110: 0.4, 120: 0.35}


# -- TensorFlow writes the runs ---------------------------------------------------------------------

def saver_run(tf, out: Path, steps, logs: dict[str, dict[int, float]] | None = None, files: int = 1) -> None:
    """A TF1 Saver run in `out` (model.ckpt-<step>, its variable v = step) and, with `logs` (tag ->
    step -> value), those values logged by FileWriter in `files` event files written one after the
    other (renamed so that their names order them as their creation times do)."""
    out.mkdir(parents=True, exist_ok=True)
    saver_checkpoints(tf, out, steps, relative=True)
    with tf.Graph().as_default():
        if logs:
            logged = sorted({s for values in logs.values() for s in values})
            size = math.ceil(len(logged) / files)
            for i in range(files):
                staging = out / f"staging-{i}"
                writer = tf.compat.v1.summary.FileWriter(str(staging))
                for s in logged[i * size:(i + 1) * size]:
                    writer.add_summary(tf.compat.v1.Summary(value=[
                        tf.compat.v1.Summary.Value(tag=tag, simple_value=values[s])
                        for tag, values in logs.items() if s in values]), s)
                writer.close()
                (written,) = staging.glob("events.out.tfevents.*")
                written.rename(out / f"events.out.tfevents.{1700000000 + i}.testhost")
                staging.rmdir()


def summary_events(tf, out: Path, tag: str, values: dict[int, float]) -> None:
    """TAG logged by tf.summary (a TF2 scalar tensor) at each step, into a new event file in `out`."""
    writer = tf.summary.create_file_writer(str(out))
    with writer.as_default():
        for step, value in values.items():
            tf.summary.scalar(tag, value, step=step)
    writer.close()


@pytest.fixture(scope="module")
def runs(tf, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evidence")
    saver_run(tf, root / "one", STEPS, {"val_loss": LOSS})
    saver_run(tf, root / "two_files", STEPS, {"val_loss": LOSS}, files=2)
    return root


@pytest.fixture
def run_copy(runs, tmp_path):
    def copy(name: str) -> Path:
        return Path(shutil.copytree(runs / name, tmp_path / name))
    return copy


# -- event files, record by record (the framing TensorFlow's record_writer writes) -------------------

def records(path: Path) -> list[tuple[int, int]]:
    """(offset, data length) of each record of an undamaged file."""
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        length = struct.unpack_from("<Q", data, pos)[0]
        out.append((pos, length))
        pos += 12 + length + 4
    return out


def record_of_step(tf, path: Path, step: int) -> tuple[int, int]:
    """The record holding step's summary, found by TensorFlow's parsing of each record's Event."""
    data = path.read_bytes()
    for offset, length in records(path):
        event = tf.compat.v1.Event.FromString(data[offset + 12:offset + 12 + length])
        if event.step == step and event.summary.value:
            return offset, length
    raise AssertionError(f"no summary at step {step} in {path}")


def tf_values_of_records(tf, path: Path, kept: list[tuple[int, int]], scratch: Path, tag: str) -> dict[int, float]:
    """TAG by step as summary_iterator reads a file made of only the `kept` records of `path`."""
    data = path.read_bytes()
    clean = scratch / "events.out.tfevents.1.clean"
    clean.write_bytes(b"".join(data[o:o + 16 + n] for o, n in kept))
    values = {}
    for event in tf.compat.v1.train.summary_iterator(str(clean)):
        for value in event.summary.value:
            if value.tag == tag:
                values[event.step] = value.simple_value
    clean.unlink()
    return values


def flip(path: Path, offset: int, bit: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= bit
    path.write_bytes(bytes(data))


def the_event_file(run: Path) -> Path:
    (path,) = run.glob("events.out.tfevents.*")
    return path


PRUNE_BEST_2 = ("prune", "--keep-best", "2", "--metric", "val_loss", "--drop-unscored")


# -- item 2: a damaged source refuses a prune whose deletions depend on scores ------------------------

@pytest.mark.parametrize("where", ["data", "length"])
def test_one_flipped_bit_in_an_event_file_refuses_the_prune(run_copy, tf, tmp_path, where):
    """One bit flipped in the data of the best checkpoint's record (TensorFlow's summary_iterator
    stops there with DataLossError), or in the length of the record before the best two (nothing
    after it can be framed): the prune refuses (exit 3) naming the file and the record's byte offset,
    deletes nothing, and the dry run shows the damage; with --allow-damaged-metrics it prunes by the
    records still whole, as summary_iterator reads them without the damaged ones."""
    run = run_copy("one")
    events = the_event_file(run)
    all_records = records(events)
    if where == "data":
        offset, length = record_of_step(tf, events, 90)
        flip(events, offset + 12 + length // 2)
        readable = [r for r in all_records if r[0] != offset]
    else:
        offset, _ = record_of_step(tf, events, 80)
        flip(events, offset + 1)  # the length's second byte: it no longer matches its CRC
        readable = [r for r in all_records if r[0] < offset]
    with pytest.raises(tf.errors.DataLossError):
        list(tf.compat.v1.train.summary_iterator(str(events)))
    before, files = checkpoints_of(run), listing(run)

    refused = run_cli(*PRUNE_BEST_2, "--yes", run)
    assert_one_line_error(refused, 3)
    assert str(events) in refused.stderr and f"byte {offset}" in refused.stderr
    assert "--allow-damaged-metrics" in refused.stderr
    assert listing(run) == files

    for extra in ((), ("--allow-damaged-metrics",)):
        dry = run_cli(*PRUNE_BEST_2, "--dry-run", "--json", *extra, run)
        assert dry.exit_code == 0, dry.stderr
        damage = [p for p in dry.json()["problems"] if p["kind"] == "metric_damaged"]
        assert [(p["path"], f"byte {offset}" in p["message"]) for p in damage] == [(str(events), True)]
        people = run_cli(*PRUNE_BEST_2, "--dry-run", *extra, run)
        assert f"byte {offset}" in people.stderr
    assert listing(run) == files

    values = tf_values_of_records(tf, events, readable, tmp_path, "val_loss")
    allowed = run_cli(*PRUNE_BEST_2, "--yes", "--allow-damaged-metrics", run)
    assert allowed.exit_code == 0, allowed.stderr
    assert f"byte {offset}" in allowed.stderr
    assert set(checkpoints_of(run)) == expected_kept(before, values, 2, "min", drop_unscored=True)
    assert_restorable(tf, run, ranked(expected_scores(before, values), before, "min")[0], restore_tf1)


def test_a_cut_record_is_damage_unless_it_is_the_live_end(run_copy, tf, tmp_path):
    """Two event files of one run: a record cut short at the end of the newest file is a writer still
    at work (not damage: the prune goes on by the whole records); at the end of an older file, which
    no writer appends to any more, it is a lost record: damage, refused, nothing deleted."""
    older, newer = sorted(run_copy("two_files").glob("events.out.tfevents.*"))
    run = older.parent
    before, files = checkpoints_of(run), listing(run)
    cut_at, length = records(older)[-1]
    older_whole = older.read_bytes()
    older.write_bytes(older_whole[:cut_at + 12 + length // 2])
    refused = run_cli(*PRUNE_BEST_2, "--yes", run)
    assert_one_line_error(refused, 3)
    assert str(older) in refused.stderr and f"byte {cut_at}" in refused.stderr
    assert listing(run) == files

    older.write_bytes(older_whole)
    live_at, length = records(newer)[-1]
    values = tf_values_of_records(tf, older, records(older), tmp_path, "val_loss")
    values.update(tf_values_of_records(tf, newer, records(newer)[:-1], tmp_path, "val_loss"))
    newer.write_bytes(newer.read_bytes()[:live_at + 12 + length // 2])  # a writer at work
    result = run_cli(*PRUNE_BEST_2, "--yes", run)
    assert result.exit_code == 0, result.stderr
    assert set(checkpoints_of(run)) == expected_kept(before, values, 2, "min", drop_unscored=True)


@pytest.mark.parametrize("form", ["jsonl", "csv"])
def test_a_damaged_metrics_file_refuses_the_prune(run_copy, tf, tmp_path, form):
    """The summary values written as a metrics file with one line damaged mid-file: refused (exit 3)
    naming the file and the line's byte offset; allowed, the other lines score; a last line still
    being written (no newline yet) is no damage."""
    run = run_copy("one")
    values = {s: v for s, v in LOSS.items()}
    if form == "jsonl":
        lines = [json.dumps({"step": s, "val_loss": v}) + "\n" for s, v in values.items()]
    else:
        lines = ["step,val_loss\n"] + [f"{s},{v!r}\n" for s, v in values.items()]
    damaged_line = next(i for i, line in enumerate(lines) if line.startswith(('{"step": 90', "90,")))
    offset = len("".join(lines[:damaged_line]).encode())
    lines[damaged_line] = lines[damaged_line].replace("90", "9\x7f", 1).replace(",", ";", 1)  # a torn write
    log = tmp_path / f"log.{form}"
    log.write_text("".join(lines) + ('{"step": 130, "val_lo' if form == "jsonl" else "130"))  # being written
    before, files = checkpoints_of(run), listing(run)
    refused = run_cli(*PRUNE_BEST_2, "--metrics", log, "--yes", run)
    assert_one_line_error(refused, 3)
    assert str(log) in refused.stderr and f"byte {offset}" in refused.stderr
    assert listing(run) == files
    readable = {s: v for s, v in values.items() if s != 90}
    result = run_cli(*PRUNE_BEST_2, "--metrics", log, "--yes", "--allow-damaged-metrics", run)
    assert result.exit_code == 0, result.stderr
    assert set(checkpoints_of(run)) == expected_kept(before, readable, 2, "min", drop_unscored=True)


def _trainer_state(history: list[dict], **fields) -> str:
    """As the HF Trainer writes it: TrainerState.save_to_json (json.dumps(asdict, indent=2, sort_keys=True))."""
    state = {"best_metric": None, "best_model_checkpoint": None, "epoch": 1.0, "eval_steps": 500,
             "global_step": 0, "is_hyper_param_search": False, "is_local_process_zero": True,
             "is_world_process_zero": True, "log_history": history, "logging_steps": 500, "max_steps": 0,
             "num_input_tokens_seen": 0, "num_train_epochs": 1, "save_steps": 500, "stateful_callbacks": {},
             "total_flos": 0, "train_batch_size": 8, "trial_name": None, "trial_params": None, **fields}
    return json.dumps(state, indent=2, sort_keys=True) + "\n"


def test_an_unparseable_trainer_state_refuses_the_prune(run_copy, tmp_path):
    run = run_copy("one")
    history = []
    for s, v in LOSS.items():
        history += [{"epoch": s / 100, "learning_rate": 1e-4, "loss": 2 * v, "step": s},
                    {"epoch": s / 100, "eval_loss": v, "eval_runtime": 1.5, "step": s}]
    text = _trainer_state(history, global_step=120)
    cut = text.index('"step": 90')
    damaged = text[:cut] + '"step": 9' + "\x7f" + text[cut + 10:]  # one byte torn
    (run / "trainer_state.json").write_text(damaged)
    with pytest.raises(ValueError) as parsed:
        json.loads(damaged)  # the format's own reader gives up here
    before, files = checkpoints_of(run), listing(run)
    refused = run_cli("prune", "--keep-best", "2", "--metric", "eval_loss", "--drop-unscored", "--yes", run)
    assert_one_line_error(refused, 3)
    assert str(run / "trainer_state.json") in refused.stderr and f"byte {parsed.value.pos}" in refused.stderr
    assert listing(run) == files
    # allowed: the entries before the damage score, the rest are unscored
    readable = {s: v for s, v in LOSS.items() if s < 90}
    result = run_cli("prune", "--keep-best", "2", "--metric", "eval_loss", "--drop-unscored", "--yes",
                     "--allow-damaged-metrics", run)
    assert result.exit_code == 0, result.stderr
    assert set(checkpoints_of(run)) == expected_kept(before, readable, 2, "min", drop_unscored=True)


def test_latest_best_refuses_and_ls_warns_on_damage(run_copy, tf, tmp_path):
    """latest --best chooses by scores as prune does: refused (exit 3) unless --allow-damaged-metrics;
    ls --metric deletes nothing: it warns and lists the damage among its problems."""
    run = run_copy("one")
    events = the_event_file(run)
    offset, length = record_of_step(tf, events, 90)
    flip(events, offset + 12 + length - 1)
    values = tf_values_of_records(tf, events, [r for r in records(events) if r[0] != offset], tmp_path, "val_loss")
    before = checkpoints_of(run)
    refused = run_cli("latest", "--best", "--metric", "val_loss", run)
    assert_one_line_error(refused, 3)
    assert f"byte {offset}" in refused.stderr and refused.stdout == ""
    allowed = run_cli("latest", "--best", "--metric", "val_loss", "--allow-damaged-metrics", run)
    assert allowed.exit_code == 0, allowed.stderr
    assert allowed.stdout == f"{run}/{ranked(expected_scores(before, values), before, 'min')[0]}\n"
    assert f"byte {offset}" in allowed.stderr
    best = ranked(expected_scores(before, values), before, "min")[0]
    with pytest.raises(BadInput, match=f"byte {offset}"):
        ckpttool.best(run, "val_loss")
    assert ckpttool.best(run, "val_loss", allow_damaged_metrics=True) == f"{run}/{best}"
    plan = ckpttool.plan_prune(run, keep_best=1, metric="val_loss")
    assert f"byte {offset}" in plan.refusal
    with pytest.raises(BadInput, match=f"byte {offset}"):
        ckpttool.apply_prune(plan)
    assert set(checkpoints_of(run)) == set(before)
    listed = run_cli("ls", "--metric", "val_loss", "--json", run)
    assert listed.exit_code == 0 and f"byte {offset}" in listed.stderr
    assert any(p["kind"] == "metric_damaged" and p["path"] == str(events) for p in listed.json()["problems"])
    out = tmp_path / "avg.npz"
    averaged = run_cli("average", run, "--best", "2", "--metric", "val_loss", "-o", out)
    assert_one_line_error(averaged, 3)
    assert not out.exists()


# -- item 3: a run is scored by its own logs, never a nested run's ------------------------------------

def _nested_run(tf, series_dir, directory: Path, kind: str) -> None:
    """A run of its own in `directory`: its checkpoints (TF prefixes, Keras ModelCheckpoint files or
    SavedModel export versions) and its val_loss events at steps 10..50."""
    if kind == "tf":
        saver_run(tf, directory, STEPS[:5], {"val_loss": LOSS})
        return
    directory.mkdir()
    if kind == "keras":
        for path in (series_dir / "keras" / "ckpt").iterdir():
            shutil.copy(path, directory / path.name)
    else:
        for version in ("1", "2", "3"):
            shutil.copytree(series_dir / "export" / version, directory / version)
    summary_events(tf, directory, "val_loss", {s: LOSS[s] for s in STEPS[:5]})


@pytest.mark.parametrize("kind", ["tf", "keras", "savedmodel"])
def test_a_nested_run_never_scores_its_parent(tf, series_dir, tmp_path, kind):
    root = tmp_path / "root"
    saver_run(tf, root, STEPS[:5])  # checkpoints, no logs
    _nested_run(tf, series_dir, root / "finetune", kind)
    files = listing(root)
    for args in (("prune", "--keep-best", "1", "--metric", "val_loss", "--yes"),
                 ("prune", "--dry-run", "--keep-best", "1", "--metric", "val_loss"),
                 ("latest", "--best", "--metric", "val_loss"), ("ls", "--metric", "val_loss")):
        result = run_cli(*args, root)
        assert_one_line_error(result, 3)
        assert "no event files" in result.stderr, (args, result.stderr)
    assert listing(root) == files and len(checkpoints_of(root)) == 5
    tree = run_cli("prune", "-r", "--keep-best", "1", "--metric", "val_loss", "--yes", root)
    assert_one_line_error(tree, 3)  # root refused, its nested run pruned by its own logs
    assert listing(root) == files
    if kind == "tf":
        nested = {f"model.ckpt-{s}": s for s in STEPS[:5]}
        assert set(checkpoints_of(root / "finetune")) == expected_kept(nested, LOSS, 1, "min")
    # logs of its own in a directory without checkpoints (an eval/ writer) are the parent's
    own = {s: 1.0 - LOSS[s] for s in STEPS[:5]}
    summary_events(tf, root / "eval", "val_loss", own)
    before = checkpoints_of(root)
    result = run_cli("prune", "--keep-best", "1", "--metric", "val_loss", "--yes", root)
    assert result.exit_code == 0, result.stderr
    assert f"events {root / 'eval'} (val_loss)" in result.stdout
    assert set(checkpoints_of(root)) == expected_kept(before, own, 1, "min")
    assert_restorable(tf, root, ranked(expected_scores(before, own), before, "min")[0], restore_tf1)


# -- item 8: --mode auto reads whole words ----------------------------------------------------------

@pytest.mark.parametrize("tag,mode", [
    ("val_answer_accuracy", "max"), ("val_cancer_auc", "max"), ("eval_answer_f1", "max"),
    ("valAnswerAccuracy", "max"), ("eval/answer-f1", "max"), ("validation/epoch_accuracy", "max"),
    ("val.cancer.auc", "max"), ("epoch_loss", "min"), ("val_wer", "min"), ("eval/cer", "min"),
    ("mean_absolute_error", "min"), ("val_sparse_categorical_crossentropy", "min"), ("eval_rougeL", "max"),
    ("evalPerplexity", "min"), ("binary_accuracy", "max")])
def test_mode_auto_reads_whole_words(tag, mode):
    from ckpttool.ops.retention.metrics import infer_mode

    assert infer_mode(tag) == mode


@pytest.mark.parametrize("tag", ["val_answer", "cancer_rate", "val_widgets", "loss_accuracy", "eval/f1_error"])
def test_mode_auto_refuses_names_that_say_neither_or_both(tag):
    from ckpttool.ops.retention.metrics import infer_mode

    with pytest.raises(UsageProblem, match="--mode"):
        infer_mode(tag)


def test_prune_keeps_the_highest_answer_accuracy(tf, tmp_path):
    """`val_answer_accuracy` and friends were losses ("answer" holds "wer", "cancer" "cer"): prune
    deleted the best and kept the worst."""
    accuracy = {s: 1.0 - LOSS[s] for s in STEPS}
    run = tmp_path / "run"
    saver_run(tf, run, STEPS, {"val_answer_accuracy": accuracy, "val_cancer_auc": accuracy,
                               "eval_answer_f1": accuracy, "val_loss_accuracy": accuracy})
    for tag in ("val_answer_accuracy", "val_cancer_auc", "eval_answer_f1"):
        doc = run_cli("prune", "--dry-run", "--keep-best", "2", "--metric", tag, "--json", run).json()
        assert doc["metric"]["mode"] == "max"
        assert {k["name"] for k in doc["kept"]} == expected_kept(checkpoints_of(run), accuracy, 2, "max")
    before = checkpoints_of(run)
    result = run_cli("prune", "--keep-best", "2", "--metric", "val_answer_accuracy", "--yes", run)
    assert result.exit_code == 0, result.stderr
    assert set(checkpoints_of(run)) == expected_kept(before, accuracy, 2, "max")
    assert_restorable(tf, run, ranked(expected_scores(before, accuracy), before, "max")[0], restore_tf1)
    both = run_cli("prune", "--keep-best", "2", "--metric", "val_loss_accuracy", "--yes", run)
    assert_one_line_error(both, 2)
    assert "--mode" in both.stderr


# -- item 9: one selection of the best --------------------------------------------------------------

def _keras_model():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                             keras.layers.Dense(1, activation="sigmoid")])


def test_average_best_is_the_selection_of_prune_latest_and_ls(series_dir, tmp_path):
    """Keras ModelCheckpoint files (`{epoch}` from 1) and the TensorBoard callback's logs (epochs from
    0): Keras' own history says which epoch each file holds. average --best, prune --keep-best,
    latest --best, ls --sort metric and the API choose the same two, and the mean written is the
    mean of the weights Keras loads from those two files."""
    run = tmp_path / "run"
    run.mkdir()
    for path in (series_dir / "keras" / "ckpt").iterdir():
        shutil.copy(path, run / path.name)
    shutil.copytree(series_dir / "keras" / "logs", run / "logs")
    history = json.loads((series_dir / "keras" / "history.json").read_text())["val_loss"]
    files = {path.name: int(path.name[2:4]) for path in run.glob("*.weights.h5")}
    scores = {name: history[epoch - 1] for name, epoch in files.items()}  # the file of {epoch}=k: log epoch k-1
    best = ranked(scores, files, "min")[:2]

    out = tmp_path / "mean.npz"
    result = run_cli("average", run, "--best", "2", "--metric", "val_loss", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert sorted(Path(s["prefix"]).name for s in doc["sources"]) == sorted(best)
    for source in doc["sources"]:
        assert source["score"] == pytest.approx(scores[Path(source["prefix"]).name], rel=1e-6)
    people = run_cli("average", run, "--best", "2", "--metric", "val_loss", "-o", tmp_path / "m2.npz")
    assert people.exit_code == 0, people.stderr
    for name in best:
        line = next(line for line in people.stderr.splitlines() if name in line)
        assert f"{scores[name]:.6g}" in line

    dry = run_cli("prune", "--dry-run", "--keep-best", "2", "--metric", "val_loss", "--json", run).json()
    by_score = {k["name"] for k in dry["kept"] if any(r.startswith(("best", "keep-best")) for r in k["reasons"])}
    assert by_score == set(best)
    assert run_cli("latest", "--best", "--metric", "val_loss", run).stdout == f"{run}/{best[0]}\n"
    sorted_names = [c["name"] for c in run_cli("ls", "--metric", "val_loss", "--sort", "metric", "--json",
                                               run).json()["checkpoints"]]
    assert sorted_names[:2] == best
    plan = ckpttool.average(run, tmp_path / "api.npz", best=2, metric="val_loss", dry_run=True)
    assert sorted(Path(s.prefix).name for s in plan.sources) == sorted(best)

    model = _keras_model()
    weights = []
    for name in sorted(best, key=files.get):
        model.load_weights(str(run / name))
        weights.append([w.astype(np.float64) for w in model.get_weights()])
    expected = sorted((pair[0].shape, np.mean(np.stack(pair), axis=0).astype(np.float32).tobytes())
                      for pair in zip(*weights))
    with np.load(out) as data:
        assert sorted((data[n].shape, data[n].tobytes()) for n in data.files) == expected


def test_ties_go_to_the_older_checkpoint_everywhere(tf, tmp_path):
    """Steps 20 and 40 tie for second best: the older (20) is chosen by every command (the README
    says so; average chose the newer)."""
    run = tmp_path / "run"
    saver_run(tf, run, STEPS[:5])
    log = tmp_path / "log.csv"
    values = {10: 0.1, 20: 0.3, 30: 0.9, 40: 0.3, 50: 0.5}
    log.write_text("step,val_loss\n" + "".join(f"{s},{v}\n" for s, v in values.items()))
    steps = checkpoints_of(run)
    best = ranked(expected_scores(steps, values), steps, "min")[:2]
    assert best == ["model.ckpt-10", "model.ckpt-20"]
    doc = run_cli("average", run, "--best", "2", "--metric", "val_loss", "--metrics", log, "-o",
                  tmp_path / "m.npz", "--json").json()
    assert [Path(s["prefix"]).name for s in doc["sources"]] == best
    mean = np.load(tmp_path / "m.npz")["v"]
    assert float(mean) == np.mean([restore_tf1(tf, run / name) for name in best])
    dry = run_cli("prune", "--dry-run", "--keep-best", "2", "--metric", "val_loss", "--metrics", log, "--json",
                  run).json()
    assert {k["name"] for k in dry["kept"]} == set(best) | {"model.ckpt-50"}


# -- item 15: a tag that does not exist is named as missing ------------------------------------------

@pytest.mark.parametrize("command", [
    ("prune", "--keep-best", "1", "--yes"), ("latest", "--best"), ("ls",), ("average", "--best", "2", "-o")])
def test_a_tag_that_does_not_exist_is_named_as_missing(runs, tmp_path, command):
    run = runs / "one"
    files = listing(run)
    args = [*command, str(tmp_path / "o.npz")] if command[0] == "average" else list(command)
    result = run_cli(args[0], "--metric", "eval/nope", *args[1:], run)
    assert_one_line_error(result, 3)
    assert "eval/nope" in result.stderr and "val_loss" in result.stderr
    assert "cannot tell" not in result.stderr
    log = tmp_path / "log.csv"
    log.write_text("step,val_loss,eval_acc\n10,0.5,0.5\n")
    result = run_cli(args[0], "--metric", "eval/nope", "--metrics", log, *args[1:], run)
    assert_one_line_error(result, 3)
    assert "eval/nope" in result.stderr and "eval_acc" in result.stderr and "cannot tell" not in result.stderr
    assert listing(run) == files


# -- item 14: trainer_state.json in bounded memory --------------------------------------------------

def _hf_run(directory: Path, steps, history: list[dict], best: int) -> Path:
    from safetensors.numpy import save_file

    for step in steps:
        member = directory / f"checkpoint-{step}"
        member.mkdir(parents=True)
        save_file({"w": np.full((2, 2), step, np.float32)}, str(member / "model.safetensors"))
        (member / "config.json").write_text("{}")
        # only the newest one's is read: the others' log_history is left short
        (member / "trainer_state.json").write_text(_trainer_state(
            history if step == max(steps) else [], global_step=step, best_model_checkpoint=f"/out/checkpoint-{best}"))
    return directory / f"checkpoint-{max(steps)}" / "trainer_state.json"


def test_trainer_state_is_read_in_bounded_memory(tmp_path):
    """A long run's trainer_state.json (12 MB of log_history here; 60 MB cost 1.6 GB): a prune plans
    by it, with and without --metric, holding far less than the file at any time; its scores and
    best_model_checkpoint are what Python's json reads."""
    import tracemalloc

    rng = np.random.default_rng(5)
    history = []
    for step in range(1, 80001):
        history.append({"epoch": step / 1000, "grad_norm": float(rng.random()), "learning_rate": 1e-4,
                        "loss": float(rng.random()), "step": step})
        if step % 10000 == 0:
            history.append({"epoch": step / 1000, "eval_loss": float(rng.random()), "eval_runtime": 3.5,
                            "eval_samples_per_second": 100.0, "step": step})
    steps = (20000, 40000, 60000, 80000)
    state = _hf_run(tmp_path, steps, history, best=40000)
    size = state.stat().st_size
    assert size > 10 << 20
    parsed = json.loads(state.read_text())
    eval_loss = {e["step"]: e["eval_loss"] for e in parsed["log_history"] if "eval_loss" in e}
    members = {f"checkpoint-{s}": s for s in steps}

    tracemalloc.start()
    try:
        plain = ckpttool.plan_prune(tmp_path, keep_last=1)
        _, plain_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        scored = ckpttool.plan_prune(tmp_path, keep_best=1, metric="eval_loss")
        _, scored_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plain_peak < size / 4 and scored_peak < size / 4, (plain_peak, scored_peak, size)
    assert {k.name: k.reasons for k in plain.kept}["checkpoint-40000"] == (
        "best_model_checkpoint in trainer_state.json",)
    assert {e.name: e.score for e in scored.kept + scored.deleted} == expected_scores(members, eval_loss)


def test_trainer_state_read_in_pieces_is_what_json_reads(tmp_path, monkeypatch):
    """Whatever the piece size (down to 1 byte: every boundary inside a number, a string, an escape,
    a literal), the bounded reader gives json's values; a cut or flipped byte is damage at the byte
    where json.loads stops (never an exception), the entries before it kept."""
    import random

    from ckpttool.formats import trainer_state

    rng = random.Random(3)
    path = tmp_path / "trainer_state.json"
    for _ in range(200):
        history = [{"step": s, "loss": rng.random() * 10 ** rng.randint(-9, 9), "epoch": s / 7,
                    "note": "é\u2028\"]}" * rng.randint(0, 2), "flag": rng.choice([True, False, None]),
                    "big": rng.randint(-10 ** 20, 10 ** 20), "nested": {"a": [1, -2.5e-7, {"b": "]},"}]}}
                   for s in range(rng.randint(0, 20))]
        text = json.dumps({"best_model_checkpoint": rng.choice([None, "out/checkpoint-5"]), "log_history": history,
                           "total_flos": 1e18}, indent=rng.choice([None, 2]), sort_keys=True,
                          ensure_ascii=rng.choice([True, False]))
        monkeypatch.setattr(trainer_state, "PIECE", rng.choice([1, 2, 3, 7, 64, 1 << 16]))
        raw = text.encode()
        path.write_bytes(raw)
        entries = []
        state = trainer_state.read(str(path), ("best_model_checkpoint", "total_flos"),
                                   lambda entry, where: entries.append((entry, where())))
        assert state.damage is None and [e for e, _ in entries] == history
        assert all(json.JSONDecoder().raw_decode(raw[offset:].decode())[0] == e for e, offset in entries)
        assert state.fields == {k: json.loads(text)[k] for k in ("best_model_checkpoint", "total_flos")}
        cut = bytearray(raw[:rng.randrange(len(raw))])
        flipped = bytearray(raw)
        flipped[rng.randrange(len(raw))] = rng.choice(b'{}[],:"x0 \\')
        for damaged in (cut, flipped):
            path.write_bytes(bytes(damaged))
            try:
                json.loads(bytes(damaged).decode())
                where = None
            except ValueError as exc:
                where = exc.pos if bytes(damaged).isascii() else -1
            entries = []
            try:
                state = trainer_state.read(str(path), (), lambda entry, _where: entries.append(entry))
            except BadInput:
                continue  # it parses as something else than a trainer state
            assert damaged is flipped or entries == history[:len(entries)]
            assert (state.damage is None) == (where is None)
            assert where in (None, -1) or state.damage.offset == where
