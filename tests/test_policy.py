"""Retention policies (issue 26, items 1-3): `prune --policy FILE` and `policy check FILE` over a
tree of real run directories (a TF1 Saver run with two families, a TF2 CheckpointManager run, Keras
ModelCheckpoint files, HF Trainer steps), on disk and on moto's S3 server. What must go is computed
here from the policy's rules and the members' names, never from ckpttool's plan; TensorFlow and
Keras then load every run's latest and best."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.remote_servers import upload_tree
from tests.test_prune_repair import assert_tf_restores_latest
from tests.test_remote import fresh_prefix, servers  # noqa: F401 - the servers, as a fixture here
from tests.test_series import _hf_step
from tests.test_series_commands import _download_tree, _keras_model, _keys

KERAS_TEMPLATE = "w.{epoch:02d}-{val_loss:.2f}.weights.h5"
# Each rule as the test reads it: (globs below the tree, keep_last, keep_every_steps, keep_best by val_loss).
RULES = [(["exp-a/runs/tf1"], 2, 300, None),
         (["exp-*/runs/tf*"], 2, None, None),
         (["exp-b/keras"], 1, None, 1),
         (["exp-b/*"], 1, None, None)]


def _policy_text(base: str) -> str:
    """The policy of RULES, with globs under `base` (a directory or a bucket URL)."""
    text = []
    for globs, keep_last, every, best in RULES:
        text += ["[[rule]]", f"paths = {json.dumps([f'{base}/{g}' for g in globs])}", f"keep_last = {keep_last}"]
        text += [f"keep_every_steps = {every}"] if every else []
        text += [f'keep_best = {{ n = {best}, metric = "val_loss", name_pattern = "{KERAS_TEMPLATE}" }}'] if best else []
        text.append("")
    return "\n".join(text)


def _fleet(root: Path, fixtures_dir: Path, series_dir: Path) -> dict[str, int]:
    """The tree: run directory (relative) -> the rule (index into RULES) that must govern it, or None."""
    shutil.copytree(fixtures_dir / "prune_run", root / "exp-a" / "runs" / "tf1")
    for name in ("tf2", "tf3", "old"):  # tf3: held locked during the prune; old: matched by no glob
        shutil.copytree(fixtures_dir / "tf2_many", root / "exp-a" / "runs" / name)
    shutil.copytree(series_dir / "keras" / "ckpt", root / "exp-b" / "keras")
    (root / "exp-b" / "hf" / "out").mkdir(parents=True)
    for step in (10, 20, 30, 40):
        _hf_step(root / "exp-b" / "hf" / "out", step)
    return {"exp-a/runs/tf1": 0, "exp-a/runs/tf2": 1, "exp-a/runs/tf3": 1, "exp-a/runs/old": None,
            "exp-b/keras": 2, "exp-b/hf/out": 3}


_MEMBER = [re.compile(r"^(?P<family>model\.ckpt|best\.ckpt|ckpt)-(?P<step>\d+)\.index$"),
           re.compile(r"^(?P<family>w)\.(?P<step>\d+)-(?P<score>[\d.]+)\.weights\.h5$"),
           re.compile(r"^(?P<family>checkpoint)-(?P<step>\d+)$")]


def _members(names) -> dict[str, tuple[str, int, float | None]]:
    """Checkpoint name -> (family, step, val_loss from its name), from the names in a run directory."""
    found = {}
    for name in names:
        for pattern in _MEMBER:
            if m := pattern.match(name):
                score = float(m["score"]) if m.groupdict().get("score") else None
                found[name.removesuffix(".index")] = (m["family"], int(m["step"]), score)
    return found


def _kept_by(rule: tuple, members: dict) -> set[str]:
    """What the rule keeps, computed from its definition: the newest keep_last of each family, steps
    divisible by keep_every_steps, the keep_best lowest val_loss (ties: the older)."""
    _globs, keep_last, every, best = rule
    kept = set()
    for family in {f for f, _s, _v in members.values()}:
        own = sorted((step, name) for name, (f, step, _v) in members.items() if f == family)
        kept |= {name for _step, name in own[-keep_last:]}
        kept |= {name for step, name in own if every and step % every == 0}
        ranked = sorted((score, step, name) for name, (f, step, score) in members.items() if f == family)
        kept |= {name for _score, _step, name in ranked[:best or 0]}
    return kept


def _names_at(location: str, run: str, server=None) -> list[str]:
    if server is None:
        return os.listdir(os.path.join(location, run))
    return sorted({key.split("/")[0] for key in _keys(server, f"{location}/{run}")})


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_policy_prunes_each_run_by_its_rule(where, fixtures_dir, series_dir, tmp_path, request, tf):
    from ckpttool.ops.runs.lock import directory_lock

    local = tmp_path / "fleet"
    governing = _fleet(local, fixtures_dir, series_dir)
    server = request.getfixturevalue("servers")["s3"] if where == "s3" else None
    base = upload_tree(server, str(local), fresh_prefix("policy")) if server else str(local)
    before = {run: _members(_names_at(base, run, server)) for run in governing}
    policy = tmp_path / "retention.toml"
    policy.write_text(_policy_text(base))

    check = run_cli("policy", "check", "--json", policy)
    assert check.exit_code == 0, check.stderr
    assert {d["directory"]: d["rule"]["index"] - 1 for d in check.json()["directories"]} == {
        f"{base}/{run}": rule for run, rule in governing.items() if rule is not None}
    assert check.json()["ungoverned"] == [f"{base}/exp-a/runs/old"]

    dry = run_cli("prune", "--policy", policy, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    with directory_lock(f"{base}/exp-a/runs/tf3"):  # another ckpttool run is at work there
        result = run_cli("prune", "--policy", policy, "--yes", "--json")
    assert_one_line_error(result, 3)
    doc = result.json()
    assert "not pruned: 1 run directory of 5" in result.stderr
    failed = [d for d in doc["directories"] if "error" in d]
    assert [(d["directory"], d["error"]["kind"]) for d in failed] == [(f"{base}/exp-a/runs/tf3", "refused")]
    assert doc["failed_count"] == 1
    planned = {d["directory"]: sorted(x["name"] for x in d["deleted"]) for d in dry.json()["directories"]}
    for run, rule in governing.items():
        members = before[run]
        expected = set(members) if rule is None or run.endswith("tf3") else _kept_by(RULES[rule], members)
        assert set(_members(_names_at(base, run, server))) == expected, run
        if rule is not None:
            assert planned[f"{base}/{run}"] == sorted(set(members) - _kept_by(RULES[rule], members)), run
    assert sum(d.get("freed_bytes", 0) for d in doc["directories"]) == doc["freed_bytes"] > 0

    if server:
        _download_tree(server, base, tmp_path / "after")
        local = tmp_path / "after"
    else:
        assert not any(name.startswith(".ckpttool") for _d, _s, files in os.walk(local) for name in files)
    assert_tf_restores_latest(tf, local / "exp-a" / "runs" / "tf1", "model.ckpt-1000")
    tf.train.load_checkpoint(str(local / "exp-a" / "runs" / "tf1" / "best.ckpt-700"))
    for run in ("tf2", "tf3", "old"):
        assert_tf_restores_latest(tf, local / "exp-a" / "runs" / run, "ckpt-6")
    keras_left = _members(os.listdir(local / "exp-b" / "keras"))
    best = min(keras_left, key=lambda name: (keras_left[name][2], keras_left[name][1]))
    for name in {best, max(keras_left, key=lambda name: keras_left[name][1])}:
        _keras_model().load_weights(str(local / "exp-b" / "keras" / name))
    assert sorted(os.listdir(local / "exp-b" / "hf" / "out")) == ["checkpoint-40"]


def _write(tmp_path: Path, text: str) -> Path:
    policy = tmp_path / "p.toml"
    policy.write_text(text)
    return policy


BAD = [  # (policy text, line, key) that the error must name
    ('[[rule]]\npaths = ["run"]\nkeep_lst = 3\n', 3, "keep_lst"),
    ('[[rule]]\npaths = ["run"]\nkeep_last = 1\n\n[[rule]]\npaths = ["run"]\nkeep_every_steps = 0\n', 7,
     "keep_every_steps"),
    ('[[rule]]\npaths = ["run"]\nkeep_last = 1\nclean = "yes"\n', 4, "clean"),
    ('[[rule]]\npaths = ["run"]\nkeep_best = { n = 2, metric = "loss", mode = "up" }\n', 3, "keep_best.mode"),
    ('[[rule]]\npaths = ["run"]\n[rule.keep_best]\nmetric = "loss"\nn = 0\n', 5, "keep_best.n"),
    ('[[rule]]\npaths = ["run"]\nkeep_last = 1\n\n[[rule]]\npaths = [\n  "run",\n  "nothing-*",\n]\n'
     'keep_last = 2\n', 6, "paths"),
    ('[[rule]]\nnote = """\n[[rule]]\nkeep_lst = 1\n"""\npaths = ["run"]\nkeep_last = 1\n', 2, "note"),
]


@pytest.mark.parametrize("text,line,key", BAD)
def test_bad_policy_files_name_file_line_and_key(copy_fixture, tmp_path, text, line, key):
    copy_fixture("prune_run").rename(tmp_path / "run")
    policy = _write(tmp_path, text)
    before = sorted(os.listdir(tmp_path / "run"))
    for args in (["policy", "check", policy], ["prune", "--policy", policy, "--yes"]):
        result = run_cli(*args)
        assert_one_line_error(result, 2)
        assert f"error: {policy}:{line}: " in result.stderr and f" {key}: " in result.stderr, result.stderr
    assert sorted(os.listdir(tmp_path / "run")) == before


def test_policy_is_not_given_with_a_directory_or_rules(copy_fixture, tmp_path):
    run = copy_fixture("prune_run")
    policy = _write(tmp_path, f'[[rule]]\npaths = ["{run}"]\nkeep_last = 1\n')
    for extra in ([str(run)], ["--keep-last", "2"], ["--metric", "loss"], ["-r"]):
        result = run_cli("prune", "--policy", policy, "--yes", "--json", *extra)
        assert_one_line_error(result, 2)
        assert result.json()["error"]["kind"] == "usage_error" and "--policy" in result.stderr
    assert len([n for n in os.listdir(run) if n.endswith(".index")]) == 12


def test_a_metric_that_cannot_be_read_fails_its_run_only(copy_fixture, tmp_path):
    """A rule whose metric file a run lacks: that run is reported, nothing of it deleted; the
    other run governed by the same rule is pruned (relative `metrics` are each run's own file)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("a", "b"):
        copy_fixture("prune_run").rename(runs / name)
    (runs / "a" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": step, "loss": 1000 - step}) + "\n" for step in range(100, 1001, 100)))
    policy = _write(tmp_path, '[[rule]]\npaths = ["runs/*"]\nkeep_last = 1\n'
                              'keep_best = { n = 2, metric = "loss", metrics = "metrics.jsonl" }\n')
    before = set(os.listdir(runs / "a"))
    quiet = run_cli("prune", "--policy", policy, "--yes", "-q")
    assert quiet.exit_code == 3, quiet.stderr  # -q still says that a run failed: a line of its own, the status
    assert len([line for line in quiet.stderr.splitlines() if line.startswith("warning:") and str(runs / "b") in line]) == 1
    gone = {n.rsplit(".", 1)[0] for n in before - set(os.listdir(runs / "a"))}
    assert gone and sorted(quiet.stdout.split()) == sorted(gone)  # the bare names of what went, from a alone
    result = run_cli("prune", "--policy", policy, "--yes", "--json")
    assert_one_line_error(result, 3)
    assert {d["directory"]: "error" in d for d in result.json()["directories"]} == {
        str(runs / "a"): False, str(runs / "b"): True}
    assert sorted(n[:-6] for n in os.listdir(runs / "a") if n.startswith("model") and n.endswith(".index")) == [
        "model.ckpt-1000", "model.ckpt-900"]  # the newest, which is also the best two (loss falls)
    assert len([n for n in os.listdir(runs / "b") if n.endswith(".index")]) == 12


def test_a_glob_never_follows_a_symlink(copy_fixture, tmp_path):
    """A link among the matches (to a run elsewhere) is reported, governed by no rule, never pruned."""
    elsewhere = copy_fixture("tf2_many")
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(elsewhere, runs / "real")
    (runs / "linked").symlink_to(elsewhere, target_is_directory=True)
    policy = _write(tmp_path, '[[rule]]\npaths = ["runs/*"]\nkeep_last = 1\n')
    check = run_cli("policy", "check", "--json", policy).json()
    assert [d["directory"] for d in check["directories"]] == [str(runs / "real")]
    assert [(p["kind"], p["path"]) for p in check["problems"]] == [("link", str(runs / "linked"))]
    result = run_cli("prune", "--policy", policy, "--yes")
    assert result.exit_code == 0 and "symlink: not followed" in result.stderr, result.stderr
    assert sorted(n for n in os.listdir(runs / "real") if n.endswith(".index")) == ["ckpt-6.index"]
    assert len([n for n in os.listdir(elsewhere) if n.endswith(".index")]) == 6


def test_a_run_reached_under_two_names_is_governed_by_the_first_rule_only(copy_fixture, tmp_path, tf):
    """A policy naming a link itself follows it; a run directory so reached under two names (a link
    to it, and a link to its parent) is pruned once, by the first rule reaching it: never also by a
    later, stricter rule under its other name (nor the two plans racing for its lock)."""
    real = tmp_path / "real"
    real.mkdir()
    copy_fixture("tf2_many").rename(real / "run")
    saves = [os.path.basename(p) for p in tf.train.get_checkpoint_state(str(real / "run")).all_model_checkpoint_paths]
    links = tmp_path / "links"
    links.mkdir()
    (links / "run").symlink_to(real / "run", target_is_directory=True)
    (links / "all").symlink_to(real, target_is_directory=True)
    policy = _write(tmp_path, '[[rule]]\npaths = ["links/run"]\nkeep_last = 5\n\n'
                              '[[rule]]\npaths = ["links/all/*"]\nkeep_last = 1\n')
    check = run_cli("policy", "check", "--json", policy).json()
    assert [(d["directory"], d["rule"]["index"]) for d in check["directories"]] == [(str(links / "run"), 1)]
    assert [(p["kind"], p["path"]) for p in check["problems"]] == [("alias", str(links / "all" / "run"))]
    result = run_cli("prune", "--policy", policy, "--yes")
    assert result.exit_code == 0 and "under another name" in result.stderr, result.stderr
    assert sorted(n[:-6] for n in os.listdir(real / "run") if n.endswith(".index")) == sorted(saves[-5:])
    assert_tf_restores_latest(tf, real / "run", saves[-1])


def test_a_bucket_run_named_by_two_protocols_is_governed_once(servers, copy_fixture, tmp_path, tf):  # noqa: F811
    """s3a:// is s3:// (fsspec's alias): a rule naming a run by one and a later, stricter rule's glob
    by the other govern it once, by the first rule; what is left is what TF's state file says
    keep_last 5 leaves."""
    server = servers["s3"]
    local = tmp_path / "up" / "run"
    local.parent.mkdir()
    copy_fixture("tf2_many").rename(local)
    saves = [os.path.basename(p) for p in tf.train.get_checkpoint_state(str(local)).all_model_checkpoint_paths]
    url = upload_tree(server, str(tmp_path / "up"), fresh_prefix("alias"))
    policy = _write(tmp_path, f'[[rule]]\npaths = ["{url}/run"]\nkeep_last = 5\n\n'
                              f'[[rule]]\npaths = ["{url.replace("s3://", "s3a://")}/*"]\nkeep_last = 1\n')
    result = run_cli("prune", "--policy", policy, "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    assert [(d["directory"], d["rule"]["index"]) for d in result.json()["directories"]] == [(f"{url}/run", 1)]
    assert "under another name" in result.stderr
    left = sorted(k[len("run/"):-len(".index")] for k in _keys(server, url) if k.endswith(".index"))
    assert left == sorted(saves[-5:])


def test_policy_check_counts_a_run_governed_under_another_protocol_as_governed(servers, copy_fixture,  # noqa: F811
                                                                            tmp_path):
    """Two runs, the first governed as s3://, the second as s3a://: the survey of their prefix under
    each name finds neither ungoverned (each is the other name of a governed run)."""
    server = servers["s3"]
    up = tmp_path / "up"
    up.mkdir()
    for run in ("run-a", "run-b", "run-c"):
        copy_fixture("tf2_many").rename(up / run)
    url = upload_tree(server, str(up), fresh_prefix("alias-check"))
    alias = url.replace("s3://", "s3a://")
    policy = _write(tmp_path, f'[[rule]]\npaths = ["{url}/run-a"]\nkeep_last = 5\n\n'
                              f'[[rule]]\npaths = ["{alias}/run-b"]\nkeep_last = 5\n')
    check = run_cli("policy", "check", "--json", policy)
    assert check.exit_code == 0, check.stderr
    assert sorted(check.json()["ungoverned"]) == sorted([f"{url}/run-c", f"{alias}/run-c"])


def test_a_run_failing_otherwise_does_not_hide_the_others(fixtures_dir, series_dir, tmp_path, monkeypatch, tf):
    """A run directory whose apply fails with no checkpoint or storage error (here out of memory
    while taking its lock) is not pruned; the others are, their deletions are reported (JSON), and
    the failure's own error and exit status come after them."""
    from ckpttool.ops.retention import batches, prune

    def failing(original):
        def wrapped(directory, *args, **kwargs):
            if directory.endswith("/exp-a/runs/tf3"):
                raise MemoryError()
            return original(directory, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(batches, "locked_as_planned", failing(batches.locked_as_planned))
    monkeypatch.setattr(prune, "locked_as_planned", failing(prune.locked_as_planned))
    local = tmp_path / "fleet"
    governing = _fleet(local, fixtures_dir, series_dir)
    before = {run: _members(os.listdir(local / run)) for run in governing}
    policy = tmp_path / "retention.toml"
    policy.write_text(_policy_text(str(local)))
    result = run_cli("prune", "--policy", policy, "--yes", "--json")
    docs = {d["directory"]: d for d in result.json()["directories"]}
    failed = docs[f"{local}/exp-a/runs/tf3"]
    assert result.exit_code == failed["error"]["code"] != 0 and "Traceback" not in result.stderr
    assert f"not pruned: {local}/exp-a/runs/tf3" in result.stderr
    for run, rule in governing.items():
        members = before[run]
        kept = set(members) if rule is None or run.endswith("tf3") else _kept_by(RULES[rule], members)
        assert set(_members(os.listdir(local / run))) == kept, run
        if rule is not None and not run.endswith("tf3"):
            assert sorted(x["name"] for x in docs[f"{local}/{run}"]["deleted"]) == sorted(set(members) - kept), run
    for run in ("tf2", "tf3"):
        assert_tf_restores_latest(tf, local / "exp-a" / "runs" / run, "ckpt-6")
