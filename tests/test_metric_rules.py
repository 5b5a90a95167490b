"""Retention by quality: `prune --keep-best N --metric TAG`, `ls --metric/--sort/--filter` and
`latest --best`, on runs TensorFlow writes here (a TF1 Saver run with its event files beside the
checkpoints, a TF2 CheckpointManager run whose events are elsewhere). The oracle for every score is
what `tf.compat.v1.train.summary_iterator` reads; the kept sets are computed here from those values;
after every prune TensorFlow restores the latest and the best."""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli

STEPS = tuple(range(10, 130, 10))
NAN, INF = float("nan"), float("inf")
# What the TF1 run logs at each step: 60 logs nothing (its checkpoint has no score), 70 and 80 log
# non-finite values, 40 is logged twice (a restarted evaluation: the last value is the one), 20 and 90
# tie (the older ranks first).
TF1_LOSS = {10: 0.9, 20: 0.5, 30: 0.7, 40: (0.05, 0.45), 50: 0.3, 70: NAN, 80: INF, 90: 0.5, 100: 0.25,
            110: 0.6, 120: 0.4}
TF1_ACCURACY = {10: 0.1, 20: 0.5, 30: 0.3, 40: 0.55, 50: 0.7, 70: 0.2, 80: 0.35, 90: 0.5, 100: 0.75,
                110: 0.4, 120: 0.6}
TF2_STEPS = tuple(range(100, 900, 100))


def saver_checkpoints(tf, out: Path, steps, relative: bool = False, after_save=None) -> None:
    """A TF1 Saver run in `out`: model.ckpt-<step> for each step, its variable v = step (state-file
    paths absolute, as Saver writes them, unless `relative`); `after_save(step)` after each save."""
    graph = tf.Graph()
    with graph.as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        v = tf.compat.v1.get_variable("v", [], initializer=tf.compat.v1.zeros_initializer())
        target = tf.compat.v1.placeholder(tf.int64, [])
        assign = [v.assign(tf.cast(target, tf.float32)), global_step.assign(target)]
        saver = tf.compat.v1.train.Saver(max_to_keep=100, save_relative_paths=relative)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for s in steps:
                sess.run(assign, {target: s})
                saver.save(sess, str(out / "model.ckpt"), global_step=s)
                if after_save is not None:
                    after_save(s)


def _tf1_run(tf, out: Path) -> None:
    with tf.Graph().as_default():
        writer = tf.compat.v1.summary.FileWriter(str(out))

    def log(s: int) -> None:
        losses = TF1_LOSS.get(s, ())
        for loss in losses if isinstance(losses, tuple) else (losses,):
            writer.add_summary(tf.compat.v1.Summary(value=[
                tf.compat.v1.Summary.Value(tag="val_loss", simple_value=loss)]), s)
        if s in TF1_ACCURACY:
            writer.add_summary(tf.compat.v1.Summary(value=[
                tf.compat.v1.Summary.Value(tag="val_accuracy", simple_value=TF1_ACCURACY[s])]), s)

    saver_checkpoints(tf, out, STEPS, after_save=log)
    writer.close()


def _tf2_run(tf, out: Path, events: Path) -> None:
    import numpy as np

    values = np.random.default_rng(21).random(len(TF2_STEPS))
    v = tf.Variable(0.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=v), str(out), max_to_keep=None)
    writer = tf.summary.create_file_writer(str(events))
    for s, value in zip(TF2_STEPS, values):
        v.assign(float(s))
        manager.save(checkpoint_number=s)
        with writer.as_default():
            tf.summary.scalar("eval/loss", value, step=s)
    writer.close()


@pytest.fixture(scope="module")
def runs(tf, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("metric_runs")
    (root / "tf1").mkdir()
    _tf1_run(tf, root / "tf1")
    (root / "tf2").mkdir()
    _tf2_run(tf, root / "tf2", root / "tf2_events")
    return root


@pytest.fixture
def run_copy(runs, tmp_path):
    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(runs / name, dest)
        return dest
    return copy


# -- the oracle -----------------------------------------------------------------------------------

def tf_values(tf, directory: Path, tag: str) -> dict[int, float]:
    """TAG's value at each step as TensorFlow reads the event files (simple_value or a scalar tensor);
    the last written for a step wins."""
    values: dict[int, float] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag != tag:
                    continue
                values[event.step] = (value.simple_value if value.HasField("simple_value")
                                      else float(tf.make_ndarray(value.tensor)))
    return values


def checkpoints_of(directory: Path) -> dict[str, int]:
    """Name -> step of every checkpoint on disk (its index file)."""
    return {p.name[:-len(".index")]: int(p.name[:-len(".index")].rpartition("-")[2])
            for p in directory.glob("*.index")}


def expected_scores(ckpts: dict[str, int], values: dict[int, float]) -> dict[str, float | None]:
    return {name: values[step] if step in values and math.isfinite(values[step]) else None
            for name, step in ckpts.items()}


def ranked(scores: dict[str, float | None], steps: dict[str, int], mode: str) -> list[str]:
    scored = [n for n, s in scores.items() if s is not None]
    return sorted(scored, key=lambda n: (scores[n] if mode == "min" else -scores[n], steps[n]))


def expected_kept(ckpts: dict[str, int], values: dict[int, float], n: int, mode: str, *,
                  drop_unscored: bool = False, keep_last: int = 0, latest: bool = True) -> set[str]:
    scores = expected_scores(ckpts, values)
    keep = set(ranked(scores, ckpts, mode)[:n])
    by_step = sorted(ckpts, key=ckpts.get)
    keep.update(by_step[-1:] if latest else ())  # the latest (of the state file)
    keep.update(by_step[-keep_last:] if keep_last else ())
    if not drop_unscored:
        keep.update(name for name, score in scores.items() if score is None)
    return keep


def restore_tf1(tf, prefix: Path) -> float:
    graph = tf.Graph()
    with graph.as_default():
        v = tf.compat.v1.get_variable("v", [], initializer=tf.compat.v1.zeros_initializer())
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            saver.restore(sess, str(prefix))
            return float(sess.run(v))


def restore_tf2(tf, prefix: Path) -> float:
    v = tf.Variable(-1.0)
    tf.train.Checkpoint(v=v).restore(str(prefix)).assert_consumed()
    return float(v.numpy())


def assert_restorable(tf, directory: Path, best: str, restore) -> None:
    latest = tf.train.latest_checkpoint(str(directory))
    assert latest == str(directory / max(checkpoints_of(directory).items(), key=lambda kv: kv[1])[0])
    for prefix in (Path(latest), directory / best):
        assert restore(tf, prefix) == float(checkpoints_of(directory)[prefix.name])


def listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# -- scores ---------------------------------------------------------------------------------------

def test_scores_are_what_summary_iterator_reads(runs, tf):
    for directory, tag, extra in ((runs / "tf1", "val_loss", ()), (runs / "tf1", "val_accuracy", ()),
                                  (runs / "tf2", "eval/loss", ("--events", runs / "tf2_events"))):
        values = tf_values(tf, directory if not extra else extra[1], tag)
        result = run_cli("ls", "--metric", tag, *extra, "--json", directory)
        assert result.exit_code == 0, result.stderr
        doc = result.json()
        want = expected_scores(checkpoints_of(directory), values)
        assert {c["name"]: c["score"] for c in doc["checkpoints"]} == want
        assert doc["metric"]["tag"] == tag and doc["metric"]["scored"] == sum(s is not None for s in want.values())


def test_duplicate_steps_take_the_last_value_written(runs, tf):
    values = tf_values(tf, runs / "tf1", "val_loss")
    doc = run_cli("ls", "--metric", "val_loss", "--json", runs / "tf1").json()
    score = {c["name"]: c["score"] for c in doc["checkpoints"]}["model.ckpt-40"]
    assert score == values[40] == pytest.approx(0.45)


def test_non_finite_values_are_no_score_and_warned(runs, tf):
    values = tf_values(tf, runs / "tf1", "val_loss")
    assert math.isnan(values[70]) and math.isinf(values[80])
    result = run_cli("prune", "--dry-run", "--keep-best", "1", "--metric", "val_loss", "--json", runs / "tf1")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    kept = {k["name"]: k for k in doc["kept"]}
    for step in (60, 70, 80):
        entry = kept[f"model.ckpt-{step}"]
        assert entry["score"] is None
        assert any("no val_loss score" in r for r in entry["reasons"])
    assert any("not finite" in p["message"] and "70" in p["message"] and "80" in p["message"]
               for p in doc["problems"])
    people = run_cli("prune", "--dry-run", "--keep-best", "1", "--metric", "val_loss", runs / "tf1")
    assert "not finite" in people.stderr


# -- prune ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 5])
def test_keep_best_keeps_what_the_summaries_say_and_tensorflow_restores(run_copy, tf, n):
    run = run_copy("tf1")
    values, before = tf_values(tf, run, "val_loss"), checkpoints_of(run)
    want = expected_kept(before, values, n, "min")
    result = run_cli("prune", "--keep-best", n, "--metric", "val_loss", "--yes", run)
    assert result.exit_code == 0, result.stderr
    assert set(checkpoints_of(run)) == want
    best = ranked(expected_scores(before, values), before, "min")[0]
    assert_restorable(tf, run, best, restore_tf1)
    assert any(p.name.startswith("events.out.tfevents.") for p in run.iterdir())  # logs are never touched


def test_keep_best_combines_with_the_other_rules_by_union(run_copy, tf):
    run = run_copy("tf1")
    values, before = tf_values(tf, run, "val_loss"), checkpoints_of(run)
    want = expected_kept(before, values, 2, "min", keep_last=3)
    want |= {name for name, step in before.items() if step % 40 == 0}
    result = run_cli("prune", "--keep-best", "2", "--metric", "val_loss", "--keep-last", "3",
                     "--keep-every-steps", "40", "--yes", run)
    assert result.exit_code == 0, result.stderr
    assert set(checkpoints_of(run)) == want


def test_each_family_keeps_its_own_best(run_copy, tf):
    """best.ckpt-N beside model.ckpt-N (copies TensorFlow restores under their new names), judged apart."""
    run = run_copy("tf1")
    values, model = tf_values(tf, run, "val_loss"), checkpoints_of(run)
    for name in model:
        for path in run.glob(name + ".*"):
            shutil.copy(path, run / path.name.replace("model.ckpt", "best.ckpt"))
    best_family = {name.replace("model.ckpt", "best.ckpt"): step for name, step in model.items()}
    result = run_cli("prune", "--keep-best", "2", "--metric", "val_loss", "--yes", run)
    assert result.exit_code == 0, result.stderr
    want_best_family = expected_kept(best_family, values, 2, "min", latest=False)  # the state file names model.ckpt-120
    assert set(checkpoints_of(run)) == expected_kept(model, values, 2, "min") | want_best_family
    best = ranked(expected_scores(best_family, values), best_family, "min")[0]
    assert restore_tf1(tf, run / best) == best_family[best]


def test_epoch_logs_matched_to_steps_say_so(runs, tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,val_loss\n" + "".join(f"{s},0.5\n" for s in STEPS))
    result = run_cli("ls", "--metric", "val_loss", "--metrics", log, runs / "tf1")
    assert result.exit_code == 0, result.stderr
    assert "log epochs (from 0) matched to other checkpoints' numbers as they are" in result.stdout


def test_ties_go_to_the_older_checkpoint(run_copy, tf):
    run = run_copy("tf1")
    values = tf_values(tf, run, "val_loss")
    assert values[20] == values[90]
    doc = run_cli("prune", "--dry-run", "--keep-best", "5", "--metric", "val_loss", "--json", run).json()
    kept = {k["name"] for k in doc["kept"]}
    assert "model.ckpt-20" in kept and "model.ckpt-90" not in kept
    assert kept == expected_kept(checkpoints_of(run), values, 5, "min")


def test_events_elsewhere_and_a_tf2_manager_run(run_copy, runs, tf):
    run = run_copy("tf2")
    values, before = tf_values(tf, runs / "tf2_events", "eval/loss"), checkpoints_of(run)
    nothing = run_cli("prune", "--keep-best", "2", "--metric", "eval/loss", "--yes", run)
    assert_one_line_error(nothing, 3)
    assert "--events" in nothing.stderr and checkpoints_of(run) == before
    result = run_cli("prune", "--keep-best", "2", "--metric", "eval/loss", "--events", runs / "tf2_events",
                     "--yes", run)
    assert result.exit_code == 0, result.stderr
    assert f"from events {runs / 'tf2_events'} (eval/loss)" in result.stdout
    assert set(checkpoints_of(run)) == expected_kept(before, values, 2, "min")
    assert_restorable(tf, run, ranked(expected_scores(before, values), before, "min")[0], restore_tf2)


def test_dry_run_shows_every_score_and_reason_and_deletes_nothing(run_copy, tf):
    run = run_copy("tf1")
    values, before, files = tf_values(tf, run, "val_loss"), checkpoints_of(run), listing(run)
    result = run_cli("prune", "--dry-run", "--keep-best", "2", "--metric", "val_loss", run)
    assert result.exit_code == 0, result.stderr
    assert listing(run) == files
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("model.ckpt-")}
    assert set(lines) == set(before)
    scores = expected_scores(before, values)
    want = expected_kept(before, values, 2, "min")
    for name, line in lines.items():
        assert (f"{scores[name]:.6g}" if scores[name] is not None else " - ") in line, line
        assert ("keep" in line.split()) == (name in want), line
    best = ranked(scores, before, "min")
    assert "best (val_loss" in lines[best[0]] and "keep-best 2 (#2" in lines[best[1]]
    assert "latest" in lines["model.ckpt-120"]
    assert f"from events {run} (val_loss)" in result.stdout
    doc = run_cli("prune", "--dry-run", "--keep-best", "2", "--metric", "val_loss", "--json", run).json()
    assert {k["name"] for k in doc["kept"]} == want and all(k["reasons"] for k in doc["kept"])
    assert {d["name"]: d["score"] for d in doc["deleted"]} == {n: scores[n] for n in set(before) - want}
    assert listing(run) == files


def test_mode_auto_is_printed_and_followed(run_copy, tf):
    run = run_copy("tf1")
    values, before = tf_values(tf, run, "val_accuracy"), checkpoints_of(run)
    result = run_cli("prune", "--dry-run", "--keep-best", "2", "--metric", "val_accuracy", run)
    assert "higher is better (--mode auto chose max)" in result.stdout
    doc = run_cli("prune", "--dry-run", "--keep-best", "2", "--metric", "val_accuracy", "--json", run).json()
    assert doc["metric"]["mode"] == "max" and doc["metric"]["mode_given"] is False
    assert {k["name"] for k in doc["kept"]} == expected_kept(before, values, 2, "max")
    forced = run_cli("prune", "--dry-run", "--keep-best", "2", "--metric", "val_accuracy", "--mode", "min",
                     "--json", run).json()
    assert {k["name"] for k in forced["kept"]} == expected_kept(before, values, 2, "min")
    assert "lower is better (--mode min)" in run_cli("prune", "--dry-run", "--keep-best", "1", "--metric",
                                                    "val_accuracy", "--mode", "min", run).stdout


def test_drop_unscored(run_copy, tf):
    run = run_copy("tf1")
    values, before = tf_values(tf, run, "val_loss"), checkpoints_of(run)
    want = expected_kept(before, values, 3, "min", drop_unscored=True)
    assert {"model.ckpt-60", "model.ckpt-70", "model.ckpt-80"}.isdisjoint(want)
    result = run_cli("prune", "--keep-best", "3", "--metric", "val_loss", "--drop-unscored", "--yes", run)
    assert result.exit_code == 0, result.stderr
    assert set(checkpoints_of(run)) == want
    assert_restorable(tf, run, ranked(expected_scores(before, values), before, "min")[0], restore_tf1)


def test_drop_unscored_refuses_when_nothing_is_scored(run_copy, tmp_path):
    run = run_copy("tf1")
    files = listing(run)
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s + 1, "val_loss": 0.5}) + "\n" for s in STEPS))
    result = run_cli("prune", "--keep-best", "1", "--metric", "val_loss", "--metrics", log, "--drop-unscored",
                     "--yes", run)
    assert_one_line_error(result, 3)
    assert "nothing deleted" in result.stderr and listing(run) == files


def test_unknown_tags_exit_3_naming_the_tags_there(run_copy, tmp_path):
    run = run_copy("tf1")
    files = listing(run)
    result = run_cli("prune", "--keep-best", "1", "--metric", "val_los", "--mode", "min", "--yes", run)
    assert_one_line_error(result, 3)
    assert "val_loss" in result.stderr and "val_accuracy" in result.stderr
    log = tmp_path / "log.csv"
    log.write_text("step,loss\n10,0.5\n")
    result = run_cli("prune", "--keep-best", "1", "--metric", "val_loss", "--metrics", log, "--yes", run)
    assert_one_line_error(result, 3)
    assert "(it has loss)" in result.stderr
    assert listing(run) == files


@pytest.mark.parametrize("form", ["jsonl", "csv"])
def test_metrics_files(run_copy, tf, tmp_path, form):
    """The summary values, written as a JSON-lines or CSV log: the same scores, the same plan."""
    run = run_copy("tf1")
    values, before = tf_values(tf, run, "val_loss"), checkpoints_of(run)
    log = tmp_path / f"log.{form}"
    if form == "jsonl":
        log.write_text("".join(json.dumps({"step": s, "val_loss": v if math.isfinite(v) else str(v)}) + "\n"
                               for s, v in values.items()))
    else:
        log.write_text("step,val_loss\n" + "".join(f"{s},{v!r}\n" for s, v in values.items()))
    doc = run_cli("prune", "--dry-run", "--keep-best", "3", "--metric", "val_loss", "--metrics", log,
                  "--json", run).json()
    assert doc["metric"]["source"].startswith(f"metrics file {log}")
    assert {k["name"] for k in doc["kept"]} == expected_kept(before, values, 3, "min")
    scores = expected_scores(before, values)
    assert {e["name"]: e["score"] for e in doc["kept"] + doc["deleted"]} == scores
    result = run_cli("prune", "--keep-best", "3", "--metric", "val_loss", "--metrics", log, "--yes", run)
    assert result.exit_code == 0, result.stderr
    assert set(checkpoints_of(run)) == expected_kept(before, values, 3, "min")


def test_usage_errors(runs):
    run = runs / "tf1"
    for args, message in (
            (["--keep-best", "2"], "need --metric"), (["--keep-last", "1", "--drop-unscored"], "need --metric"),
            (["--keep-best", "0", "--metric", "val_loss"], "--keep-best must be >= 1"),
            (["--metric", "val_loss"], "no retention rule given"),
            (["--keep-last", "1", "--mode", "max"], "--mode needs --metric"),
            (["--keep-best", "1", "--metric", "val_widgets", "--name-pattern", "w.{epoch}-{val_widgets}.h5"],
             "give --mode min or --mode max"),  # a tag that exists (here, in names) but says no direction
            (["--keep-best", "1", "--metric", "val_loss", "--mode", "up"], "--mode takes min, max or auto"),
            (["--keep-best", "1", "--metric", "val_loss", "--name-pattern", "w.{epoch}.h5"], "no field {val_loss}")):
        result = run_cli("prune", "--dry-run", *args, run)
        assert_one_line_error(result, 2)
        assert message in result.stderr, (args, result.stderr)


def test_recursive_prune_skips_a_run_without_metrics(run_copy, tf, tmp_path):
    run, other = run_copy("tf1"), run_copy("tf2")
    values, before, other_files = tf_values(tf, run, "val_loss"), checkpoints_of(run), listing(other)
    result = run_cli("prune", "--recursive", "--keep-best", "2", "--metric", "val_loss", "--yes", tmp_path)
    assert_one_line_error(result, 3)
    assert listing(other) == other_files
    assert set(checkpoints_of(run)) == expected_kept(before, values, 2, "min")


def test_the_api_plans_by_metric(run_copy, tf):
    import ckpttool

    run = run_copy("tf1")
    values, before = tf_values(tf, run, "val_loss"), checkpoints_of(run)
    plan = ckpttool.plan_prune(run, keep_best=2, metric="val_loss")
    assert {k.name for k in plan.kept} == expected_kept(before, values, 2, "min")
    assert {e.name: e.score for e in plan.kept + plan.deleted} == expected_scores(before, values)
    ckpttool.apply_prune(plan)
    assert set(checkpoints_of(run)) == expected_kept(before, values, 2, "min")


# -- ls -------------------------------------------------------------------------------------------

def _names(result) -> list[str]:
    assert result.exit_code == 0, result.stderr
    return [c["name"] for c in result.json()["checkpoints"]]


def test_ls_metric_column(runs, tf):
    result = run_cli("ls", "--metric", "val_loss", runs / "tf1")
    assert result.exit_code == 0, result.stderr
    assert "score" in result.stdout.splitlines()[1]
    scores = expected_scores(checkpoints_of(runs / "tf1"), tf_values(tf, runs / "tf1", "val_loss"))
    for line in result.stdout.splitlines()[3:]:
        if line.startswith("model.ckpt-"):
            score = scores[line.split()[0]]
            assert (f"{score:.6g}" if score is not None else " - ") in line


def test_ls_sort(run_copy, tf):
    run = run_copy("tf1")
    before = checkpoints_of(run)
    sizes = {name: sum(p.stat().st_size for p in run.glob(name + ".*")) for name in before}
    # Distinct sizes and times, set here: a bigger data file for some, older files for others.
    for i, name in enumerate(sorted(before, key=before.get)):
        data = next(run.glob(name + ".data-*"))
        with open(data, "ab") as f:
            f.write(b"\0" * (((i * 7) % 12) * 100))
        sizes[name] += ((i * 7) % 12) * 100
        stamp = time.time() - 1000 * ((i * 5) % 12)
        for p in run.glob(name + ".*"):
            os.utime(p, (stamp, stamp))
    (run / "checkpoint").unlink()  # times from the files, not the state file
    mtimes = {name: max(p.stat().st_mtime for p in run.glob(name + ".*")) for name in before}
    assert _names(run_cli("ls", "--sort", "step", "--json", run)) == sorted(before, key=before.get)
    assert _names(run_cli("ls", "--sort", "step:desc", "--json", run)) == sorted(before, key=before.get)[::-1]
    assert _names(run_cli("ls", "--sort", "time", "--json", run)) == sorted(before, key=mtimes.get)
    assert _names(run_cli("ls", "--sort", "size", "--json", run)) == sorted(before, key=sizes.get, reverse=True)
    assert _names(run_cli("ls", "--sort", "size:asc", "--json", run)) == sorted(before, key=sizes.get)
    scores = expected_scores(before, tf_values(tf, run, "val_loss"))
    best_first = ranked(scores, before, "min")
    unscored = [n for n in sorted(before, key=before.get) if scores[n] is None]
    assert _names(run_cli("ls", "--metric", "val_loss", "--sort", "metric", "--json", run)) == best_first + unscored
    assert _names(run_cli("ls", "--metric", "val_accuracy", "--sort", "metric", "--json", run)) == \
        ranked(expected_scores(before, tf_values(tf, run, "val_accuracy")), before, "max") + ["model.ckpt-60"]


def test_ls_filters(run_copy, tf):
    run = run_copy("tf1")
    before = checkpoints_of(run)
    old = [n for n in before if before[n] <= 30]
    for name in old:
        with open(next(run.glob(name + ".data-*")), "ab") as f:
            f.write(b"\0" * 2_000_000)
        for p in run.glob(name + ".*"):
            os.utime(p, (time.time() - 10 * 86400,) * 2)
    (run / "checkpoint").unlink()
    scores = expected_scores(before, tf_values(tf, run, "val_loss"))
    in_order = sorted(before, key=before.get)
    assert _names(run_cli("ls", "--filter", "age>7d", "--json", run)) == sorted(old, key=before.get)
    assert _names(run_cli("ls", "--filter", "age<=7d", "--json", run)) == [n for n in in_order if n not in old]
    assert _names(run_cli("ls", "--filter", "size>1MB", "--json", run)) == sorted(old, key=before.get)
    assert _names(run_cli("ls", "--filter", "size<1.5MiB", "--json", run)) == [n for n in in_order if n not in old]
    assert _names(run_cli("ls", "--metric", "val_loss", "--filter", "metric<0.5", "--json", run)) == \
        [n for n in in_order if scores[n] is not None and scores[n] < 0.5]
    assert _names(run_cli("ls", "--metric", "val_loss", "--filter", "metric>=0.5", "--filter", "step!=90",
                          "--json", run)) == \
        [n for n in in_order if scores[n] is not None and scores[n] >= 0.5 and before[n] != 90]
    assert _names(run_cli("ls", "--filter", "step>=100", "--json", run)) == [n for n in in_order if before[n] >= 100]
    quiet = run_cli("ls", "--metric", "val_loss", "--filter", "metric<0.3", "-q", run)
    assert quiet.stdout.split() == [n for n in in_order if scores[n] is not None and scores[n] < 0.3]


@pytest.mark.parametrize("bad", ["size>", "size>1XB", "age>soon", "metric<abc", "metric<nan", "colour=red",
                                 "size~1GB", "step"])
def test_ls_bad_filter_is_a_usage_error(runs, bad):
    result = run_cli("ls", "--metric", "val_loss", "--filter", bad, runs / "tf1")
    assert_one_line_error(result, 2)
    assert f"bad --filter {bad!r}" in result.stderr


def test_ls_metric_needs_metric(runs):
    for args, message in ((["--filter", "metric<0.3"], "needs --metric"), (["--sort", "metric"], "needs --metric"),
                          (["--sort", "colour"], "bad --sort"), (["--sort", "size:up"], "bad --sort"),
                          (["--events", str(runs)], "--events needs --metric")):
        result = run_cli("ls", *args, runs / "tf1")
        assert_one_line_error(result, 2)
        assert message in result.stderr, (args, result.stderr)
    assert_one_line_error(run_cli("ls", "--metric", "nope", "--mode", "min", runs / "tf1"), 3)


# -- latest --best --------------------------------------------------------------------------------

def test_latest_best(runs, tf):
    run = runs / "tf1"
    before = checkpoints_of(run)
    for tag, mode in (("val_loss", "min"), ("val_accuracy", "max")):
        best = ranked(expected_scores(before, tf_values(tf, run, tag)), before, mode)[0]
        result = run_cli("latest", "--best", "--metric", tag, run)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == f"{run}/{best}\n"
        assert f"--mode auto chose {mode}" in result.stderr
        assert run_cli("latest", "--best", "--metric", tag, "--step", run).stdout == f"{before[best]}\n"
        doc = run_cli("latest", "--best", "--metric", tag, "--json", run).json()
        assert doc["best"] == f"{run}/{best}" and doc["step"] == before[best]
    result = run_cli("latest", "--best", "--metric", "eval/loss", "--events", runs / "tf2_events", runs / "tf2")
    values = tf_values(tf, runs / "tf2_events", "eval/loss")
    tf2 = checkpoints_of(runs / "tf2")
    assert result.stdout == f"{runs / 'tf2'}/{ranked(expected_scores(tf2, values), tf2, 'min')[0]}\n"


def _read_all(tf, prefix: Path) -> None:
    reader = tf.train.load_checkpoint(str(prefix))
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


def test_latest_best_passes_over_a_best_whose_data_is_cut_short(run_copy, tf):
    """The best-scored checkpoint's data shard cut short (TensorFlow cannot read it): --best answers
    the next best whole one, which TensorFlow reads, and says why; all of them cut: no answer."""
    run = run_copy("tf1")
    before = checkpoints_of(run)
    order = ranked(expected_scores(before, tf_values(tf, run, "val_loss")), before, "min")
    for name in order[:2]:
        shard = next(run.glob(f"{name}.data-*"))
        os.truncate(shard, shard.stat().st_size - 1)
        with pytest.raises(Exception):
            _read_all(tf, run / name)
    result = run_cli("latest", "--best", "--metric", "val_loss", run)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{run}/{order[2]}\n"
    assert "cut short" in result.stderr and order[0] in result.stderr and order[1] in result.stderr
    _read_all(tf, run / order[2])
    doc = run_cli("latest", "--best", "--metric", "val_loss", "--json", run).json()
    assert doc["best"] == f"{run}/{order[2]}" and doc["step"] == before[order[2]]
    for name in order[2:]:
        shard = next(run.glob(f"{name}.data-*"))
        os.truncate(shard, shard.stat().st_size - 1)
    result = run_cli("latest", "--best", "--metric", "val_loss", run)
    assert result.exit_code == 1 and result.stdout == "", result.stderr


def test_latest_best_with_nothing_scored_is_a_negative_answer(runs, tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,val_loss\n5,0.1\n")
    result = run_cli("latest", "--best", "--metric", "val_loss", "--metrics", log, runs / "tf1")
    assert result.exit_code == 1 and result.stdout == ""
    assert "has a val_loss score" in result.stderr
    assert run_cli("latest", "--best", "--metric", "val_loss", "--metrics", log, "--json", runs / "tf1").exit_code == 1
    assert_one_line_error(run_cli("latest", "--best", runs / "tf1"), 2)
    assert_one_line_error(run_cli("latest", "--metric", "val_loss", runs / "tf1"), 2)
    assert_one_line_error(run_cli("latest", "--best", "--metric", "val_los", "--mode", "min", runs / "tf1"), 3)


# -- Keras checkpoint files: {epoch} from 1, logs from 0 --------------------------------------------

def test_keras_files_are_scored_by_the_log_epoch_before(series_dir):
    """Keras' own history is the oracle: the file for {epoch}=k holds the weights after log epoch k-1."""
    from ckpttool.ops.runs.scan import CheckpointInfo
    from ckpttool.ops.retention.scoring import MetricOptions, score_checkpoints

    history = json.loads((series_dir / "keras" / "history.json").read_text())["val_loss"]
    files = sorted((series_dir / "keras" / "ckpt").iterdir())
    infos = [CheckpointInfo(name=p.name, prefix=str(p), family="w", step=int(p.name[2:4]), format="keras",
                            size_bytes=1, num_shards=None, complete=True, has_meta=False, in_state=False,
                            is_latest=False, mtime=0.0, timestamp=None, files=(str(p),), keras_epochs=True)
             for p in files]
    scores = score_checkpoints(str(series_dir / "keras"), infos,
                               MetricOptions("val_loss", events_dir=str(series_dir / "keras" / "logs")))
    assert scores.keras_aligned and "k-1" in scores.describe()
    for info in infos:
        assert scores.score(info.name) == pytest.approx(history[info.step - 1], rel=1e-6)
    by_name = score_checkpoints(str(series_dir / "keras"), infos,
                                MetricOptions("val_loss", name_pattern="w.{epoch:02d}-{val_loss:.2f}.weights.h5"))
    for info in infos:
        assert by_name.score(info.name) == pytest.approx(history[info.step - 1], abs=0.005)
