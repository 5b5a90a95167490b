"""`latest` without a state file looks at the highest steps alone (ops/runs/scan.py
newest_complete_prefix): it must answer what the full scan answers, and pass over a highest
checkpoint whose bytes say it is not complete, as the scan does. Checkpoints are TensorFlow's
(the session fixtures), damaged here; the expected answer is always the full scan's (the slow
path), never a name written into the test."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from tests.conftest import run_cli

# The files of one checkpoint of each kind, as TensorFlow wrote them: (fixture, prefix, suffixes).
KINDS = {
    "v2": ("tf2_manager", "ckpt-3", [".index", ".data-00000-of-00001"]),
    "v2_two_shards": ("sharded", "model.ckpt-1", [".index", ".data-00000-of-00002", ".data-00001-of-00002"]),
    "v1": ("v1_format", "model.ckpt-3", [""]),
    "v1_sharded": ("v1_layouts/sharded", "model.ckpt-2", ["-00000-of-00003", "-00001-of-00003", "-00002-of-00003"]),
}
DAMAGE = ["none", "none", "index_cut", "index_missing", "shard_missing", "shard_cut", "meta_only", "stray_shard"]


def _write(fixtures_dir, directory: str, prefix: str, kind: str, damage: str, mtime: float) -> None:
    fixture, source, suffixes = KINDS[kind]
    written = []
    for suffix in suffixes:
        target = os.path.join(directory, prefix + suffix)
        shutil.copyfile(os.path.join(fixtures_dir, fixture, source + suffix), target)
        written.append(target)
    index = written[0]  # the .index, the V1 file or the V1 pattern's first shard
    if damage == "index_cut":
        os.truncate(index, os.path.getsize(index) - 7)  # the footer's magic is gone
    elif damage == "index_missing" and len(written) > 1:
        os.unlink(index)
    elif damage == "shard_missing" and len(written) > 1:
        os.unlink(written[-1])
    elif damage == "shard_cut" and len(written) > 1:
        os.truncate(written[-1], os.path.getsize(written[-1]) // 2)
    elif damage == "meta_only":
        for path in written:
            os.unlink(path)
    elif damage == "stray_shard" and kind == "v2":
        shutil.copyfile(written[-1], os.path.join(directory, prefix + ".data-00000-of-00002"))
    if damage != "index_missing" or kind.startswith("v1"):
        with open(os.path.join(directory, prefix + ".meta"), "wb") as meta:
            meta.write(b"\x0a\x00")
    for name in os.listdir(directory):
        if name.startswith(prefix):
            os.utime(os.path.join(directory, name), (mtime, mtime))


def _answers(directory: str, complete: bool):
    from ckpttool.ops.runs.latest import find_latest
    from ckpttool.ops.runs.scan import scan_directory

    fast = find_latest(directory, complete=complete)
    slow = find_latest(directory, scan_directory(directory), complete=complete)
    return fast, slow


def _answers_both_ways(directory: str, complete: bool):
    """The walk's answer by the names of the highest steps (as many as it looks at that way) and
    by one grouping of every name (where it goes after that many), with the full scan's."""
    from unittest import mock

    from ckpttool.ops.runs import scan

    fast, slow = _answers(directory, complete)
    with mock.patch.object(scan, "_LEVELS_LOOKED_AT", 1):
        grouped, _slow = _answers(directory, complete)
    # The files of a step's prefixes found by a pass over the names, not searched for one by one.
    with mock.patch.object(scan, "_PREFIXES_SEARCHED", 0):
        passed, _slow = _answers(directory, complete)
    assert passed == fast
    return fast, grouped, slow


@pytest.mark.parametrize("damage", ["index_cut", "index_missing", "shard_missing", "index_link"])
def test_a_damaged_highest_checkpoint_is_passed_over(copy_fixture, tf, monkeypatch, damage):
    run = copy_fixture("tf2_manager")
    os.unlink(run / "checkpoint")
    highest = run / "ckpt-3"
    if damage == "index_cut":
        os.truncate(f"{highest}.index", os.path.getsize(f"{highest}.index") - 7)
        with pytest.raises(Exception):
            tf.train.load_checkpoint(str(highest))  # TensorFlow cannot read it either
    elif damage == "index_missing":
        os.unlink(f"{highest}.index")
    elif damage == "shard_missing":
        os.unlink(f"{highest}.data-00000-of-00001")
    else:  # an index that is a link: never a checkpoint file, not even to the real index
        os.rename(f"{highest}.index", run / "elsewhere")
        os.symlink(run / "elsewhere", f"{highest}.index")
    from ckpttool.ops.runs import latest

    slow = latest.find_latest(str(run), latest.scan_directory(str(run)))
    # The answer comes from the walk: the full scan is not run.
    monkeypatch.setattr(latest, "scan_directory", lambda *a, **k: pytest.fail("scanned every checkpoint"))
    fast = latest.find_latest(str(run))
    assert fast == slow
    assert fast.prefix == str(run / "ckpt-2") and fast.source == "scan"
    assert tf.train.load_checkpoint(fast.prefix).get_variable_to_shape_map()
    result = run_cli("latest", "--json", run)
    assert result.exit_code == 0 and result.json()["latest"] == str(run / "ckpt-2")


def test_the_highest_step_answers_not_the_newest_file(copy_fixture):
    """Without a state file, newest means the highest step (then the newest files): a lower step
    whose files were touched later is not the answer, in latest, ls and prune alike."""
    run = copy_fixture("tf2_manager")
    os.unlink(run / "checkpoint")
    later = os.path.getmtime(run / "ckpt-3.index") + 3600
    for name in os.listdir(run):
        if name.startswith("ckpt-2."):
            os.utime(run / name, (later, later))
    fast, slow = _answers(str(run), complete=False)
    assert fast == slow and fast.prefix == str(run / "ckpt-3")
    assert run_cli("ls", "--json", run).json()["latest"] == "ckpt-3"


# Steps as TensorFlow writes them, and as split_step also reads them: with leading zeros, in other
# decimal digits (str.isdecimal's); families with digits and dashes of their own.
MEMBER = st.tuples(st.sampled_from(["ckpt", "model.ckpt", "best", "7", "run-2.ckpt"]),
                   st.one_of(st.none(), st.integers(0, 6)), st.sampled_from(sorted(KINDS)), st.sampled_from(DAMAGE),
                   st.integers(0, 5), st.sampled_from(["plain", "plain", "zeros", "arabic"]))
_DIGITS = {"plain": str, "zeros": lambda step: f"{step:03d}",
           "arabic": lambda step: str(step).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))}


@settings(derandomize=True, max_examples=60, deadline=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(members=st.lists(MEMBER, min_size=1, max_size=6), extras=st.sets(st.sampled_from(
    ["notes.txt", "ckpt-9.tempstate3", "train", "checkpoint-7", "ckpt-8.data-00000-of-00001"])))
def test_the_walk_answers_what_the_full_scan_answers(fixtures_dir, members, extras):
    with tempfile.TemporaryDirectory() as directory:
        for family, step, kind, damage, age, digits in members:
            prefix = family if step is None else f"{family}-{_DIGITS[digits](step)}"
            if any(name == prefix or name.startswith(prefix + ".") or name.startswith(prefix + "-0")
                   for name in os.listdir(directory)):
                continue  # one checkpoint per prefix
            _write(fixtures_dir, directory, prefix, kind, damage, 1.7e9 + 100 * age)
        for extra in extras:
            path = os.path.join(directory, extra)
            if extra in ("train", "checkpoint-7"):
                os.makedirs(path, exist_ok=True)
            else:
                with open(path, "wb") as handle:
                    handle.write(b"not a checkpoint, " * 4)
        for complete in (False, True):
            fast, grouped, slow = _answers_both_ways(directory, complete)
            assert fast == slow and grouped == slow


NAME = st.one_of(
    st.builds(lambda stem, step, suffix: f"{stem}-{step}{suffix}", st.sampled_from(["ckpt", "m.ckpt", "7", "a-b", ""]),
              st.sampled_from(["3", "03", "003", "30", "0", "00", "٣", "x3", ""]),
              st.sampled_from([".index", ".meta", ".data-00000-of-00001", ".data-00001-of-00002", ".index.index",
                               "", "-00000-of-00002"])),
    st.text(alphabet="ck-.0123٣index\0", max_size=12).map(lambda text: text.replace("\0", "")))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(names=st.lists(NAME, unique=True, max_size=12), picked=st.lists(st.integers(0, 11), max_size=3))
def test_the_joined_names_answer_as_each_name_does(names, picked):
    """The walk's questions about the names, answered by searching them joined (scan._Names), give
    what asking each name gives (split_step's steps, str.startswith)."""
    from unittest import mock

    from ckpttool.formats.tf.shards import data_shard, split_step
    from ckpttool.ops.runs import scan

    joined = scan._Names(names)
    steps = joined.index_steps(2)
    stems = [name[:-6] for name in names if name.endswith(".index")]
    by_name = [-1 if split_step(stem)[1] is None else split_step(stem)[1] for stem in stems]
    assert steps.levels == sorted(set(by_name), reverse=True)[:3]
    for level in set(by_name) | {0, 3, 30}:
        assert steps.stems_at(level) == [stem for stem, step in zip(stems, by_name) if step == level]
    others = [(n, "file") for n in names if (not n.endswith((".index", ".meta", ".data-00000-of-00001"))
                                            or n == ".data-00000-of-00001") and data_shard(n) is None]
    assert joined.others() == others
    prefixes = [stems[i] for i in picked if i < len(stems)]
    for searched in (16, 0):
        with mock.patch.object(scan, "_PREFIXES_SEARCHED", searched):
            assert joined.starting_with(prefixes) == (
                [n for n in names if n.startswith(tuple(prefixes))] if prefixes else [])
