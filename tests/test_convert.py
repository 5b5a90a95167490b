"""`convert` against the oracles: TensorFlow reads and restores what we write from
its own checkpoints (bit for bit, dtypes kept), numpy's np.load reads our .npz,
and the safetensors library loads our files and writes files we load."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli

GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
# dtypes safetensors has no exact equivalent for
NOT_IN_SAFETENSORS = r"^(c128|q.*|int[24]|uint[24]|float4_e2m1fn|float8_e4m3b11fnuz)$"


def _bits(value) -> tuple:
    """A tensor's dtype name, shape and exact content (bytes; strings as a list)."""
    value = np.asarray(value)
    if value.dtype == object or value.dtype.kind == "S":
        return "string", value.shape, [bytes(v) for v in value.reshape(-1)]
    return value.dtype.name, value.shape, value.tobytes()


def assert_bit_identical(tf, src, dst, mapping=None, dropped=()):
    """TensorFlow reads every tensor of DST with the dtype, shape and bytes it reads from SRC."""
    a, b = tf.train.load_checkpoint(str(src)), tf.train.load_checkpoint(str(dst))
    names = set(a.get_variable_to_shape_map()) - {GRAPH} - set(dropped)
    mapping = mapping or {}
    assert set(b.get_variable_to_shape_map()) - {GRAPH} == {mapping.get(n, n) for n in names}
    a_dtypes, b_dtypes = a.get_variable_to_dtype_map(), b.get_variable_to_dtype_map()
    for name in names:
        new = mapping.get(name, name)
        assert b_dtypes[new] == a_dtypes[name], name
        assert _bits(b.get_tensor(new)) == _bits(a.get_tensor(name)), name


def _convert(*args) -> dict:
    result = run_cli("convert", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return result.json()


CASES = [("saver_run", "model.ckpt-50"), ("partitioned", "model.ckpt-5"), ("tf2_manager", "ckpt-3"),
         ("tf2_saved_model", "model/variables/variables"), ("sharded", "model.ckpt-1"), ("max_shard", "sharded")]


@pytest.mark.parametrize("fixture,prefix", CASES, ids=[c[0] for c in CASES])
def test_tf_to_safetensors_to_tf_round_trip(fixtures_dir, tmp_path, tf, fixture, prefix):
    src = fixtures_dir / fixture / prefix
    doc = _convert(src, tmp_path / "model.safetensors")
    assert doc["files"] == [str(tmp_path / "model.safetensors")]
    back = tmp_path / "back" / "model.ckpt-7"
    _convert(tmp_path / "model.safetensors", back)
    assert_bit_identical(tf, src, back)
    assert tf.train.latest_checkpoint(str(back.parent)) == str(back)  # the state file names it
    assert run_cli("diff", src, tmp_path / "model.safetensors").exit_code == 0  # diff across formats


def test_tf1_saver_restores_converted_variables(fixtures_dir, tmp_path, tf):
    """TF ckpt -> safetensors -> TF ckpt restores into a TF1 graph of the same names, partitioned ones too."""
    src = fixtures_dir / "partitioned" / "model.ckpt-5"
    _convert(src, tmp_path / "p.safetensors")
    dst = tmp_path / "p" / "model.ckpt-1"
    _convert(tmp_path / "p.safetensors", dst)
    reader = tf.train.load_checkpoint(str(src))
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        part = v1.get_variable("scope/part", shape=(7, 2), partitioner=v1.fixed_size_partitioner(3))
        cols = v1.get_variable("cols", shape=(3, 10), partitioner=v1.fixed_size_partitioner(2, axis=1))
        plain = v1.get_variable("plain", shape=(4,))
        with v1.Session() as sess:
            v1.train.Saver().restore(sess, str(dst))
            for name, var in (("scope/part", part), ("cols", cols), ("plain", plain)):
                np.testing.assert_array_equal(sess.run(var.as_tensor() if hasattr(var, "as_tensor") else var),
                                              reader.get_tensor(name))


def test_every_dtype_bit_exact(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "every_dtype" / "dtypes"
    _convert(src, tmp_path / "tf" / "copy")  # TF -> TF: every dtype, strings included
    assert_bit_identical(tf, src, tmp_path / "tf" / "copy")
    doc = _convert(src, tmp_path / "all.safetensors", "--drop", NOT_IN_SAFETENSORS)
    assert {s["name"] for s in doc["skipped"]} == {"empty_str", "long_string", "scalar_string", "strings"}
    _convert(tmp_path / "all.safetensors", tmp_path / "back" / "ckpt")
    reader = tf.train.load_checkpoint(str(src))
    dropped = [n for n in reader.get_variable_to_shape_map()
               if n in {s["name"] for s in doc["skipped"]} or n in doc["dropped"]]
    assert {"bfloat16", "half", "float8_e5m2", "float8_e4m3fn", "bool", "i8", "c64"} <= (
        set(reader.get_variable_to_shape_map()) - set(dropped))
    assert_bit_identical(tf, src, tmp_path / "back" / "ckpt", dropped=dropped)


@pytest.mark.parametrize("dtype", ["c128", "int4", "qint8", "float4_e2m1fn"])
def test_dtype_safetensors_cannot_hold_is_refused(fixtures_dir, tmp_path, dtype):
    result = run_cli("convert", "--keep", f"^{dtype}$", fixtures_dir / "every_dtype" / "dtypes",
                     tmp_path / "x.safetensors")
    assert_one_line_error(result, 3)
    assert repr(dtype) in result.stderr and "safetensors cannot hold" in result.stderr
    assert os.listdir(tmp_path) == []


def test_tf_to_npz_equals_np_load(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "every_dtype" / "dtypes"
    result = run_cli("convert", "--json", src, tmp_path / "w.npz", "--drop",
                     r"^(q.*|int[24]|uint[24]|float[48].*|bfloat16)$")
    assert result.exit_code == 0, result.stderr
    assert "warning: skipped strings: npz has no string dtype" in result.stderr
    doc = result.json()
    reader = tf.train.load_checkpoint(str(src))
    left_out = set(doc["dropped"]) | {s["name"] for s in doc["skipped"]}
    assert len(left_out) == 20  # 11 dtypes numpy lacks, 5 quantized ones, 4 strings
    with np.load(tmp_path / "w.npz", allow_pickle=False) as archive:
        assert set(archive.files) == set(reader.get_variable_to_shape_map()) - left_out
        for name in archive.files:
            assert _bits(archive[name]) == _bits(reader.get_tensor(name)), name
    bf16 = run_cli("convert", "--keep", "^bfloat16$", src, tmp_path / "b.npz")
    assert_one_line_error(bf16, 3)
    assert "numpy (.npz) cannot hold" in bf16.stderr and "safetensors" in bf16.stderr  # the hint names one that can


def test_npz_round_trip_into_tensorflow(tmp_path, tf):
    values = {"dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.int64(5),
              "mask": np.array([True, False]), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              "big_endian": np.arange(4, dtype=">i4")}
    np.savez_compressed(tmp_path / "in.npz", **values)
    _convert(tmp_path / "in.npz", tmp_path / "ckpt" / "model")
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt" / "model"))
    for name, value in values.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)
        assert reader.get_tensor(name).dtype == np.asarray(value).dtype.newbyteorder("=")


def test_safetensors_library_loads_what_we_write(fixtures_dir, tmp_path, tf):
    from safetensors import deserialize, safe_open

    src = fixtures_dir / "every_dtype" / "dtypes"
    out = tmp_path / "ours.safetensors"
    _convert(src, out, "--drop", NOT_IN_SAFETENSORS, "--metadata", "format=pt")
    reader = tf.train.load_checkpoint(str(src))
    with safe_open(str(out), framework="np") as handle:
        metadata = handle.metadata()
        names = set(handle.keys())
        np.testing.assert_array_equal(handle.get_tensor("big/matrix"), reader.get_tensor("big/matrix"))
    assert metadata["format"] == "pt" and metadata["source"] == src.name and metadata["source_format"] == "v2"
    by_name = dict(deserialize(out.read_bytes()))  # numpy lacks bfloat16 and float8: compare the bytes
    assert set(by_name) == names
    for name, info in by_name.items():
        expected = np.asarray(reader.get_tensor(name))
        assert list(info["shape"]) == list(expected.shape), name
        assert bytes(info["data"]) == expected.tobytes(), name


def test_safetensors_written_by_the_library_restores_into_a_tf_model(tmp_path, tf):
    import ml_dtypes
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    weights = {"dense/kernel": rng.standard_normal((4, 3)).astype(np.float32),
               "dense/bias": rng.standard_normal(3).astype(np.float32),
               "emb": rng.standard_normal((5, 2)).astype(ml_dtypes.bfloat16),
               "global_step": np.array(42, np.int64)}
    save_file(weights, str(tmp_path / "hf.safetensors"))
    dst = tmp_path / "run" / "model.ckpt-42"
    _convert(tmp_path / "hf.safetensors", dst)
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        kernel = v1.get_variable("dense/kernel", shape=(4, 3))
        bias = v1.get_variable("dense/bias", shape=(3,))
        emb = v1.get_variable("emb", shape=(5, 2), dtype=tf.bfloat16)
        step = v1.train.get_or_create_global_step()
        with v1.Session() as sess:
            v1.train.Saver().restore(sess, tf.train.latest_checkpoint(str(dst.parent)))
            got = sess.run({"dense/kernel": kernel, "dense/bias": bias, "emb": emb, "global_step": step})
    for name, value in weights.items():
        assert _bits(got[name]) == _bits(value), name


def test_sharded_safetensors_with_index(fixtures_dir, tmp_path, tf):
    from safetensors.numpy import load_file

    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    doc = _convert(src, tmp_path / "model.safetensors", "--shard-size", "100B")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert doc["files"] == [str(tmp_path / s) for s in shards] + [str(tmp_path / "model.safetensors.index.json")]
    count = len(shards)
    assert count > 1 and shards == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    assert not (tmp_path / "model.safetensors").exists()
    reader = tf.train.load_checkpoint(str(src))
    assert set(index["weight_map"]) == set(reader.get_variable_to_shape_map())
    assert index["metadata"]["total_size"] == sum(reader.get_tensor(n).nbytes for n in index["weight_map"])
    for name, shard in index["weight_map"].items():  # as a Hugging Face loader reads them
        np.testing.assert_array_equal(load_file(tmp_path / shard)[name], reader.get_tensor(name))
    assert run_cli("diff", src, tmp_path / "model.safetensors.index.json").exit_code == 0
    _convert(tmp_path / "model.safetensors.index.json", tmp_path / "back" / "ckpt")
    assert_bit_identical(tf, src, tmp_path / "back" / "ckpt")


def test_tf2_object_graph_is_carried_and_restores(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "tf2_manager" / "ckpt-3"
    dst = tmp_path / "tf2" / "ckpt-3"
    doc = _convert(src, dst, "--drop-optimizer")
    assert doc["dropped"] and all(n.startswith("optimizer/") for n in doc["dropped"])
    model = tf.Module()
    for name, (n_in, n_out) in (("dense1", (4, 3)), ("dense2", (3, 2))):
        layer = tf.Module()
        layer.kernel, layer.bias = tf.Variable(tf.zeros((n_in, n_out))), tf.Variable(tf.zeros(n_out))
        setattr(model, name, layer)
    setattr(model, "we.ird/name", tf.Variable(tf.zeros(2)))
    tf.train.Checkpoint(model=model).restore(str(dst)).assert_existing_objects_matched()
    source = tf.train.load_checkpoint(str(src))
    np.testing.assert_array_equal(model.dense1.kernel.numpy(),
                                  source.get_tensor("model/dense1/kernel/.ATTRIBUTES/VARIABLE_VALUE"))
    # Into safetensors the graph is skipped with a note, or refused with --strict.
    result = run_cli("convert", src, tmp_path / "m.safetensors")
    assert result.exit_code == 0 and f"warning: skipped {GRAPH}" in result.stderr
    strict = run_cli("convert", "--strict", src, tmp_path / "strict.safetensors")
    assert_one_line_error(strict, 3)
    assert not (tmp_path / "strict.safetensors").exists()
    assert run_cli("convert", "--strict", "--drop", GRAPH, src, tmp_path / "strict.safetensors").exit_code == 0


def test_rename_rules_and_sep(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "tf2_manager" / "ckpt-3"
    out = tmp_path / "pt.safetensors"
    doc = _convert(src, out, "--drop-optimizer", "--regex", r"/\.ATTRIBUTES/VARIABLE_VALUE$=", "--sep", ".",
                   "--drop", "save_counter")
    assert sorted(r["to"] for r in doc["renamed"]) == [
        "model.dense1.bias", "model.dense1.kernel", "model.dense2.bias", "model.dense2.kernel", "model.we..ird.Sname"]
    from safetensors.numpy import load_file

    loaded = load_file(out)
    source = tf.train.load_checkpoint(str(src))
    np.testing.assert_array_equal(loaded["model.dense2.kernel"],
                                  source.get_tensor("model/dense2/kernel/.ATTRIBUTES/VARIABLE_VALUE"))
    collision = run_cli("convert", "--regex", "^.*$=x", src, tmp_path / "c.safetensors")
    assert_one_line_error(collision, 4)


def test_tf1_optimizer_slots_dropped(tmp_path, tf):
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        w = v1.get_variable("w", initializer=np.ones((2, 2), np.float32))
        loss = tf.reduce_sum(w * w)
        train = v1.train.AdamOptimizer(0.1).minimize(loss, global_step=v1.train.get_or_create_global_step())
        momentum = v1.train.MomentumOptimizer(0.1, 0.9).minimize(loss)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            sess.run([train, momentum])
            v1.train.Saver().save(sess, str(tmp_path / "model.ckpt"))
    names = set(tf.train.load_checkpoint(str(tmp_path / "model.ckpt")).get_variable_to_shape_map())
    assert {"w/Adam", "w/Adam_1", "w/Momentum", "beta1_power", "beta2_power"} <= names
    doc = _convert(tmp_path / "model.ckpt", tmp_path / "w.npz", "--drop-optimizer")
    assert sorted(doc["dropped"]) == sorted(names - {"w", "global_step"})
    # One rule set: rename-vars takes the same shorthand.
    assert run_cli("rename-vars", "--drop-optimizer", tmp_path / "model.ckpt", tmp_path / "slim").exit_code == 0
    assert set(tf.train.load_checkpoint(str(tmp_path / "slim")).get_variable_to_shape_map()) == {"w", "global_step"}


def test_existing_destination_and_overwrite(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    _convert(src, tmp_path / "w.safetensors")
    again = run_cli("convert", src, tmp_path / "w.safetensors")
    assert_one_line_error(again, 4)
    _convert(fixtures_dir / "saver_run" / "model.ckpt-30", tmp_path / "w.safetensors", "--overwrite")
    _convert(src, tmp_path / "ckpt" / "m")
    assert_one_line_error(run_cli("convert", src, tmp_path / "ckpt" / "m"), 4)
    _convert(tmp_path / "w.safetensors", tmp_path / "ckpt" / "m", "--overwrite")
    assert_bit_identical(tf, fixtures_dir / "saver_run" / "model.ckpt-30", tmp_path / "ckpt" / "m")
    assert_one_line_error(run_cli("convert", tmp_path / "w.safetensors", tmp_path / "w.safetensors",
                                  "--overwrite"), 4)


def test_usage_errors(fixtures_dir, tmp_path):
    src = fixtures_dir / "saver_run"
    assert_one_line_error(run_cli("convert", src, tmp_path / "x.keras"), 2)
    assert_one_line_error(run_cli("convert", "--to", "npz", src, tmp_path / "x.safetensors"), 2)
    assert_one_line_error(run_cli("convert", "--shard-size", "lots", src, tmp_path / "x.safetensors"), 2)
    assert_one_line_error(run_cli("convert", "--shard-size", "1GB", src, tmp_path / "x.npz"), 2)
    assert_one_line_error(run_cli("convert", "--to", "onnx", src, tmp_path / "x"), 2)
    assert os.listdir(tmp_path) == []


def test_dry_run_writes_nothing_and_v1_source(fixtures_dir, tmp_path, tf):
    result = run_cli("convert", "--dry-run", fixtures_dir / "saver_run", tmp_path / "w.npz")
    assert result.exit_code == 0 and "would write" in result.stdout and os.listdir(tmp_path) == []
    v1_src = fixtures_dir / "v1_format"
    sliced = run_cli("convert", v1_src, tmp_path / "v1.npz")
    assert_one_line_error(sliced, 3)
    assert "'sliced'" in sliced.stderr
    doc = _convert(v1_src, tmp_path / "v1.npz", "--drop", "^sliced$")
    prefix = doc["source"]
    reader = tf.train.load_checkpoint(prefix)
    with np.load(tmp_path / "v1.npz") as archive:
        for name in archive.files:
            assert _bits(archive[name]) == _bits(reader.get_tensor(name)), name


def test_bundle_writer_streams_byte_identically(tmp_path):
    """add_stream writes the very bytes add() writes (and TensorFlow's writer would)."""
    from ckpttool.formats.tf.bundle_writer import BundleWriter
    from ckpttool.formats.dtypes import dtype_from_name

    rng = np.random.default_rng(3)
    tensors = {"a": rng.standard_normal((64, 33)).astype(np.float32), "b": np.arange(7, dtype=np.int64),
               "c": np.array([], np.float16)}
    for mode in ("whole", "stream"):
        with BundleWriter(str(tmp_path / mode)) as writer:
            for name, value in tensors.items():
                dtype = dtype_from_name(value.dtype.name)
                if mode == "whole":
                    writer.add(name, dtype, value)
                else:
                    data = value.tobytes()
                    writer.add_stream(name, dtype, value.shape, (data[i:i + 1000] for i in range(0, len(data), 1000)))
            writer.finish()
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tmp_path / f"whole{suffix}").read_bytes() == (tmp_path / f"stream{suffix}").read_bytes()


@pytest.mark.parametrize("name", ["model.safetensors", "model.npz", "model.ckpt-1"])
def test_failed_write_leaves_no_temp_file(fixtures_dir, tmp_path, name):
    """A write that fails (disk full; here `ulimit -f`, with SIGXFSZ ignored so the write fails with
    EFBIG as on a full disk) is exit 3 and leaves nothing, although closing the temp file fails
    again on the bytes still buffered. The limit lands among the small tensors of many_vars (past
    a safetensors header, which goes out in one write)."""
    import resource
    import signal
    import subprocess
    import sys

    source = fixtures_dir / "many_vars" / "many"
    assert run_cli("convert", source, tmp_path / name).exit_code == 0
    limit = 32 << 10
    if name.endswith(".safetensors"):
        with open(tmp_path / name, "rb") as handle:
            header_end = 8 + int.from_bytes(handle.read(8), "little")
        limit = header_end + (os.path.getsize(tmp_path / name) - header_end) // 2

    def file_size_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "ckpttool", "convert", str(source), str(out / name)],
                          capture_output=True, text=True, timeout=120, preexec_fn=file_size_limit,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert_one_line_error(proc, 3)
    assert "too large" in proc.stderr
    assert os.listdir(out) == []


def test_interrupt_during_an_overwriting_commit_leaves_a_whole_checkpoint(fixtures_dir, tmp_path, tf, monkeypatch,
                                                                           sigint_reaches_children):
    """Ctrl-C just as `convert --overwrite` has moved its first new file into place: the commit
    finishes first (then exit 130), so DST is the new checkpoint, whole; before, it was neither."""
    import signal

    from ckpttool.storage import atomic
    from tests.test_rename_diff import assert_same_tensors

    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    dst = tmp_path / "out" / "model.ckpt-1"
    assert run_cli("convert", src, dst).exit_code == 0
    commit = atomic.commit_replacement
    moved = []

    def commit_then_ctrl_c(tmp, path):
        commit(tmp, path)
        moved.append(path)
        if len(moved) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(atomic, "commit_replacement", commit_then_ctrl_c)
    result = run_cli("convert", "--add-prefix", "new/", "--overwrite", src, dst)
    assert result.exit_code == 130, result.stderr
    assert moved == [f"{dst}.data-00000-of-00001"]  # the signal landed inside the commit
    names = tf.train.load_checkpoint(str(src)).get_variable_to_shape_map()
    assert_same_tensors(tf, src, dst, {name: "new/" + name for name in names})
    assert tf.train.latest_checkpoint(str(dst.parent)) == str(dst)
    assert sorted(os.listdir(dst.parent)) == ["checkpoint", "model.ckpt-1.data-00000-of-00001", "model.ckpt-1.index"]


def test_rules_that_match_nothing_are_warned_about(tmp_path, tf):
    """A --regex, --drop, --keep or --strip-prefix that matches no name (checked against TensorFlow's
    list of the names) changes nothing: a warning on stderr names each such rule, `warnings` in the
    JSON lists them, and the exit status stays 0; rules that match are not named. Alike for
    convert, rename-vars and average (one implementation of the rules)."""
    prefix = tf.train.Checkpoint(w=tf.Variable(np.ones((2, 3), np.float32)),
                                 b=tf.Variable(np.zeros(3, np.float32))).save(str(tmp_path / "src" / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(prefix)]
    idle = ["--regex", "^nowhere/=x/", "--drop", "zzz", "--keep", "qqq", "--strip-prefix", "absent/"]
    used = ["--regex", "^w/=weights/", "--keep", "^w/"]
    assert not any(word in name for name in names for word in ("nowhere", "zzz", "qqq", "absent"))
    expected = ["--regex '^nowhere/=x/'", "--drop 'zzz'", "--keep 'qqq'", "--strip-prefix 'absent/'"]
    runs = {"convert": ("convert", prefix, tmp_path / "out.npz"),
            "rename-vars": ("rename-vars", prefix, tmp_path / "renamed" / "ckpt-1"),
            "average": ("average", prefix, "-o", tmp_path / "avg.npz")}
    for command, args in runs.items():
        for json_flag in ((), ("--json",)):
            result = run_cli(*args, *idle, *used, *json_flag, "--dry-run")
            assert result.exit_code == 0, result.stderr
            warned = [line for line in result.stderr.splitlines() if "matched no name" in line]
            assert [line.split(" matched")[0].removeprefix("warning: ") for line in warned] == expected, command
            if json_flag:
                assert [w.split(" matched")[0] for w in result.json()["warnings"]
                        if "matched no name" in w] == expected, command
