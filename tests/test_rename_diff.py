"""rename-vars and diff, with TensorFlow reading and restoring everything we write."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli

V2_FIXTURES = [("saver_run", "model.ckpt-50"), ("sharded", "model.ckpt-1"), ("partitioned", "model.ckpt-5"),
               ("every_dtype", "dtypes"), ("many_vars", "many"), ("tf2_manager", "ckpt-3"),
               ("max_shard", "sharded"), ("ema_run", "model.ckpt-3"),
               ("tf2_saved_model", "model/variables/variables")]


def digest(prefix) -> dict[str, str]:
    return {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in sorted(glob.glob(glob.escape(str(prefix)) + ".*"))}


def assert_same_tensors(tf, src, dst, mapping=None, dropped=()):
    """TensorFlow reads every tensor of DST equal to its source in SRC."""
    a, b = tf.train.load_checkpoint(str(src)), tf.train.load_checkpoint(str(dst))
    a_names = set(a.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"} - set(dropped)
    mapping = mapping or {}
    expected = {mapping.get(n, n): n for n in a_names}
    assert set(b.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"} == set(expected)
    a_dtypes, b_dtypes = a.get_variable_to_dtype_map(), b.get_variable_to_dtype_map()
    for new, old in expected.items():
        assert b_dtypes[new] == a_dtypes[old]
        va, vb = a.get_tensor(old), b.get_tensor(new)
        if isinstance(va, bytes) or getattr(va, "dtype", None) == object:
            assert np.array_equal(np.asarray(va, dtype=object), np.asarray(vb, dtype=object)), new
        else:
            np.testing.assert_array_equal(np.asarray(vb), np.asarray(va), err_msg=new)


@pytest.mark.parametrize("fixture,prefix", V2_FIXTURES, ids=[f[0] for f in V2_FIXTURES])
def test_unchanged_rewrite_is_identical(fixtures_dir, tmp_path, tf, fixture, prefix):
    src = fixtures_dir / fixture / prefix
    before = digest(src)
    dst = tmp_path / "out" / "copy"
    dst.parent.mkdir()
    result = run_cli("rename-vars", "--json", src, dst)
    assert result.exit_code == 0, result.stderr
    assert open(f"{dst}.index", "rb").read() == open(f"{src}.index", "rb").read()  # byte for byte
    assert_same_tensors(tf, src, dst)
    assert digest(src) == before
    assert tf.train.latest_checkpoint(str(dst.parent)) == str(dst)


def test_ema_promotes_moving_averages(fixtures_dir, tmp_path, tf, manifest):
    src = fixtures_dir / "ema_run" / "model.ckpt-3"
    dst = tmp_path / "eval" / "model.ckpt-3"
    dst.parent.mkdir()
    doc = run_cli("rename-vars", "--json", "--ema", src, dst).json()
    assert {"from": "w/ExponentialMovingAverage", "to": "w"} in doc["renamed"]
    assert "w" in doc["dropped"]
    source = tf.train.load_checkpoint(str(src))
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as sess:
        w = v1.get_variable("w", shape=(2, 1))
        b = v1.get_variable("b", shape=(1,))
        v1.train.Saver().restore(sess, str(dst))  # a default Saver: every variable by its plain name
        np.testing.assert_array_equal(sess.run(w), source.get_tensor("w/ExponentialMovingAverage"))
        np.testing.assert_array_equal(sess.run(b), source.get_tensor("b/ExponentialMovingAverage"))
        assert not np.array_equal(sess.run(w), source.get_tensor("w"))


RULE_CASES = [
    (["--map", "dense/kernel=enc/w", "--map", "embedding=emb"], {"dense/kernel": "enc/w", "embedding": "emb"}, []),
    (["--regex", "^dense/=layer0/"], {"dense/kernel": "layer0/kernel", "dense/bias": "layer0/bias"}, []),
    (["--add-prefix", "tower_0/"], {n: "tower_0/" + n for n in ["dense/kernel", "dense/bias", "embedding",
                                                                 "counter", "global_step"]}, []),
    (["--strip-prefix", "dense/"], {"dense/kernel": "kernel", "dense/bias": "bias"}, []),
    (["--drop", "^embedding$", "--drop", "counter"], {}, ["embedding", "counter"]),
    (["--keep", "^dense/"], {}, ["embedding", "counter", "global_step"]),
]


@pytest.mark.parametrize("args,mapping,dropped", RULE_CASES, ids=[c[0][0] for c in RULE_CASES])
def test_rules_on_tf1_checkpoint(fixtures_dir, tmp_path, tf, args, mapping, dropped):
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    dst = tmp_path / "model.ckpt-50"
    result = run_cli("rename-vars", "--json", *args, src, dst)
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert {(r["from"], r["to"]) for r in doc["renamed"]} == set(mapping.items())
    assert sorted(doc["dropped"]) == sorted(dropped)
    assert_same_tensors(tf, src, dst, mapping, dropped)
    # A Saver in a graph that uses the new names restores it.
    reader = tf.train.load_checkpoint(str(dst))
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as sess:
        variables = [v1.get_variable(n, shape=s, dtype=reader.get_variable_to_dtype_map()[n])
                     for n, s in reader.get_variable_to_shape_map().items()]
        v1.train.Saver(var_list=variables).restore(sess, str(dst))
        for var in variables:
            np.testing.assert_array_equal(sess.run(var), reader.get_tensor(var.op.name))


def test_map_file_json_and_lines(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    (tmp_path / "m.json").write_text(json.dumps({"embedding": "emb"}))
    (tmp_path / "m.txt").write_text("# old new\ncounter steps_seen\n\n")
    for name in ("m.json", "m.txt"):
        dst = tmp_path / f"out-{name}"
        assert run_cli("rename-vars", "--map-file", tmp_path / name, src, dst).exit_code == 0
    assert_same_tensors(tf, src, tmp_path / "out-m.json", {"embedding": "emb"})
    assert_same_tensors(tf, src, tmp_path / "out-m.txt", {"counter": "steps_seen"})


def _dense(tf, n_in, n_out):
    """A layer shaped like the fixture model's dense layers (kernel, bias), zeroed."""
    layer = tf.Module()
    layer.kernel = tf.Variable(tf.zeros((n_in, n_out)))
    layer.bias = tf.Variable(tf.zeros(n_out))
    return layer


def test_tf2_object_path_rename_restores(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "tf2_manager" / "ckpt-3"
    dst = tmp_path / "renamed" / "ckpt-3"
    dst.parent.mkdir()
    result = run_cli("rename-vars", "--regex", r"^model/dense1/=model/encoder/", src, dst)
    assert result.exit_code == 0, result.stderr
    source = tf.train.load_checkpoint(str(src))

    model = tf.Module()
    model.encoder = _dense(tf, 4, 3)
    model.dense2 = _dense(tf, 3, 2)
    setattr(model, "we.ird/name", tf.Variable(tf.zeros(2)))
    optimizer = tf.keras.optimizers.Adam(0.1)
    # Keras 3 keys slots by position (optimizer/_variables/N): build in the order
    # training used, which the source's slot shapes give: (2,), (3,), (4, 3), (2,), (3, 2).
    order = [getattr(model, "we.ird/name"), model.encoder.bias, model.encoder.kernel, model.dense2.bias,
             model.dense2.kernel]
    slot_shapes = [tuple(source.get_variable_to_shape_map()[f"optimizer/_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE"])
                   for i in range(2, 12, 2)]
    assert slot_shapes == [tuple(v.shape) for v in order]
    optimizer.build(order)
    status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(str(dst))
    status.assert_existing_objects_matched()
    np.testing.assert_array_equal(model.encoder.kernel.numpy(),
                                  source.get_tensor("model/dense1/kernel/.ATTRIBUTES/VARIABLE_VALUE"))
    np.testing.assert_array_equal(model.dense2.bias.numpy(),
                                  source.get_tensor("model/dense2/bias/.ATTRIBUTES/VARIABLE_VALUE"))
    kernel_m = optimizer.variables[6]  # first moment of encoder.kernel, formerly dense1.kernel
    assert kernel_m.shape == (4, 3)
    np.testing.assert_array_equal(kernel_m.numpy(),
                                  source.get_tensor("optimizer/_variables/6/.ATTRIBUTES/VARIABLE_VALUE"))
    # The old name no longer matches anything.
    old = tf.Module()
    old.dense1 = _dense(tf, 4, 3)
    with pytest.raises(AssertionError):
        tf.train.Checkpoint(model=old).restore(str(dst)).assert_existing_objects_matched()


def test_tf2_slot_variables_follow_their_variables(tmp_path, tf):
    """Object-graph slot variables (.OPTIMIZER_SLOT keys) follow a renamed variable."""
    module = tf.Module()
    module.dense1 = tf.Module()
    module.dense1.kernel = tf.Variable(np.arange(1, 7, dtype=np.float32).reshape(2, 3))
    optimizer = tf.compat.v1.train.AdamOptimizer(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(module.dense1.kernel ** 2)
    optimizer.apply_gradients([(tape.gradient(loss, module.dense1.kernel), module.dense1.kernel)])
    src = tf.train.Checkpoint(model=module, optimizer=optimizer).save(str(tmp_path / "src" / "ckpt"))
    keys = [k for k, _ in tf.train.list_variables(src)]
    assert any(".OPTIMIZER_SLOT" in k for k in keys)
    dst = tmp_path / "dst" / "ckpt"
    dst.parent.mkdir()
    assert run_cli("rename-vars", "--regex", "^model/dense1/=model/encoder/", src, dst).exit_code == 0
    renamed = tf.Module()
    renamed.encoder = tf.Module()
    renamed.encoder.kernel = tf.Variable(tf.zeros((2, 3)))
    new_optimizer = tf.compat.v1.train.AdamOptimizer(0.1)
    status = tf.train.Checkpoint(model=renamed, optimizer=new_optimizer).restore(str(dst))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(renamed.encoder.kernel * 0)
    new_optimizer.apply_gradients([(tape.gradient(loss, renamed.encoder.kernel), renamed.encoder.kernel)])
    status.assert_existing_objects_matched()
    source_m = tf.train.load_checkpoint(src).get_tensor(
        "model/dense1/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE")
    assert np.abs(source_m).min() > 0
    # The slot restored through the renamed object; a zero-gradient Adam step scales m by beta1.
    np.testing.assert_allclose(new_optimizer.get_slot(renamed.encoder.kernel, "m").numpy(), 0.9 * source_m,
                               rtol=1e-6)
    restored_m = tf.train.load_checkpoint(str(dst)).get_tensor(
        "model/encoder/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(restored_m, source_m)


@pytest.mark.parametrize("fixture,prefix", [("partitioned", "model.ckpt-5"), ("every_dtype", "dtypes"),
                                            ("sharded", "model.ckpt-1"), ("max_shard", "sharded")])
def test_partitions_dtypes_and_shards_survive(fixtures_dir, tmp_path, tf, fixture, prefix):
    src = fixtures_dir / fixture / prefix
    dst = tmp_path / "renamed"
    names = [n for n in tf.train.load_checkpoint(str(src)).get_variable_to_shape_map()
             if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    if fixture == "max_shard":  # TF2: rename the object at the same depth
        args, mapping = ["--regex", "^module/=net/"], {n: n.replace("module/", "net/", 1) for n in names}
    else:
        args, mapping = ["--add-prefix", "new/"], {n: "new/" + n for n in names}
    result = run_cli("rename-vars", *args, src, dst)
    assert result.exit_code == 0, result.stderr
    assert_same_tensors(tf, src, dst, mapping)
    assert len(glob.glob(f"{dst}.data-*")) == len(glob.glob(f"{src}.data-*"))
    if fixture == "partitioned":
        (piece,) = tf.raw_ops.RestoreV2(prefix=str(dst), tensor_names=["new/scope/part"],
                                        shape_and_slices=["7 2 3,2:-"], dtypes=[tf.float32])
        whole = tf.train.load_checkpoint(str(src)).get_tensor("scope/part")
        np.testing.assert_array_equal(piece.numpy(), whole[3:5])
    if fixture == "max_shard":
        module = tf.Module()
        module.big = tf.Variable(tf.zeros((40, 30)))
        module.small = tf.Variable(tf.zeros(10, tf.int64))
        tf.train.Checkpoint(net=module).read(str(dst)).assert_existing_objects_matched()
        np.testing.assert_array_equal(module.big.numpy(), tf.train.load_checkpoint(str(src)).get_tensor(
            "module/big/.ATTRIBUTES/VARIABLE_VALUE"))


def test_tf2_depth_change_is_refused(fixtures_dir, tmp_path):
    result = run_cli("rename-vars", "--regex", "^model/dense1/=model/deep/dense1/", fixtures_dir / "tf2_manager",
                     tmp_path / "x")
    assert_one_line_error(result, 3)
    assert "depth" in result.stderr and not os.path.exists(tmp_path / "x.index")


def test_tf2_add_prefix_nests_the_objects(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "tf2_manager" / "ckpt-3"
    dst = tmp_path / "nested"
    result = run_cli("rename-vars", "--add-prefix", "tower/replica.S0/", src, dst)
    assert result.exit_code == 0, result.stderr
    source = tf.train.load_checkpoint(str(src))

    model = tf.Module()
    model.dense1, model.dense2 = _dense(tf, 4, 3), _dense(tf, 3, 2)
    setattr(model, "we.ird/name", tf.Variable(tf.zeros(2)))
    replica = tf.Module()
    replica.model = model
    replica.save_counter = tf.Variable(0, dtype=tf.int64)
    tower = tf.Module()
    setattr(tower, "replica/0", replica)  # local name "replica/0", escaped as replica.S0 in keys
    tf.train.Checkpoint(tower=tower).read(str(dst)).assert_existing_objects_matched()
    np.testing.assert_array_equal(model.dense1.kernel.numpy(),
                                  source.get_tensor("model/dense1/kernel/.ATTRIBUTES/VARIABLE_VALUE"))
    assert replica.save_counter.numpy() == source.get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE")


def test_link_shares_data_and_never_writes_through(fixtures_dir, tmp_path, tf):
    src_dir = tmp_path / "src"
    shutil.copytree(fixtures_dir / "tf2_manager", src_dir)
    src = src_dir / "ckpt-3"
    before = digest(src)
    dst = tmp_path / "linked" / "ckpt-3"
    dst.parent.mkdir()
    result = run_cli("rename-vars", "--link", "--regex", r"^model/dense1/=model/encoder/", src, dst)
    assert result.exit_code == 0, result.stderr
    assert digest(src) == before
    src_inode = os.stat(f"{src}.data-00000-of-00001").st_ino
    assert src_inode in {os.stat(p).st_ino for p in glob.glob(f"{dst}.data-*")}
    mapping = {k: k.replace("model/dense1/", "model/encoder/")
               for k in tf.train.load_checkpoint(str(src)).get_variable_to_shape_map()}
    assert_same_tensors(tf, src, dst, mapping)
    plain = tmp_path / "plain-link"
    assert run_cli("rename-vars", "--link", fixtures_dir / "saver_run", plain).exit_code == 0
    assert digest(fixtures_dir / "saver_run" / "model.ckpt-50")["model.ckpt-50.index"] == \
        hashlib.sha256(open(f"{plain}.index", "rb").read()).hexdigest()


def test_refusals(fixtures_dir, tmp_path):
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    collision = run_cli("rename-vars", "--map", "dense/kernel=x", "--map", "embedding=x", src, tmp_path / "a")
    assert_one_line_error(collision, 4)
    assert "dense/kernel" in collision.stderr and "embedding" in collision.stderr
    assert_one_line_error(run_cli("rename-vars", "--map", "nope=x", src, tmp_path / "b"), 3)
    assert run_cli("rename-vars", src, tmp_path / "c").exit_code == 0
    assert_one_line_error(run_cli("rename-vars", src, tmp_path / "c"), 4)
    assert run_cli("rename-vars", "--overwrite", "--add-prefix", "p/", src, tmp_path / "c").exit_code == 0
    assert_one_line_error(run_cli("rename-vars", src, src), 4)
    assert not glob.glob(str(tmp_path / "a*")) and not glob.glob(str(tmp_path / "b*"))
    dry = run_cli("rename-vars", "--dry-run", "--json", "--add-prefix", "q/", src, tmp_path / "d")
    assert dry.exit_code == 0 and len(dry.json()["renamed"]) == 5 and not glob.glob(str(tmp_path / "d*"))


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory, tf):
    prefix = tmp_path_factory.mktemp("big") / "big"
    tensors = [tf.zeros((4096, 4096)) for _ in range(6)]  # 384 MiB: a copy takes a moment
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=[f"w{i}" for i in range(6)],
                      shape_and_slices=[""] * 6, tensors=tensors)
    return prefix


def _wait_for_temp_shard(proc, out, min_bytes: int) -> bool:
    """Wait until rename-vars' temp data shard in `out` holds `min_bytes` (a readiness condition:
    ckpttool is then running its own code, past interpreter start-up); False if it ended first."""
    while proc.poll() is None:
        for path in glob.glob(str(out / "dst.data-*.tmp*")):
            try:
                if os.path.getsize(path) >= min_bytes:
                    return True
            except FileNotFoundError:
                pass  # renamed into place just now
        time.sleep(0.001)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_interrupted_write_leaves_nothing_tensorflow_would_pick_up(big_checkpoint, tmp_path, tf, sig,
                                                                   sigint_reaches_children):
    interrupted_mid_write = 0
    total = os.path.getsize(f"{big_checkpoint}.data-00000-of-00001")
    for attempt, fraction in enumerate((0.0, 0.0, 0.25, 0.5, 0.75)):
        out = tmp_path / f"out-{sig.name}-{attempt}-{fraction}"
        out.mkdir()
        proc = subprocess.Popen([sys.executable, "-m", "ckpttool", "rename-vars", "--add-prefix", "x/",
                                 str(big_checkpoint), str(out / "dst")], stderr=subprocess.PIPE, text=True)
        if _wait_for_temp_shard(proc, out, int(total * fraction)):
            proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            continue  # finished before the signal landed: nothing to check
        picked_up = tf.train.latest_checkpoint(str(out))
        if picked_up is not None or os.path.exists(out / "dst.index"):
            # Killed after the commit point (index, then state file): it must be whole.
            reader = tf.train.load_checkpoint(str(out / "dst"))
            assert sorted(reader.get_variable_to_shape_map()) == [f"x/w{i}" for i in range(6)]
            for i in range(6):
                assert not reader.get_tensor(f"x/w{i}").any()
            continue
        interrupted_mid_write += 1
        if sig != signal.SIGKILL:
            assert proc.returncode == (130 if sig == signal.SIGINT else 143) and "Traceback" not in err, err
            assert os.listdir(out) == []  # Ctrl-C (or SIGTERM) cleans up everything it wrote
        else:
            # SIGKILL leaves the temp shard; the next run to this DST clears it and succeeds.
            assert run_cli("rename-vars", big_checkpoint, out / "dst").exit_code == 0
            assert not glob.glob(str(out / "dst.data-*.tmp*"))
    assert interrupted_mid_write, "no signal landed before the commit point; the test proved nothing"


def test_diff_reports_each_kind_of_change(tmp_path, tf):
    def save(prefix, tensors):
        names = sorted(tensors)
        tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(tensors[n]) for n in names])

    base = {"same": np.arange(10, dtype=np.float32), "changed": np.ones((3, 3), np.float32),
            "removed": np.zeros(2, np.int64), "reshaped": np.zeros((2, 3), np.float32),
            "text": np.array([b"a", b"b"], dtype=object), "nan": np.array([np.nan, 1.0])}
    other = dict(base)
    other.pop("removed")
    other["added"] = np.ones(1, np.float32)
    other["changed"] = base["changed"] + np.float32(0.001) * np.eye(3, dtype=np.float32)
    other["reshaped"] = np.zeros((3, 2), np.float32)
    save(tmp_path / "a", base)
    save(tmp_path / "a2", base)
    save(tmp_path / "b", other)
    same = run_cli("diff", tmp_path / "a", tmp_path / "a2")
    assert same.exit_code == 0 and "identical" in same.stdout
    result = run_cli("diff", "--json", tmp_path / "a", tmp_path / "b")
    assert result.exit_code == 1
    doc = result.json()
    changes = {d["name"]: d for d in doc["differences"]}
    assert {n: d["change"] for n, d in changes.items()} == {"added": "added", "removed": "removed",
                                                            "reshaped": "shape", "changed": "value"}
    assert changes["changed"]["mismatched"] == 3
    assert changes["changed"]["max_abs_diff"] == pytest.approx(0.001, rel=1e-3)
    assert changes["changed"]["max_rel_diff"] == pytest.approx(0.001, rel=1e-3)
    tolerant = run_cli("diff", "--json", "--atol", "0.01", "--filter", "^changed$", tmp_path / "a", tmp_path / "b")
    assert tolerant.exit_code == 0 and tolerant.json()["identical"]
    relative = run_cli("diff", "--json", "--rtol", "0.01", "--filter", "^changed$", tmp_path / "a", tmp_path / "b")
    assert relative.exit_code == 0
    strict = run_cli("diff", "--rtol", "0.0001", "--filter", "^changed$", tmp_path / "a", tmp_path / "b")
    assert strict.exit_code == 1


def test_diff_memory_is_bounded(tmp_path, tf, monkeypatch):
    import tracemalloc

    from ckpttool.ops.tensors.diff import diff_checkpoints

    big = np.arange(4 * 1024 * 1024, dtype=np.float32)  # 16 MiB per side
    for name, values in (("a", big), ("b", big + (np.arange(big.size) == 123).astype(np.float32))):
        tf.raw_ops.SaveV2(prefix=str(tmp_path / name), tensor_names=["w"], shape_and_slices=[""],
                          tensors=[tf.constant(values)])
    tracemalloc.start()
    report = diff_checkpoints(str(tmp_path / "a"), str(tmp_path / "b"))
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [(d.name, d.mismatched) for d in report.differences] == [("w", 1)]
    assert peak < 8 * 1024 * 1024, peak  # far below the 32 MiB both tensors take


def test_diff_renamed_checkpoint_against_source(fixtures_dir, tmp_path):
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    assert run_cli("rename-vars", "--map", "embedding=emb", src, tmp_path / "r").exit_code == 0
    doc = run_cli("diff", "--json", src, tmp_path / "r").json()
    assert {(d["name"], d["change"]) for d in doc["differences"]} == {("embedding", "removed"), ("emb", "added")}


def test_diff_compares_integers_exactly_whatever_the_tolerance(tmp_path, tf):
    """int64 values that float64 cannot tell apart (2**53 vs 2**53 + 1, 2**62 vs 2**62 + 512) differ,
    with or without --atol/--rtol; tolerances still apply to floats."""
    def save(name, big, bigger, weights):
        ckpt = tf.train.Checkpoint(big=tf.Variable(np.int64(big)), bigger=tf.Variable(np.array(bigger, np.int64)),
                                   weights=tf.Variable(np.array(weights, np.float32)))
        return ckpt.write(str(tmp_path / name))

    a = save("a", 2**53, [2**62, -2**62, 5], [1.0, 2.0])
    b = save("b", 2**53 + 1, [2**62 + 512, 2**62, 5], [1.0005, 2.0])
    reader = tf.train.load_checkpoint(b)  # TensorFlow holds the values exactly
    assert int(reader.get_tensor("big/.ATTRIBUTES/VARIABLE_VALUE")) == 2**53 + 1
    for tolerances in ([], ["--atol", "0.01"], ["--rtol", "0.01"], ["--atol", "1000", "--rtol", "1"]):
        result = run_cli("diff", "--json", *tolerances, a, b)
        assert result.exit_code == 1, (tolerances, result.stdout)
        changes = {d["name"]: d for d in result.json()["differences"]}
        assert changes["big/.ATTRIBUTES/VARIABLE_VALUE"]["mismatched"] == 1
        assert changes["big/.ATTRIBUTES/VARIABLE_VALUE"]["max_abs_diff"] == 1
        bigger = changes["bigger/.ATTRIBUTES/VARIABLE_VALUE"]
        assert bigger["mismatched"] == 2
        assert bigger["max_abs_diff"] == 2**63  # -2**62 vs 2**62, exactly: no int64 overflow, no rounding
        assert ("weights/.ATTRIBUTES/VARIABLE_VALUE" in changes) == (not tolerances)
    human = run_cli("diff", "--atol", "0.01", a, b)
    assert human.exit_code == 1 and "bigger/.ATTRIBUTES/VARIABLE_VALUE" in human.stdout
    assert f"max abs {2**63}," in human.stdout  # exact, not 9.22337e+18


@pytest.mark.parametrize("kind", ["tf1", "tf2"])
def test_map_file_lone_surrogate_in_a_new_name_exits_3(fixtures_dir, tmp_path, tf, kind):
    """A JSON map file's "\\udc80" is no character: the new name it makes cannot be written as text
    (a TF2 object graph's keys) and would become byte 0x80 in a bundle's. Refused (exit 3) naming the
    entry, before anything is written (a TF2 checkpoint exited 70)."""
    if kind == "tf1":
        src, old = fixtures_dir / "saver_run" / "model.ckpt-50", "embedding"
    else:
        src = tf.train.Checkpoint(w=tf.Variable(np.ones(3, np.float32))).write(str(tmp_path / "src" / "ck"))
        old = "w/.ATTRIBUTES/VARIABLE_VALUE"
    (tmp_path / "m.json").write_text(json.dumps({old: "x\udc80y"}))
    assert "\\udc80" in (tmp_path / "m.json").read_text()
    result = run_cli("rename-vars", "--map-file", tmp_path / "m.json", src, tmp_path / "out" / "ck")
    assert_one_line_error(result, 3)
    assert repr(old) in result.stderr and "m.json" in result.stderr
    assert not (tmp_path / "out").exists()


def test_undecodable_new_name_of_a_tf2_checkpoint_exits_3(tmp_path, tf):
    """A new name holding bytes that are not UTF-8 (`--map` from a shell, undecodable argv bytes):
    a TF2 object graph stores keys as UTF-8 text, so rename-vars refuses (exit 3) naming it (exit 70)."""
    from tests.conftest import run_subprocess

    src = tf.train.Checkpoint(w=tf.Variable(np.ones(3, np.float32))).write(str(tmp_path / "src" / "ck"))
    mapping = os.fsdecode(b"w/.ATTRIBUTES/VARIABLE_VALUE=x\x80y")
    proc = run_subprocess("rename-vars", "--map", mapping, src, tmp_path / "out" / "ck")
    assert_one_line_error(proc, 3)
    assert "w/.ATTRIBUTES/VARIABLE_VALUE" in proc.stderr
    assert not (tmp_path / "out").exists()
