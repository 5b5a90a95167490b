"""The fleet options of issue 26 on run directories written by TensorFlow, Keras and an HF-style
job (tests/series_fixtures.py, fleet/): `ls -r --summary`, `prune -r --budget`, `prune -r
--drop-failed-runs`. Expectations come from os.stat, TensorFlow's own readers (the state file's
timestamps, the event files' losses) and the rules as documented, never from our output; what is
kept is loaded by TensorFlow afterwards."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import _tree_state, assert_one_line_error, run_cli
from tests.test_remote import fresh_prefix, servers  # noqa: F401 - a fixture

DAY = 86400
_TF_FILE = re.compile(r"^(ckpt-\d+)\.(index|data-\d{5}-of-\d{5})$")
_KERAS_FILE = re.compile(r"^w\.(\d+)\.weights\.h5$")


@pytest.fixture
def fleet(series_dir, tmp_path) -> Path:
    """A private copy of the fleet tree (file times kept)."""
    root = tmp_path / "fleet"
    shutil.copytree(series_dir / "fleet", root)
    return root


def _checkpoints(run: Path, tf) -> dict[str, dict]:
    """name -> {step, size, time, latest} of every checkpoint of a run, by os.stat and TensorFlow's
    reading of the state file (its save times, its latest)."""
    found: dict[str, dict] = {}
    for name in os.listdir(run):
        if match := _TF_FILE.match(name):
            entry = found.setdefault(match[1], {"step": int(match[1].split("-")[1]), "size": 0})
            entry["size"] += os.stat(run / name).st_size
        elif match := _KERAS_FILE.match(name):
            found[name] = {"step": int(match[1]), "size": os.stat(run / name).st_size,
                           "time": os.stat(run / name).st_mtime}
    state = tf.train.get_checkpoint_state(str(run))
    if state is not None:
        for path, stamp in zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps):
            found[os.path.basename(path)]["time"] = stamp
    latest = os.path.basename(state.model_checkpoint_path) if state else max(found, key=lambda n: found[n]["step"])
    for name, entry in found.items():
        entry["latest"] = name == latest
    return found


def _losses(run: Path, tf) -> dict[int, float]:
    """step -> loss, as TensorFlow reads the run's event files."""
    losses = {}
    for name in os.listdir(run):
        if "tfevents" in name:
            for event in tf.compat.v1.train.summary_iterator(str(run / name)):
                for value in event.summary.value:
                    if value.tag == "loss":
                        losses[event.step] = float(tf.make_ndarray(value.tensor))
    return losses


def _runs(root: Path) -> list[Path]:
    return [root / name for name in ("keras_run", "run_a", "run_b", "tf_failed", "tf_started")]


# -- ls -r --summary ------------------------------------------------------------------------------------

def _expected_summary(root: Path, tf, keep_last: int) -> dict[str, dict]:
    expected = {}
    for run in _runs(root):
        found = _checkpoints(run, tf)
        by_step = sorted(found, key=lambda n: found[n]["step"])
        going = [n for n in by_step[:-keep_last] if not found[n]["latest"]]
        expected[str(run)] = {"checkpoints": len(found), "complete": len(found), "damaged": 0,
                              "newest_step": max(e["step"] for e in found.values()),
                              "size_bytes": sum(e["size"] for e in found.values()),
                              "reclaimable_bytes": sum(found[n]["size"] for n in going)}
    return expected


def test_summary_rows_and_totals(fleet, tf):
    doc = run_cli("ls", "-r", "--summary", "--keep-last", "2", "--json", fleet)
    assert doc.exit_code == 0, doc.stderr
    doc = doc.json()
    expected = _expected_summary(fleet, tf, keep_last=2)
    rows = {r["directory"]: {k: r[k] for k in expected[str(fleet / "run_a")]} for r in doc["runs"]}
    assert rows == expected
    sizes = [r["size_bytes"] for r in doc["runs"]]
    assert sizes == sorted(sizes, reverse=True)  # largest first
    totals = doc["totals"]
    assert totals["runs"] == len(expected)
    for field in ("checkpoints", "size_bytes", "reclaimable_bytes"):
        assert totals[field] == sum(e[field] for e in expected.values()), field
    assert expected[str(fleet / "run_a")]["reclaimable_bytes"] > 0  # the rules free something to check

    text = run_cli("ls", "-r", "--summary", "--keep-last", "2", fleet)
    complete = sum(e["complete"] for e in expected.values())
    assert text.exit_code == 0 and re.search(rf"^total \(5 run directories\) +{complete} +0 ", text.stdout, re.M)

    scored = run_cli("ls", "-r", "--summary", "--metric", "loss", "--json", fleet / "run_a").json()["runs"][0]
    losses = _losses(fleet / "run_a", tf)
    best_step = min(losses, key=losses.get)
    assert scored["best"] == f"ckpt-{best_step}" and scored["best_score"] == pytest.approx(losses[best_step])
    assert best_step != scored["newest_step"]  # the best is not merely the latest


def test_summary_rule_options_need_summary(fleet):
    assert_one_line_error(run_cli("ls", "-r", "--keep-last", "2", fleet), 2)


def test_summary_and_budget_on_a_bucket(servers, fleet, tf):
    from tests.remote_servers import upload_tree

    from ckpttool.storage import remote

    shutil.copytree(fleet / "hf_failed", fleet / "hf_notes")
    (fleet / "hf_notes" / "notes.txt").write_text("mine")
    s3 = servers["s3"]
    url = upload_tree(s3, str(fleet), fresh_prefix("fleet"))
    doc = run_cli("ls", "-r", "--summary", "--keep-last", "2", "--json", url)
    assert doc.exit_code == 0, doc.stderr
    rows = {r["directory"]: r for r in doc.json()["runs"]}
    for run, expected in _expected_summary(fleet, tf, keep_last=2).items():
        row = rows[url + "/" + Path(run).name]
        assert {k: row[k] for k in expected} == expected, run
    budget = run_cli("prune", "-r", "--yes", "--budget", "1KB", "--json", url)
    assert budget.exit_code == 1, budget.stderr
    latest = sum(e["size"] for run in _runs(fleet) for e in _checkpoints(run, tf).values() if e["latest"])
    assert budget.json()["budget"]["missed_by_bytes"] == latest - 1000
    after = run_cli("ls", "-r", "--summary", "--json", url).json()
    assert after["totals"]["size_bytes"] == latest and after["totals"]["checkpoints"] == len(_runs(fleet))

    keys_before = remote.filesystem("s3").find(url.removeprefix("s3://"))
    dropped = run_cli("prune", "-r", "--yes", "--drop-failed-runs", "0s", "--json", url)  # uploaded just now
    assert dropped.exit_code == 0, dropped.stderr
    failed = {"tf_failed", "keras_failed", "hf_failed"}
    assert {r["directory"] for r in dropped.json()["failed_runs"]["dropped"]} == {f"{url}/{name}" for name in failed}
    keys_after = remote.filesystem("s3").find(url.removeprefix("s3://"))
    assert keys_after == [k for k in keys_before if k[len(url) - 4:].split("/")[0] not in failed]
    assert any(k.endswith("hf_notes/notes.txt") for k in keys_after)


# -- prune -r --budget --------------------------------------------------------------------------------

def _all_checkpoints(root: Path, runs: list[Path], tf) -> list[tuple[str, str, dict]]:
    return [(run.name, name, entry) for run in runs for name, entry in _checkpoints(run, tf).items()]


def test_budget_deletes_oldest_first_across_runs(fleet, tf):
    everything = _all_checkpoints(fleet, _runs(fleet), tf)
    total = sum(e["size"] for _r, _n, e in everything)
    candidates = sorted((e["time"], run, name, e["size"]) for run, name, e in everything if not e["latest"])
    budget = total - sum(size for *_x, size in candidates[:4])  # exactly the four oldest must go
    result = run_cli("prune", "-r", "--yes", "--budget", str(budget), "--json", fleet)
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    deleted = {(Path(d["directory"]).name, x["name"]) for d in doc["directories"] for x in d["deleted"]}
    assert deleted == {(run, name) for _t, run, name, _s in candidates[:4]}
    assert doc["budget"]["missed_by_bytes"] == 0 and doc["budget"]["bytes_after"] == budget
    for run, name in deleted:
        assert not any(f.startswith(name + ".") or f == name for f in os.listdir(fleet / run))
    for run in ("run_a", "run_b"):  # TensorFlow still restores each run's latest
        latest = tf.train.latest_checkpoint(str(fleet / run))
        assert tf.train.load_checkpoint(latest).get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE").shape == (4096,)


def test_budget_reports_what_was_freed_when_a_run_cannot_be_locked(fleet, tf, monkeypatch):
    """The budget's deletions planned in a run directory another run holds are not done: the budget
    line and JSON say the bytes still there (by os.stat of TensorFlow's checkpoints), not the plan's."""
    from ckpttool.ops.retention import batches
    from ckpttool.ops.runs.lock import directory_lock

    monkeypatch.setattr(batches, "LOCK_TIMEOUT", 0.0)  # not 600 s of waiting on the held lock
    everything = _all_checkpoints(fleet, _runs(fleet), tf)
    total = sum(e["size"] for _r, _n, e in everything)
    candidates = sorted((e["time"], run, name, e["size"]) for run, name, e in everything if not e["latest"])
    budget = total - sum(size for *_x, size in candidates[:4])
    held = next(run for _t, run, _n, _s in candidates[:4])
    with directory_lock(str(fleet / held)):
        result = run_cli("prune", "-r", "--yes", "--budget", str(budget), "--json", fleet)
    assert_one_line_error(result, 4)
    left = sum(e["size"] for run, name, e in _all_checkpoints(fleet, _runs(fleet), tf))
    not_freed = sum(size for _t, run, _n, size in candidates[:4] if run == held)
    assert not_freed and left == budget + not_freed
    outcome = result.json()["budget"]
    assert outcome["bytes_after"] == left and outcome["missed_by_bytes"] == not_freed
    assert outcome["deleted_count"] == sum(run != held for _t, run, _n, _s in candidates[:4])


def test_budget_that_cannot_be_met_keeps_latest_best_and_keep_step(fleet, tf):
    runs = [fleet / "run_a", fleet / "run_b", fleet / "tf_started"]
    for other in set(_runs(fleet)) - set(runs) | {fleet / "keras_failed", fleet / "hf_failed"}:
        shutil.rmtree(other)
    kept_expected = set()
    for run in runs:
        found = _checkpoints(run, tf)
        losses = _losses(run, tf)
        best = min((n for n in found if found[n]["step"] in losses), key=lambda n: (losses[found[n]["step"]],
                                                                                       found[n]["step"]))
        kept_expected |= {(run.name, n) for n in found if found[n]["latest"] or n == best or found[n]["step"] == 100}
    everything = _all_checkpoints(fleet, runs, tf)
    left = sum(e["size"] for run, name, e in everything if (run, name) in kept_expected)
    result = run_cli("prune", "-r", "--yes", "--budget", "1KB", "--metric", "loss", "--keep-step", "100",
                     "--json", fleet)
    assert result.exit_code == 1, result.stderr
    doc = result.json()
    kept = {(Path(d["directory"]).name, k["name"]) for d in doc["directories"] for k in d["kept"]}
    assert kept == kept_expected
    assert doc["budget"]["missed_by_bytes"] == left - 1000
    assert "missed by" in result.stderr
    text = run_cli("prune", "-r", "--dry-run", "--budget", "1KB", "--metric", "loss", fleet)
    assert text.exit_code == 1 and "missed by" in text.stdout
    reader = tf.train.load_checkpoint(str(fleet / "run_a" / "ckpt-200"))  # run_a's best, not its latest
    assert reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")[0] == 2.0  # the second save of the run
    assert tf.train.latest_checkpoint(str(fleet / "run_a")).endswith("ckpt-400")


# -- prune -r --drop-failed-runs ---------------------------------------------------------------------

def _age(directory: Path, seconds: float) -> None:
    for current, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(current, name)
            st = os.stat(path)
            os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def test_failed_runs_are_dropped_and_users_files_kept(fleet, tf):
    shutil.copytree(fleet / "hf_failed", fleet / "hf_failed_notes")
    (fleet / "hf_failed_notes" / "notes.txt").write_text("my notes on why it failed")
    shutil.copytree(fleet / "hf_failed", fleet / "hf_damaged")
    events = next((fleet / "hf_damaged").rglob("*tfevents*"))
    data = bytearray(events.read_bytes())
    data[-6] ^= 0xFF  # inside the last record's data: its CRC fails
    events.write_bytes(bytes(data))
    for name in os.listdir(fleet):
        _age(fleet / name, 2 * DAY)
    shutil.copytree(fleet / "tf_failed", fleet / "tf_failed_young")
    _age(fleet / "tf_failed_young", -2 * DAY)  # back to now: a job that may still be starting
    before = _tree_state(fleet)

    dry = run_cli("prune", "-r", "--dry-run", "--drop-failed-runs", "1d", "--json", fleet)
    assert dry.exit_code == 0, dry.stderr
    failed = dry.json()["failed_runs"]
    failed_dirs = {"tf_failed", "keras_failed", "hf_failed"}  # what the fixture's jobs left at start-up
    assert {Path(r["directory"]).name for r in failed["dropped"]} == failed_dirs
    assert {Path(r["directory"]).name for r in failed["kept"]} == {"hf_failed_notes", "hf_damaged"}
    sizes = {Path(r["directory"]).name: r["size_bytes"] for r in failed["dropped"]}
    for name in failed_dirs:
        assert sizes[name] == sum(p.stat().st_size for p in (fleet / name).rglob("*") if p.is_file())
    assert _tree_state(fleet) == before  # a dry run changes nothing
    assert "would drop" in run_cli("prune", "-r", "--dry-run", "--drop-failed-runs", "1d", fleet).stdout

    done = run_cli("prune", "-r", "--yes", "--drop-failed-runs", "1d", "--json", fleet)
    assert done.exit_code == 0, done.stderr
    left = set(os.listdir(fleet))
    assert not left & failed_dirs
    assert {"hf_failed_notes", "hf_damaged", "tf_failed_young", "tf_started", "run_a", "run_b", "keras_run"} <= left
    assert (fleet / "hf_failed_notes" / "notes.txt").read_text() == "my notes on why it failed"
    unchanged = {k: v for k, v in before.items() if not k.split(os.sep)[0] in failed_dirs}
    assert _tree_state(fleet) == unchanged  # nothing else touched, not even the young failed run
    assert tf.train.latest_checkpoint(str(fleet / "tf_started")).endswith("ckpt-0")


def test_drop_failed_runs_needs_recursive(fleet):
    assert_one_line_error(run_cli("prune", "--dry-run", "--drop-failed-runs", "1d", fleet / "tf_failed"), 2)
    assert_one_line_error(run_cli("prune", "-r", "--dry-run", "--budget", "lots", fleet), 2)


def _aged_fleet(fleet) -> set[str]:
    """The fleet two days old: its failed runs (what the fixture's jobs left at start-up) may be dropped."""
    for name in os.listdir(fleet):
        _age(fleet / name, 2 * DAY)
    return {"tf_failed", "keras_failed", "hf_failed"}


def _checkpoint_names(root: Path) -> set[tuple[str, str]]:
    """(run, checkpoint name) of every file that is part of a TF or Keras checkpoint, by name."""
    return {(run.name, (m := _TF_FILE.match(n)) and m[1] or n) for run in root.iterdir() if run.is_dir()
            for n in os.listdir(run) if _TF_FILE.match(n) or _KERAS_FILE.match(n)}


def test_quiet_still_reports_each_failed_run_directory(fleet):
    """-q prints the bare names of what went (checkpoints, then failed run directories dropped), and
    still says on stderr, one line each, which run directories could not be pruned; the exit status
    says that something failed."""
    failed_dirs = _aged_fleet(fleet)
    shutil.copytree(fleet / "run_a", fleet / "run_broken")
    (fleet / "run_broken" / "checkpoint").write_text("model_checkpoint_path: \"ckpt-\n{{{ not a state file")
    before = _checkpoint_names(fleet)
    result = run_cli("prune", "-r", "-q", "--yes", "--keep-last", "1", "--drop-failed-runs", "1d", fleet)
    assert result.exit_code == 3, result.stderr
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len([line for line in warned if str(fleet / "run_broken") in line]) == 1, result.stderr
    assert not failed_dirs & set(os.listdir(fleet))
    vanished = sorted(name for run, name in before - _checkpoint_names(fleet) if run not in failed_dirs)
    assert vanished, "--keep-last 1 deletes something to print"
    lines = result.stdout.splitlines()
    assert sorted(lines[:len(vanished)]) == vanished  # (runs' checkpoints may share names: one line each)
    assert sorted(lines[len(vanished):]) == sorted(str(fleet / name) for name in failed_dirs)


def test_the_prompt_counts_the_failed_runs_it_drops(fleet):
    """On a terminal without --yes, the question names what --drop-failed-runs removes too: the
    failed run directories and their bytes (os.stat of their files)."""
    from ckpttool.cli.render import human_bytes
    from tests.test_prune_repair import on_a_terminal

    failed_dirs = _aged_fleet(fleet)
    size = sum(p.stat().st_size for name in failed_dirs for p in (fleet / name).rglob("*") if p.is_file())
    output, code = on_a_terminal(["prune", "-r", "--drop-failed-runs", "1d", str(fleet)], b"y\n")
    question = re.search(rb"Delete (\d+) items? and (\d+) failed run directories, ([^?]+)\?", output)
    assert question, output
    assert (int(question[1]), int(question[2]), question[3].decode()) == (0, len(failed_dirs), human_bytes(size))
    assert code == 0, output
    assert not failed_dirs & set(os.listdir(fleet))


def test_one_progress_bar_counts_the_run_directories(fixtures_dir, tmp_path):
    """On a terminal, `prune -r` shows one bar for the fleet: every frame of it counts up to the number
    of run directories, never going back (a bar per run directory would restart at 0 of another
    total), and its last frame says all are done."""
    from tests.test_prune_repair import on_a_terminal

    runs = 5
    for number in range(runs):
        shutil.copytree(fixtures_dir / "tf2_many", tmp_path / "tree" / f"run-{number}")
    output, code = on_a_terminal(["prune", "-r", "--yes", "--keep-last", "2", str(tmp_path / "tree")],
                                 env={"TERM": "xterm", "COLUMNS": "120"})
    assert code == 0, output
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", output).decode(errors="replace")
    frames = [(int(done), int(total)) for done, total in
              re.findall(r"pruning run directories\D*?(\d+)/(\d+)", text)]
    assert frames, text
    assert {total for _done, total in frames} == {runs}
    assert [done for done, _total in frames] == sorted(done for done, _total in frames)
    assert frames[-1] == (runs, runs)
    assert all(len(os.listdir(tmp_path / "tree" / f"run-{n}")) < len(os.listdir(fixtures_dir / "tf2_many"))
               for n in range(runs))


# -- one run directory failing while the others are pruned -------------------------------------------

def test_prune_r_reports_every_run_when_one_cannot_be_locked(fleet, tf, monkeypatch):
    """A run directory another ckpttool run holds is not pruned; the others are, each deletion is
    reported (JSON and -q), and the exit status is the lock's (4), as when pruned one by one."""
    from ckpttool.ops.retention import batches
    from ckpttool.ops.runs.lock import directory_lock

    monkeypatch.setattr(batches, "LOCK_TIMEOUT", 0.0)  # not 600 s of waiting on the held lock
    expected = {}
    for run in _runs(fleet):
        found = _checkpoints(run, tf)
        by_step = sorted(found, key=lambda n: found[n]["step"])
        expected[run.name] = {n for n in by_step[:-1] if not found[n]["latest"]}
    assert expected["run_b"] and expected["run_a"]  # both runs have something to lose
    quiet_copy = fleet.parent / "fleet_q"
    shutil.copytree(fleet, quiet_copy)
    for root, form in ((fleet, "--json"), (quiet_copy, "-q")):
        held = _tree_state(root / "run_b")
        with directory_lock(str(root / "run_b")):
            result = run_cli("prune", "-r", "--keep-last", "1", "--yes", form, root)
        assert_one_line_error(result, 4)
        assert f"not pruned: {root / 'run_b'}:" in result.stderr
        assert _tree_state(root / "run_b") == held
        if form == "--json":
            docs = {Path(d["directory"]).name: d for d in result.json()["directories"]}
            assert docs["run_b"]["error"]["kind"] == "refused"
            deleted = {run: {x["name"] for x in doc.get("deleted", ())} for run, doc in docs.items() if run != "run_b"}
        else:
            deleted = {run: {n for n in result.stdout.split() if n in expected[run]} for run in expected if run != "run_b"}
            assert sorted(result.stdout.split()) == sorted(n for names in deleted.values() for n in names)
        assert deleted == {run: names for run, names in expected.items() if run != "run_b"}
    for run in ("run_a", "run_b"):  # TensorFlow still restores each run's latest
        latest = tf.train.latest_checkpoint(str(fleet / run))
        assert tf.train.load_checkpoint(latest).get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE").shape == (4096,)


def test_prune_r_reports_every_run_when_one_fails_otherwise(fleet, tf, monkeypatch):
    """A run directory whose apply fails with no checkpoint or storage error (here out of memory
    while taking its lock) is not pruned; the other runs' deletions happened, so they are reported
    too (JSON, -q), before the failure's own error and exit status (the JSON's error object's)."""
    from ckpttool.ops.retention import batches, prune

    def failing(original):
        def wrapped(directory, *args, **kwargs):
            if os.path.basename(directory) == "run_b":
                raise MemoryError()
            return original(directory, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(batches, "locked_as_planned", failing(batches.locked_as_planned))
    monkeypatch.setattr(prune, "locked_as_planned", failing(prune.locked_as_planned))  # a run applied alone
    expected = {}
    for run in _runs(fleet):
        found = _checkpoints(run, tf)
        by_step = sorted(found, key=lambda n: found[n]["step"])
        expected[run.name] = {n for n in by_step[:-1] if not found[n]["latest"]}
    quiet_copy = fleet.parent / "fleet_q"
    shutil.copytree(fleet, quiet_copy)
    for root, form in ((fleet, "--json"), (quiet_copy, "-q")):
        held = _tree_state(root / "run_b")
        result = run_cli("prune", "-r", "--keep-last", "1", "--yes", form, root)
        assert _tree_state(root / "run_b") == held
        assert "Traceback" not in result.stderr and f"not pruned: {root / 'run_b'}:" in result.stderr
        gone = {run: {n for n in expected[run] if not any(f.startswith(n) for f in os.listdir(root / run))}
                for run in expected if run != "run_b"}
        assert gone == {run: names for run, names in expected.items() if run != "run_b"}
        if form == "--json":
            docs = {Path(d["directory"]).name: d for d in result.json()["directories"]}
            assert result.exit_code == docs["run_b"]["error"]["code"] != 0
            assert {run: {x["name"] for x in doc.get("deleted", ())} for run, doc in docs.items()
                    if run != "run_b"} == gone
        else:
            assert result.exit_code != 0
            assert sorted(result.stdout.split()) == sorted(n for names in gone.values() for n in names)
