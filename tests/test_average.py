"""`ckpttool average` against TensorFlow: the result's values are numpy's float64 mean of the
`tf.train.load_checkpoint` values (the oracle): bit for bit for float64 variables, within the
documented bound of a float32 sum for the others (and bit for bit for two float32 sources,
where that bound makes the float32 result the correctly rounded mean), integers come from the newest, the
optimizer is dropped unless kept, TensorFlow restores the result into the model, and the sources
are chosen by list, --last, --steps or --best by a metric."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli

GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def _model():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A Keras model trained with Adam, saved by a CheckpointManager at steps 1..5 (model and
    optimizer), with a metrics CSV scoring each step."""
    import keras
    import tensorflow as tf

    directory = tmp_path_factory.mktemp("avg") / "run"
    keras.utils.set_random_seed(3)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=10)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal((16, 2)).astype(np.float32)
    for step in range(1, 6):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        manager.save(checkpoint_number=step)
    (directory.parent / "metrics.csv").write_text("step,val_loss\n1,0.5\n2,0.2\n3,0.9\n4,0.1\n5,0.3\n")
    return directory


def _mean(tf, prefixes, name):
    values = [tf.train.load_checkpoint(str(p)).get_tensor(name) for p in prefixes]
    return np.mean(np.stack([v.astype(np.float64) for v in values]), axis=0).astype(values[0].dtype)


HALF_ULP = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}  # of the magnitude, rounding to these
SMALLEST_HALF = {"float16": 2.0 ** -25, "bfloat16": 2.0 ** -134}  # half the smallest subnormal


def assert_mean(got, values, name=""):
    """`got` (any float dtype) is the mean of the float arrays `values` as `average` documents it,
    checked against numpy's float64 mean (the oracle): float64 sources give it bit for bit; the
    others a float32 sum, within gamma_n * mean(|x|) of it (u = 2**-24, gamma_n = n*u / (1 - n*u),
    n-1 additions and a division), plus 2**-150 (the division's rounding below float32's normal
    range), plus half a unit in the last place of got's dtype where it is narrower than float32 (the
    rounding to it), plus the oracle's own error (n * 2**-53 of the same); two float32 sources written as float32 give the correctly rounded mean, bit for bit."""
    got = np.asarray(got)
    stacked = np.stack([np.asarray(v).astype(np.float64) for v in values])
    oracle = np.mean(stacked, axis=0)
    n, source = len(values), np.asarray(values[0]).dtype
    if source == np.float64 or (n == 2 and source == np.float32 and got.dtype == np.float32):
        assert got.tobytes() == oracle.astype(got.dtype).tobytes(), name
        return
    u = 2.0 ** -24
    magnitude = np.mean(np.abs(stacked), axis=0)
    bound = (n * u / (1 - n * u) + n * 2.0 ** -53) * magnitude + 2.0 ** -150
    wide = got.astype(np.float64)
    kind = got.dtype.name
    if kind in HALF_ULP:
        bound = bound * (1 + HALF_ULP[kind]) + HALF_ULP[kind] * (1 + HALF_ULP[kind]) * np.abs(wide) \
            + SMALLEST_HALF[kind]
    error = np.abs(wide - oracle)
    assert np.all(error <= bound), (name, float(np.max(error - bound)))


def _assert_written(tf, got, prefixes, name):
    assert_mean(got, [tf.train.load_checkpoint(str(p)).get_tensor(name) for p in prefixes], name)


def test_mean_of_checkpoints_restores_into_the_model(run, tmp_path, tf):
    sources = [run / "ckpt-2", run / "ckpt-3", run / "ckpt-5"]
    out = tmp_path / "avg" / "ckpt-1"
    result = run_cli("average", *map(str, sources), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert [s["step"] for s in document["sources"]] == [2, 3, 5]
    reader, newest = tf.train.load_checkpoint(str(out)), tf.train.load_checkpoint(str(sources[-1]))
    names = set(reader.get_variable_to_shape_map()) - {GRAPH}
    # the optimizer's state is left out by default; Keras 3 reaches the weights through it first
    assert sorted(names) == [f"optimizer/_trainable_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE" for i in range(4)] \
        + ["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]
    for name in names:
        if reader.get_variable_to_dtype_map()[name].is_floating:
            _assert_written(tf, reader.get_tensor(name), sources, name)
        else:
            assert reader.get_tensor(name).tobytes() == np.asarray(newest.get_tensor(name)).tobytes(), name
    model = _model()
    tf.train.Checkpoint(model=model).restore(str(out)).assert_existing_objects_matched()
    kernel = "optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE"  # the first Dense kernel
    assert model.layers[0].kernel.numpy().tobytes() == reader.get_tensor(kernel).tobytes()


def test_keep_optimizer_and_integers_from_the_newest(run, tmp_path, tf):
    sources = [run / "ckpt-1", run / "ckpt-4"]
    out = tmp_path / "ckpt-9"
    assert run_cli("average", *map(str, sources), "-o", str(out), "--keep-optimizer").exit_code == 0
    reader = tf.train.load_checkpoint(str(out))
    dtypes = reader.get_variable_to_dtype_map()
    newest = tf.train.load_checkpoint(str(sources[-1]))
    assert "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE" in dtypes
    assert "optimizer/_variables/2/.ATTRIBUTES/VARIABLE_VALUE" in dtypes
    for name, dtype in dtypes.items():
        if name == GRAPH:
            continue
        if dtype.is_floating:  # two float32 sources: the correctly rounded mean, bit for bit
            _assert_written(tf, reader.get_tensor(name), sources, name)
        else:
            assert reader.get_tensor(name).tobytes() == np.asarray(newest.get_tensor(name)).tobytes(), name
    assert any(not d.is_floating for n, d in dtypes.items() if n != GRAPH)  # iterations, save_counter


@pytest.mark.parametrize("options,steps", [(("--last", "2"), [4, 5]), (("--steps", "1,3"), [1, 3]),
                                           (("--best", "2", "--metric", "val_loss"), [2, 4])])
def test_selection_in_a_run_directory(run, tmp_path, tf, options, steps):
    extra = ("--metrics", str(run.parent / "metrics.csv")) if "--best" in options else ()
    out = tmp_path / "o.npz"
    result = run_cli("average", str(run), *options, *extra, "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    assert [s["step"] for s in json.loads(result.stdout)["sources"]] == steps
    sources = [run / f"ckpt-{s}" for s in steps]
    newest = tf.train.load_checkpoint(str(sources[-1]))
    with np.load(out) as data:
        for name in data.files:
            if data[name].dtype.kind == "f":
                _assert_written(tf, data[name], sources, name)
            else:
                assert data[name].tobytes() == np.asarray(newest.get_tensor(name)).tobytes(), name


def test_layout_and_dtype_apply_to_the_mean(tmp_path, tf):
    from safetensors.numpy import load_file

    rng = np.random.default_rng(2)
    sources = []
    for i in range(3):
        kernel = tf.Variable(rng.standard_normal((5, 3)).astype(np.float32))
        sources.append(tf.train.Checkpoint(dense=tf.train.Checkpoint(kernel=kernel)).write(str(tmp_path / f"c{i}")))
    out = tmp_path / "o.safetensors"
    assert run_cli("average", *sources, "-o", str(out), "--layout", "torch", "--dtype", "float16").exit_code == 0
    tensors = load_file(str(out))
    name = "dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    assert tensors["dense.weight"].dtype == np.float16
    assert_mean(tensors["dense.weight"].T, [tf.train.load_checkpoint(p).get_tensor(name) for p in sources])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("chunk", [None, 1000])
def test_narrow_float_means(tmp_path, tf, dtype, chunk, monkeypatch):
    """bfloat16 and float16 variables are summed in float32 and written in their dtype: within the
    bound of assert_mean of numpy's float64 mean of what TensorFlow reads; in one chunk, and in six
    (each decoded into, and rounded in, the buffers reused for the next)."""
    if chunk:
        from ckpttool.ops.tensors import average

        monkeypatch.setattr(average, "CHUNK_BYTES", chunk)
    rng = np.random.default_rng(1)
    prefixes = []
    for i in range(3):
        values = rng.standard_normal(3000).astype(np.float32) * 10.0 ** rng.integers(-3, 4, 3000)
        v = tf.Variable(tf.constant(values, dtype=getattr(tf, dtype)))
        prefixes.append(tf.train.Checkpoint(v=v).write(str(tmp_path / f"c{i}" / "ck")))
    out = tmp_path / "avg" / "ck"
    assert run_cli("average", *prefixes, "-o", str(out)).exit_code == 0
    name = "v/.ATTRIBUTES/VARIABLE_VALUE"
    got = tf.train.load_checkpoint(str(out)).get_tensor(name)
    assert got.dtype == (ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16)
    _assert_written(tf, got, prefixes, name)


def _float32_checkpoints(tf, directory, columns):
    """One TF2 checkpoint per column of `columns` (a float32 vector each), their prefixes."""
    return [tf.train.Checkpoint(v=tf.Variable(np.array(column, np.float32))).write(str(directory / f"c{i}" / "ck"))
            for i, column in enumerate(columns)]


@pytest.mark.parametrize("count", [2, 3, 5, 7])
def test_float32_mean_within_its_bound(tmp_path, tf, count):
    """float32 sources: the float32 sum's mean is within the documented bound of numpy's float64
    mean, over values of every magnitude and sign (cancelling sums included); two sources give it
    bit for bit."""
    rng = np.random.default_rng(count)
    columns = [rng.standard_normal(20000) * 10.0 ** rng.integers(-30, 30, 20000) for _ in range(count)]
    columns[-1][:1000] = -np.sum(columns[:-1], axis=0)[:1000]  # sums cancelling to about nothing
    prefixes = _float32_checkpoints(tf, tmp_path, columns)
    out = tmp_path / "avg" / "ck"
    assert run_cli("average", *prefixes, "-o", str(out)).exit_code == 0
    name = "v/.ATTRIBUTES/VARIABLE_VALUE"
    _assert_written(tf, tf.train.load_checkpoint(str(out)).get_tensor(name), prefixes, name)


@pytest.mark.parametrize("count", [2, 3, 5])
def test_float32_sums_beyond_the_largest_float_do_not_overflow(tmp_path, tf, count):
    """float32 values near float32's largest (their float32 sum overflows), infinities and NaN:
    those elements are numpy's float64 mean rounded to float32, finite where the values are."""
    big = float(np.finfo(np.float32).max)
    rows = [[3.0e38] * count, [big] * count, [-big] * count, [big, -big] * (count // 2) + [big] * (count % 2),
            [np.inf] + [1.0] * (count - 1), [np.nan] + [1.0] * (count - 1), [np.inf, -np.inf] + [1.0] * (count - 2),
            [1.5, 2.5, 3.5, 4.5, 5.5][:count]]
    prefixes = _float32_checkpoints(tf, tmp_path, list(zip(*rows)))
    out = tmp_path / "avg" / "ck"
    assert run_cli("average", *prefixes, "-o", str(out)).exit_code == 0
    name = "v/.ATTRIBUTES/VARIABLE_VALUE"
    got = tf.train.load_checkpoint(str(out)).get_tensor(name)
    values = np.stack([tf.train.load_checkpoint(p).get_tensor(name).astype(np.float64) for p in prefixes])
    with np.errstate(invalid="ignore"):
        oracle = np.mean(values, axis=0).astype(np.float32)
    assert got[:4].tobytes() == oracle[:4].tobytes() and np.all(np.isfinite(got[:4]))
    assert np.isposinf(got[4]) and np.isnan(got[5]) and np.isnan(got[6])
    assert_mean(got[7:], list(values[:, 7:].astype(np.float32)))


def test_mismatches_exit_3_naming_the_first(tmp_path, tf):
    a = tf.train.Checkpoint(w=tf.Variable(np.zeros((2, 3), np.float32)), b=tf.Variable(np.zeros(3, np.float32)))
    pa = a.write(str(tmp_path / "a" / "ck"))
    pb = tf.train.Checkpoint(w=tf.Variable(np.zeros((3, 2), np.float32)),
                             b=tf.Variable(np.zeros(3, np.float32))).write(str(tmp_path / "b" / "ck"))
    pc = tf.train.Checkpoint(w=tf.Variable(np.zeros((2, 3), np.float64)),
                             b=tf.Variable(np.zeros(3, np.float32))).write(str(tmp_path / "c" / "ck"))
    pd = tf.train.Checkpoint(w=tf.Variable(np.zeros((2, 3), np.float32))).write(str(tmp_path / "d" / "ck"))
    for other, words in ((pb, "shape"), (pc, "float64"), (pd, "not in")):
        result = run_cli("average", pa, other, "-o", str(tmp_path / "o.npz"))
        assert_one_line_error(result, 3)
        assert words in result.stderr and ("'w/" in result.stderr or "'b/" in result.stderr)
    assert not (tmp_path / "o.npz").exists()


def test_one_checkpoint_is_a_copy_with_a_warning(run, tmp_path, tf):
    result = run_cli("average", str(run), "-o", str(tmp_path / "o.npz"))
    assert result.exit_code == 0 and "only one checkpoint" in result.stderr
    latest = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run)))
    with np.load(tmp_path / "o.npz") as data:
        for name in data.files:
            assert data[name].tobytes() == np.asarray(latest.get_tensor(name)).tobytes(), name


def test_usage_errors(run, tmp_path):
    out = str(tmp_path / "o.npz")
    assert_one_line_error(run_cli("average", str(run), "--last", "2", "--steps", "1", "-o", out), 2)
    assert_one_line_error(run_cli("average", str(run), "--best", "2", "-o", out), 2)
    assert_one_line_error(run_cli("average", str(run / "ckpt-1"), str(run / "ckpt-1"), "-o", out), 2)
    assert_one_line_error(run_cli("average", str(run), "--steps", "1,7", "-o", out), 3)
    assert_one_line_error(run_cli("average", str(run / "ckpt-1"), str(run / "ckpt-2"),
                                  "-o", str(run / "ckpt-2")), 4)


def test_sharded_safetensors_destination(run, tmp_path, tf):
    from safetensors.numpy import load_file

    sources = [run / "ckpt-1", run / "ckpt-2"]
    index = tmp_path / "m.safetensors.index.json"
    result = run_cli("average", *map(str, sources), "-o", str(index), "--shard-size", "20B", "--metadata",
                     "format=pt")
    assert result.exit_code == 0, result.stderr
    weight_map = json.loads(index.read_text())["weight_map"]
    assert len(set(weight_map.values())) > 1
    for name, file in weight_map.items():
        value = load_file(str(tmp_path / file))[name]
        if value.dtype.kind == "f":
            _assert_written(tf, value, sources, name)
        else:
            assert value.tobytes() == tf.train.load_checkpoint(str(sources[-1])).get_tensor(name).tobytes(), name


def test_best_by_tensorboard_events(run, tmp_path, tf):
    """--best N --metric TAG reads TensorBoard event files under the run directory (written by tf.summary)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    writer = tf.summary.create_file_writer(str(copy / "eval"))
    with writer.as_default():
        for step, accuracy in ((1, 0.7), (2, 0.9), (3, 0.8), (4, 0.95), (5, 0.6)):
            tf.summary.scalar("accuracy", accuracy, step=step)
    writer.close()
    result = run_cli("average", str(copy), "--best", "2", "--metric", "accuracy", "-o", str(tmp_path / "o.npz"),
                     "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert [(s["step"], round(s["score"], 4)) for s in document["sources"]] == [(2, 0.9), (4, 0.95)]  # max: accuracy


def _float64_checkpoints(tf, directory, columns):
    """One TF2 checkpoint per column of `columns` (a float64 vector each), their prefixes."""
    return [tf.train.Checkpoint(v=tf.Variable(np.array(column, np.float64))).write(str(directory / f"c{i}" / "ck"))
            for i, column in enumerate(columns)]


@pytest.mark.parametrize("count", [2, 3, 5])
def test_float64_mean_near_the_largest_double_does_not_overflow(tmp_path, tf, count):
    """Sources holding values near float64's largest (1.7e308 each: their sum overflows) average to
    their mean, not inf: against the exact mean (fractions) of the values TensorFlow reads, within
    the bound the module states (n-1 roundings of the sum and one of the division: at most n units
    in the last place of the mean's magnitude here), and exactly the rounded mean for two sources."""
    from fractions import Fraction

    big = np.finfo(np.float64).max
    rows = [[1.7e308] * count, [big] * count, [-big] * count, [big, -big] * (count // 2) + [big] * (count % 2),
            [1.0e308 / count * (i + 1) for i in range(count)], [5e-324] * count, [1.5, 2.5, 3.5, 4.5, 5.5][:count]]
    prefixes = _float64_checkpoints(tf, tmp_path, list(zip(*rows)))
    out = tmp_path / "avg" / "ck"
    assert run_cli("average", *prefixes, "-o", str(out)).exit_code == 0
    name = "v/.ATTRIBUTES/VARIABLE_VALUE"
    got = tf.train.load_checkpoint(str(out)).get_tensor(name)
    values = np.stack([tf.train.load_checkpoint(p).get_tensor(name) for p in prefixes])
    for index in range(len(rows)):
        exact = sum(Fraction(float(v)) for v in values[:, index]) / count
        assert np.isfinite(got[index]), (index, got[index])
        if count == 2:
            assert got[index] == float(exact), index
        else:
            largest = max(abs(float(v)) for v in values[:, index])
            ulp = largest - np.nextafter(largest, 0.0)  # np.spacing of the largest double is inf
            assert abs(Fraction(float(got[index])) - exact) <= count * Fraction(float(ulp)), index


def test_ordinary_float64_values_keep_numpys_mean(tmp_path, tf):
    """Where nothing overflows, the mean is numpy's (float64 sum, then the division), bit for bit."""
    rng = np.random.default_rng(5)
    columns = [rng.standard_normal(64) * 10.0 ** rng.integers(-300, 300, 64) for _ in range(3)]
    prefixes = _float64_checkpoints(tf, tmp_path, columns)
    out = tmp_path / "avg" / "ck"
    assert run_cli("average", *prefixes, "-o", str(out)).exit_code == 0
    name = "v/.ATTRIBUTES/VARIABLE_VALUE"
    assert tf.train.load_checkpoint(str(out)).get_tensor(name).tobytes() == _mean(tf, prefixes, name).tobytes()


def _alias(kind: str, run, tmp_path) -> tuple[str, str]:
    """Two arguments naming the same checkpoint (run/ckpt-2), the second by another path."""
    import os

    if kind == "symlinked directory":
        (tmp_path / "alias").symlink_to(run, target_is_directory=True)
        return str(run / "ckpt-2"), str(tmp_path / "alias" / "ckpt-2")
    if kind in ("symlinked files", "hard-linked files"):
        copy = tmp_path / "copy"
        copy.mkdir()
        for file in run.glob("ckpt-2.*"):
            (os.symlink if kind == "symlinked files" else os.link)(file, copy / file.name)
        return str(run / "ckpt-2"), str(copy / "ckpt-2")
    if kind == "file URL":
        return str(run / "ckpt-2"), "file://" + str(run / "ckpt-2.index")
    if kind == "index file and prefix":
        return str(run / "ckpt-2.index"), str(run / "ckpt-2")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["symlinked directory", "symlinked files", "hard-linked files", "file URL",
                                  "index file and prefix"])
def test_the_same_checkpoint_given_twice_is_refused(run, tmp_path, kind):
    """One checkpoint reached by two paths would count twice in the mean: refused (exit 2, a bad
    argument) naming both arguments, whichever way the second reaches the same files."""
    first, second = _alias(kind, run, tmp_path)
    result = run_cli("average", first, str(run / "ckpt-4"), second, "-o", str(tmp_path / "o.npz"))
    assert_one_line_error(result, 2)
    assert first in result.stderr and second in result.stderr
    assert not (tmp_path / "o.npz").exists()


def test_a_run_directory_and_its_latest_checkpoint_are_one_source(run, tmp_path):
    result = run_cli("average", str(run / "ckpt-5"), str(run), "-o", str(tmp_path / "o.npz"))
    assert_one_line_error(result, 2)
    assert str(run / "ckpt-5") in result.stderr and f"{run}'" in result.stderr


def test_names_model_pairs_checkpoints_whose_keys_differ(run, tmp_path, tf):
    """The same model saved two ways stores each weight under different keys
    (Checkpoint(model=, optimizer=) reaches it through `optimizer/_trainable_variables/N`,
    Checkpoint(model=) through `model/_functional/...`): `average` by keys refuses (exit 3), and
    `average --names model` pairs them by their path through the model. The mean equals numpy's of
    what Keras restores from each checkpoint."""
    from safetensors.numpy import load_file

    restored = []
    for prefix in (run / "ckpt-2", run / "ckpt-4"):
        model = _model()
        tf.train.Checkpoint(model=model).restore(str(prefix)).expect_partial()
        restored.append(model)
    model_only = tf.train.Checkpoint(model=restored[1]).save(str(tmp_path / "model_only" / "ckpt"))
    by_keys = run_cli("average", run / "ckpt-2", model_only, "-o", tmp_path / "keys.safetensors")
    assert_one_line_error(by_keys, 3)
    out = tmp_path / "mean.safetensors"
    result = run_cli("average", run / "ckpt-2", model_only, "-o", out, "--names", "model", "--json")
    assert result.exit_code == 0, result.stderr
    expected = [np.mean([m.get_weights()[i].astype(np.float64) for m in restored], axis=0).astype(np.float32)
                for i in range(4)]  # two float32 sources: the correctly rounded mean, bit for bit
    written = load_file(str(out))
    assert sorted(written) == sorted([f"model/_functional/_operations/{n}/{a}" for n in (1, 2)
                                      for a in ("_kernel", "bias")] + ["save_counter"])
    # an integer: from the newest, the highest step (ckpt-2 against model_only's ckpt-1)
    counter = tf.train.load_checkpoint(str(run / "ckpt-2")).get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    assert written.pop("save_counter").tobytes() == counter.tobytes()
    by_shape = {w.shape: w for w in written.values()}
    assert len(by_shape) == 4
    for value in expected:
        assert by_shape[value.shape].tobytes() == value.tobytes()


@pytest.mark.parametrize("count", [3, 20])
def test_float32_means_below_the_normal_range_within_the_bound(tmp_path, tf, count):
    """float32 values whose mean is subnormal (below 2**-126): the division by n rounds to a
    multiple of 2**-149, off the exact mean by up to half of it, however small gamma_n * mean(|x|)
    is there; the documented bound says so (and numpy's float64 mean, rounded to float32, is off as
    much). Sums of subnormals and cancelling normals, of every sign."""
    rng = np.random.default_rng(count)
    tiny = 2.0 ** -149
    columns = [rng.integers(-40, 40, 4000) * tiny for _ in range(count)]
    columns[0][:1000] = rng.standard_normal(1000) * 2.0 ** -120  # normal values cancelling below 2**-126
    columns[1][:1000] = -columns[0][:1000] + rng.integers(-9, 9, 1000) * tiny
    columns[0][1000], columns[1][1000] = tiny, 0.0  # a mean of 2**-149 / n
    prefixes = _float32_checkpoints(tf, tmp_path, columns)
    out = tmp_path / "avg" / "ck"
    assert run_cli("average", *prefixes, "-o", str(out)).exit_code == 0
    name = "v/.ATTRIBUTES/VARIABLE_VALUE"
    _assert_written(tf, tf.train.load_checkpoint(str(out)).get_tensor(name), prefixes, name)
    assert "2**-150" in run_cli("average", "--help").stdout.replace("\n", " ").replace("  ", " ")
