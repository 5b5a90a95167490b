"""The Python API, used directly (not through the CLI), with TensorFlow as the oracle."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

import ckpttool
from ckpttool.errors import CkptError, Refused, UnknownVariable, UsageProblem
from tests.conftest import ROOT


def test_open_lists_lazily_and_reads_like_tensorflow(fixtures_dir, tf):
    prefix = fixtures_dir / "partitioned" / "model.ckpt-5"
    reader = tf.train.load_checkpoint(str(prefix))
    with ckpttool.open(fixtures_dir / "partitioned") as ckpt:  # a run directory: its latest checkpoint
        assert ckpt.path == str(prefix) and ckpt.format == "v2"
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
        assert {v.name: list(v.shape) for v in ckpt.variables} == shapes
        assert {v.name: v.dtype for v in ckpt.variables} == {n: d.name for n, d in dtypes.items()}
        assert len(ckpt) == len(shapes) and "scope/part" in ckpt and sorted(ckpt) == sorted(shapes)
        assert next(v for v in ckpt.variables if v.name == "scope/part").partitioned
        for name in ckpt:
            np.testing.assert_array_equal(ckpt[name], reader.get_tensor(name))
        with pytest.raises(UnknownVariable):
            ckpt.read("nope")


def test_raw_reads_give_stored_bits(fixtures_dir, tf):
    reader = tf.train.load_checkpoint(str(fixtures_dir / "every_dtype" / "dtypes"))
    with ckpttool.open(fixtures_dir / "every_dtype" / "dtypes") as ckpt:
        decoded = ckpt.read("bfloat16")
        assert decoded.dtype == np.float32
        np.testing.assert_array_equal(decoded, reader.get_tensor("bfloat16").astype(np.float32))
        raw = ckpt.read("bfloat16", raw=True)
        assert raw.dtype == np.uint16 and raw.tobytes() == reader.get_tensor("bfloat16").tobytes()
        assert ckpt.read("int4", raw=True).tobytes() == reader.get_tensor("int4").tobytes()


def test_load_latest_and_errors(fixtures_dir, tf):
    run = fixtures_dir / "saver_run"
    assert ckpttool.latest(run) == tf.train.latest_checkpoint(str(run))
    weights = ckpttool.load(run)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run)))
    assert set(weights) == set(reader.get_variable_to_shape_map())
    for name, value in weights.items():
        np.testing.assert_array_equal(value, reader.get_tensor(name))
    assert set(ckpttool.load(run, ["embedding"])) == {"embedding"}
    with pytest.raises(CkptError):
        ckpttool.open(fixtures_dir / "no-such-thing")


def test_prune_plan_then_apply(fixtures_dir, tmp_path, tf):
    run = tmp_path / "run"
    shutil.copytree(fixtures_dir / "prune_run", run)
    plan = ckpttool.plan_prune(run, keep_last=2)
    assert len(plan.deleted) == 8 and all((run / f"{d.name}.index").exists() for d in plan.deleted)
    result = ckpttool.apply_prune(plan)
    assert {d.name for d in result.deleted} == {d.name for d in plan.deleted}
    state = tf.train.get_checkpoint_state(str(run))
    assert [p.rsplit("/", 1)[-1] for p in state.all_model_checkpoint_paths] == ["model.ckpt-900", "model.ckpt-1000"]
    assert ckpttool.latest(run) == tf.train.latest_checkpoint(str(run))
    with pytest.raises(CkptError):
        ckpttool.plan_prune(run)  # no rule


@pytest.mark.parametrize("timeout", [float("nan"), -1.0])
def test_a_lock_timeout_no_clock_passes_is_refused(fixtures_dir, tmp_path, tf, timeout):
    """apply_prunes with a NaN (or negative) lock timeout: refused for each run directory, nothing
    deleted (a NaN deadline is never passed: the wait for a held lock would never end)."""
    from ckpttool.ops.runs.lock import directory_lock

    run = tmp_path / "run"
    shutil.copytree(fixtures_dir / "prune_run", run)
    before = sorted(p.name for p in run.iterdir())
    plan = ckpttool.plan_prune(run, keep_last=2)
    with directory_lock(str(run)):  # held: a wait that never ends would hang here
        (result,) = ckpttool.apply_prunes([plan], lock_timeout=timeout)
    assert isinstance(result, UsageProblem) and "lock timeout" in str(result)
    assert sorted(p.name for p in run.iterdir()) == before
    assert tf.train.latest_checkpoint(str(run)).endswith("model.ckpt-1000")


def test_convert_from_python(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    dry = ckpttool.convert(src, tmp_path / "w.safetensors", dry_run=True, map={"embedding": "emb"})
    assert dry.files == () and not (tmp_path / "w.safetensors").exists()
    assert ("embedding", "emb") in dry.plan.renamed
    result = ckpttool.convert(src, tmp_path / "w.safetensors", map={"embedding": "emb"}, regex=[("^dense/", "fc.")],
                              shard_size="1KB")
    assert result.files and result.bytes_written > 0
    loaded = ckpttool.load(result.files[-1])
    reader = tf.train.load_checkpoint(str(src))
    np.testing.assert_array_equal(loaded["emb"], reader.get_tensor("embedding"))
    np.testing.assert_array_equal(loaded["fc.kernel"], reader.get_tensor("dense/kernel"))
    with pytest.raises(Refused):
        ckpttool.convert(src, tmp_path / "w.safetensors")


def test_import_is_lazy_and_typed():
    probe = ("import sys, ckpttool; assert 'numpy' not in sys.modules and 'ckpttool.api' not in sys.modules; "
             "ckpttool.open; assert 'ckpttool.api' in sys.modules and 'numpy' not in sys.modules; "
             "assert set(ckpttool.__all__) <= set(dir(ckpttool)); print('ok')")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "ok", proc.stderr
    assert (ROOT / "ckpttool" / "py.typed").exists()
    with pytest.raises(AttributeError):
        ckpttool.no_such_function  # noqa: B018


# -- partial reads --------------------------------------------------------------------------------

@pytest.fixture
def data_bytes_read(monkeypatch):
    """Bytes read from data shards through the storage seam (pread and ranged reads)."""
    from ckpttool.storage import fs

    counted = {"bytes": 0}
    read_at, iter_range = fs.LocalInput.read_at, fs.LocalInput.iter_range

    def counting_read_at(self, offset, length):
        data = read_at(self, offset, length)
        if ".data-" in self.path:
            counted["bytes"] += len(data)
        return data

    def counting_iter_range(self, offset, length, chunk=None):
        for data in iter_range(self, offset, length, chunk):
            if ".data-" in self.path:
                counted["bytes"] += len(data)
            yield data

    monkeypatch.setattr(fs.LocalInput, "read_at", counting_read_at)
    monkeypatch.setattr(fs.LocalInput, "iter_range", counting_iter_range)
    return counted


def test_partial_read_reads_only_the_rows_asked_for(tmp_path, tf, data_bytes_read):
    rows, cols = 20_000, 64  # 5 MiB of float32: reading it all would show
    rng = np.random.default_rng(3)
    checkpoint = tf.train.Checkpoint(big=tf.Variable(rng.standard_normal((rows, cols)).astype(np.float32)),
                                     ints=tf.Variable(np.arange(300 * 7, dtype=np.int64).reshape(300, 7)))
    prefix = checkpoint.save(str(tmp_path / "ckpt"))
    reader = tf.train.load_checkpoint(prefix)
    big = "big/.ATTRIBUTES/VARIABLE_VALUE"
    with ckpttool.open(prefix) as ckpt:
        data_bytes_read["bytes"] = 0
        got = ckpt.read(big, index=np.s_[0:10])
        assert data_bytes_read["bytes"] == 10 * cols * 4
        np.testing.assert_array_equal(got, reader.get_tensor(big)[0:10])
        for index in (np.s_[5], np.s_[-3:], np.s_[::2500, 7], np.s_[10:0:-3], np.s_[19_990:, ::-5], np.s_[7, 1:3],
                      np.s_[100:100], np.s_[(-1,)]):
            data_bytes_read["bytes"] = 0
            got = ckpt.read(big, index=index)
            want = reader.get_tensor(big)[index]
            assert got.shape == want.shape, index
            np.testing.assert_array_equal(got, want)
            first = index[0] if isinstance(index, tuple) else index
            selected = len(range(*first.indices(rows))) if isinstance(first, slice) else 1
            assert data_bytes_read["bytes"] == selected * cols * 4, index
        for index in (np.s_[..., 3], np.s_[[1, 5, 2]], np.s_[None, 2]):  # other forms: the whole, then indexed
            np.testing.assert_array_equal(ckpt.read(big, index=index), reader.get_tensor(big)[index])
        ints = "ints/.ATTRIBUTES/VARIABLE_VALUE"
        np.testing.assert_array_equal(ckpt.read(ints, index=np.s_[299, 2:]), reader.get_tensor(ints)[299, 2:])
        with pytest.raises(IndexError):
            ckpt.read(big, index=np.s_[rows])


def test_partial_reads_of_other_dtypes_and_layouts(fixtures_dir, tf):
    """bfloat16 decoded (or raw bits), a partitioned variable (read whole, then indexed)."""
    prefix = fixtures_dir / "every_dtype" / "dtypes"
    reader = tf.train.load_checkpoint(str(prefix))
    with ckpttool.open(prefix) as ckpt:
        want = reader.get_tensor("bfloat16")
        index = np.s_[1:] if want.ndim else ()
        np.testing.assert_array_equal(ckpt.read("bfloat16", index=index), want[index].astype(np.float32))
        assert ckpt.read("bfloat16", index=index, raw=True).tobytes() == want[index].tobytes()
    with ckpttool.open(fixtures_dir / "partitioned") as ckpt:
        whole = tf.train.load_checkpoint(ckpt.path).get_tensor("scope/part")
        np.testing.assert_array_equal(ckpt.read("scope/part", index=np.s_[1:3]), whole[1:3])


# -- verify, diff, scan and names -------------------------------------------------------------------

def test_verify_from_python(fixtures_dir, copy_fixture, tf):
    report = ckpttool.verify(fixtures_dir / "saver_run")
    prefix = tf.train.latest_checkpoint(str(fixtures_dir / "saver_run"))
    assert report.ok and report.checkpoint == prefix
    assert report.checked_tensors == len(tf.train.list_variables(prefix))
    run = copy_fixture("saver_run")
    data = run / "model.ckpt-50.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    damaged = ckpttool.verify(run)
    assert not damaged.ok and damaged.errors
    every = ckpttool.verify(run, all_checkpoints=True)
    assert [r.ok for r in every.checkpoints] == [True, True, False]


def test_diff_from_python(fixtures_dir, tf):
    run = fixtures_dir / "saver_run"
    a, b = run / "model.ckpt-30", run / "model.ckpt-50"
    ra, rb = tf.train.load_checkpoint(str(a)), tf.train.load_checkpoint(str(b))
    changed = {n for n, _ in tf.train.list_variables(str(a))
               if not np.array_equal(ra.get_tensor(n), rb.get_tensor(n))}
    report = ckpttool.diff(a, b)
    assert not report.identical and {d.name for d in report.differences} == changed
    assert ckpttool.diff(a, a).identical
    assert {d.name for d in ckpttool.diff(a, b, filter="^dense/").differences} == {n for n in changed
                                                                                   if n.startswith("dense/")}


def test_scan_from_python(fixtures_dir, tf):
    run = fixtures_dir / "saver_run"
    scan = ckpttool.scan(run)
    state = tf.train.get_checkpoint_state(str(run))
    assert [c.name for c in scan.checkpoints if c.in_state] == [p.rsplit("/", 1)[-1]
                                                                for p in state.all_model_checkpoint_paths]
    assert scan.latest.prefix == tf.train.latest_checkpoint(str(run))
    scans = ckpttool.scan(fixtures_dir, recursive=True)
    assert run.resolve().as_posix() in {str(s.directory) for s in scans}
    with pytest.raises(CkptError):
        ckpttool.scan(run / "model.ckpt-50.index")


def test_model_names_from_python(keras_checkpoints, tmp_path):
    import json

    root = keras_checkpoints / "models" / "functional"
    manifest = json.loads((root / "manifest.json").read_text())
    with np.load(root / "weights.npz") as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    with ckpttool.open(root / "run", naming="model") as ckpt:
        assert set(manifest["paths"]) <= set(ckpt.names())
        key = next(v.key for v in ckpt.variables if v.name == manifest["paths"][0])
        assert key.endswith("/.ATTRIBUTES/VARIABLE_VALUE") and key in ckpttool.open(root / "run")
        np.testing.assert_array_equal(ckpt[manifest["paths"][0]], weights[0])
        np.testing.assert_array_equal(ckpt.read(manifest["paths"][0], index=np.s_[1:]), weights[0][1:])
    loaded = ckpttool.load(root / "run", manifest["paths"], naming="model")
    for path, want in zip(manifest["paths"], weights):
        np.testing.assert_array_equal(loaded[path], want)
    result = ckpttool.convert(root / "run", tmp_path / "w.npz", naming="model", drop_optimizer=True,
                              drop=["^save_counter$"])
    assert sorted(ckpttool.load(result.files[0])) == sorted(manifest["paths"])
    only = "^(" + "|".join(manifest["paths"]) + ")$"
    assert ckpttool.diff(root / "run", root / "model_only", naming="model", filter=only).identical
    assert not ckpttool.diff(root / "run", root / "model_only", filter=only).compared


def test_average_from_python(fixtures_dir, tmp_path, tf):
    """ckpttool.average: the mean of the run's last three checkpoints, numpy's mean of what
    TensorFlow reads within the documented bound (floating variables), integers from the newest;
    dry_run writes nothing."""
    from tests.test_average import assert_mean

    run = fixtures_dir / "saver_run"
    names = [p.rsplit("/", 1)[-1] for p in tf.train.get_checkpoint_state(str(run)).all_model_checkpoint_paths]
    dry = ckpttool.average(run, tmp_path / "dry.npz", last=3, dry_run=True)
    assert [s.prefix.rsplit("/", 1)[-1] for s in dry.sources] == names[-3:] and not (tmp_path / "dry.npz").exists()
    plan = ckpttool.average(run, tmp_path / "avg.npz", last=3)
    readers = [tf.train.load_checkpoint(str(run / n)) for n in names[-3:]]
    with np.load(tmp_path / "avg.npz") as averaged:
        for name in plan.averaged:
            assert averaged[name].dtype == readers[0].get_tensor(name).dtype, name
            assert_mean(averaged[name], [r.get_tensor(name) for r in readers], name)
        for name in plan.taken:
            assert np.array_equal(averaged[name], readers[-1].get_tensor(name)), name
    with pytest.raises(Refused, match="overwrite=True"):
        ckpttool.average(run, tmp_path / "avg.npz", last=3)


def test_convert_layout_and_dtype_from_python(fixtures_dir, tmp_path, tf):
    from safetensors.numpy import load_file

    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    reader = tf.train.load_checkpoint(str(src))
    ckpttool.convert(src, tmp_path / "t.safetensors", dtype="float16", transpose={"^dense/kernel$": (1, 0)})
    out = load_file(str(tmp_path / "t.safetensors"))
    assert np.array_equal(out["dense/kernel"], reader.get_tensor("dense/kernel").T.astype(np.float16))
    assert out["counter"].dtype == reader.get_tensor("counter").dtype  # integers keep their dtype


def test_convert_names_layout_and_dtype_together_from_python(keras_checkpoints, tmp_path):
    """ckpttool.convert(names="model", layout="torch", dtype="float16"): a TF2 checkpoint of Dense ->
    BatchNormalization -> Dense named through the model, laid out and named as PyTorch's, cast to
    float16, in one call. torch is the oracle: a float16 torch Sequential(Linear, BatchNorm1d, Linear)
    takes the file with load_state_dict(strict=True) (its layer index is the Keras operation's,
    less the Input), and holds the Keras model's weights (weights.npz), transposed where PyTorch's
    layout says and rounded to float16 as numpy rounds. `names` and `naming` disagreeing is refused."""
    import torch  # the PyTorch oracle (in the test extra)
    from safetensors.torch import load_file

    from ckpttool.errors import UsageProblem

    root = keras_checkpoints / "models" / "functional"
    with np.load(root / "weights.npz") as saved:
        kernel, bias, gamma, beta, mean, var, kernel_1, bias_1 = (saved[f"arr_{i}"] for i in range(8))
    out = tmp_path / "torch.safetensors"
    ckpttool.convert(root / "run", out, names="model", layout="torch", dtype="float16", drop_optimizer=True,
                     drop=["^save_counter$"])
    tensors = load_file(str(out))
    prefix = "model._operations."  # a functional model: its operations, the Input first
    assert all(name.startswith(prefix) for name in tensors)
    state = {f"{int(name[len(prefix):].split('.')[0]) - 1}.{name.rsplit('.', 1)[1]}": value
             for name, value in tensors.items()}
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)).half()
    state["1.num_batches_tracked"] = model.state_dict()["1.num_batches_tracked"]
    model.load_state_dict(state, strict=True)
    expected = {"0.weight": kernel.T, "0.bias": bias, "1.weight": gamma, "1.bias": beta, "1.running_mean": mean,
                "1.running_var": var, "2.weight": kernel_1.T, "2.bias": bias_1}
    for name, value in expected.items():
        got = model.state_dict()[name]
        assert got.dtype == torch.float16, name
        np.testing.assert_array_equal(got.numpy(), value.astype(np.float16), err_msg=name)
    with pytest.raises(UsageProblem, match="disagree"):
        ckpttool.convert(root / "run", tmp_path / "x.npz", names="key", naming="model")


def test_fleet_from_python(fixtures_dir, series_dir, tmp_path, tf):
    """plan_policy, fit_budget, apply_prunes, plan_failed_runs / apply_failed_runs: what goes is what
    TensorFlow's state files and os.stat say the rules and the budget take; TF loads each latest."""
    import os

    runs = tmp_path / "runs"
    for name in ("a", "b"):
        shutil.copytree(fixtures_dir / "tf2_many", runs / name)
    policy = tmp_path / "retention.toml"
    policy.write_text('[[rule]]\npaths = ["runs/a"]\nkeep_last = 3\n\n[[rule]]\npaths = ["runs/*"]\nkeep_last = 1\n')
    saves = {name: [p.rsplit("/", 1)[-1]
                    for p in tf.train.get_checkpoint_state(str(runs / name)).all_model_checkpoint_paths]
             for name in ("a", "b")}
    fleet = ckpttool.plan_policy(policy)
    assert not fleet.failed
    planned = {os.path.basename(g.directory): (g.rule.index, {d.name for d in p.deleted}) for g, p in fleet.planned}
    assert planned == {"a": (1, set(saves["a"][:-3])), "b": (2, set(saves["b"][:-1]))}

    def size(name, checkpoint):
        return sum(f.stat().st_size for f in (runs / name).iterdir() if f.name.startswith(checkpoint + ".")
                   and not f.name.endswith(".meta"))
    kept = sum(size("a", c) for c in saves["a"][-3:]) + size("b", saves["b"][-1])
    oldest_kept = saves["a"][-3]  # b keeps its latest alone, which never goes; a's oldest kept is older than the rest
    fitted, outcome = ckpttool.fit_budget([p for _g, p in fleet.planned], kept - size("a", oldest_kept))
    assert (outcome.bytes_before, outcome.deleted, outcome.missed_by) == (kept, 1, 0)
    results = ckpttool.apply_prunes(fitted)
    assert not any(isinstance(r, Exception) for r in results), results
    state = tf.train.get_checkpoint_state(str(runs / "a"))
    assert [p.rsplit("/", 1)[-1] for p in state.all_model_checkpoint_paths] == saves["a"][-2:]
    for name in ("a", "b"):
        assert tf.train.latest_checkpoint(str(runs / name)).endswith(saves[name][-1])
        tf.train.load_checkpoint(tf.train.latest_checkpoint(str(runs / name)))

    root = tmp_path / "failed"
    shutil.copytree(series_dir / "fleet" / "tf_failed", root / "tf_failed")  # what a job left at start-up
    for current, _dirs, files in os.walk(root):
        for file in files:
            path = os.path.join(current, file)
            os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime - 2 * 86400))
    plan = ckpttool.plan_failed_runs(root, "1d")
    assert [r.directory for r in plan.dropped] == [str(root / "tf_failed")]
    assert [r.directory for r in ckpttool.apply_failed_runs(plan).dropped] == [str(root / "tf_failed")]
    assert not (root / "tf_failed").exists()


def test_failed_runs_from_python_check_age_and_root(series_dir, tmp_path):
    """plan_failed_runs / apply_failed_runs given an age that is no number of seconds >= 0 (NaN: every
    run old enough, one starting now too) refuse it; a plan changed to remove the root given never
    removes it (emptied only). os.stat is the witness."""
    import dataclasses
    import os

    root = tmp_path / "failed"
    shutil.copytree(series_dir / "fleet" / "tf_failed", root)  # the root is itself a failed start-up
    before = {p: os.stat(p).st_mtime_ns for p in root.rglob("*")}
    for age in (float("nan"), -1.0):
        with pytest.raises(UsageProblem, match="age"):
            ckpttool.plan_failed_runs(root, age)
    young = ckpttool.plan_failed_runs(root, "1d")  # just copied: written less than a day ago
    assert not young.dropped
    with pytest.raises(UsageProblem, match="age"):
        ckpttool.apply_failed_runs(dataclasses.replace(young, age_seconds=float("nan")))
    assert {p: os.stat(p).st_mtime_ns for p in root.rglob("*")} == before
    plan = ckpttool.plan_failed_runs(root, 0)
    assert [r.directory for r in plan.dropped] == [str(root)]
    changed = dataclasses.replace(plan, dropped=tuple(dataclasses.replace(r, remove_directory=True)
                                                      for r in plan.dropped))
    result = ckpttool.apply_failed_runs(changed)
    assert not result.problems, result.problems
    assert root.is_dir() and not any(root.iterdir())
