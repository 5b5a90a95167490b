"""Builds the test fixtures: real checkpoints written by TensorFlow.

Run as a script (`python tests/tf_fixtures.py OUT`) so that TensorFlow's
device setup (two logical CPUs, for a sharded save) happens in a fresh
process; conftest.py runs it once per test session. Each builder writes one
directory under OUT and returns a note for manifest.json.
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)
v1 = tf.compat.v1
RNG = np.random.default_rng(1234)


def _graph_session(build):
    """Build a TF1 graph with `build(sess)`, run it in a session."""
    graph = tf.Graph()
    with graph.as_default():
        result = build()
        with v1.Session(graph=graph, config=v1.ConfigProto(device_count={"CPU": 2})) as sess:
            sess.run(v1.global_variables_initializer())
            return result(sess)


def saver_run(out):
    """TF1 Saver with global_step and max_to_keep=3: five saves, three kept, absolute paths."""
    def build():
        step = v1.train.get_or_create_global_step()
        kernel = v1.get_variable("dense/kernel", initializer=RNG.standard_normal((4, 3)).astype(np.float32))
        bias = v1.get_variable("dense/bias", initializer=np.zeros(3, np.float32))
        emb = v1.get_variable("embedding", initializer=RNG.standard_normal((10, 4)).astype(np.float32))
        count = v1.get_variable("counter", initializer=np.int64(7))
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        v1.identity(tf.matmul(x, kernel) + bias, name="output")
        bump = [v1.assign_add(kernel, tf.ones_like(kernel)), v1.assign_add(step, 10), v1.assign_add(count, 1)]
        saver = v1.train.Saver(max_to_keep=3)

        def run(sess):
            for _ in range(5):
                sess.run(bump)
                saver.save(sess, os.path.join(out, "model.ckpt"), global_step=step)
                time.sleep(0.02)
            return {"kept": ["model.ckpt-30", "model.ckpt-40", "model.ckpt-50"], "_": emb.name}
        return run
    return _graph_session(build)


def sharded(out):
    """Saver(sharded=True) with variables on two CPU devices: two data shards."""
    def build():
        with tf.device("/cpu:0"):
            a = v1.get_variable("a", initializer=RNG.standard_normal((5, 5)).astype(np.float32))
        with tf.device("/cpu:1"):
            b = v1.get_variable("b", initializer=np.arange(6, dtype=np.int32))
            c = v1.get_variable("c/d", initializer=np.float64(3.5))
        saver = v1.train.Saver(sharded=True)

        def run(sess):
            saver.save(sess, os.path.join(out, "model.ckpt"), global_step=1)
            return {"vars": [a.op.name, b.op.name, c.op.name]}
        return run
    return _graph_session(build)


def partitioned(out):
    """Partitioned variables (fixed_size_partitioner) saved by a TF1 Saver."""
    def build():
        v1.get_variable("scope/part", shape=(7, 2), partitioner=v1.fixed_size_partitioner(3),
                        initializer=v1.random_normal_initializer(seed=1))
        v1.get_variable("cols", shape=(3, 10), dtype=tf.float32, initializer=v1.random_normal_initializer(),
                        partitioner=v1.fixed_size_partitioner(2, axis=1))
        v1.get_variable("plain", initializer=np.arange(4, dtype=np.float32))
        saver = v1.train.Saver()

        def run(sess):
            saver.save(sess, os.path.join(out, "model.ckpt"), global_step=5)
            return {}
        return run
    return _graph_session(build)


def _every_dtype_tensors():
    tensors = {
        "f32": np.array([[1.5, -2.0, np.nan], [np.inf, -np.inf, 0.0]], np.float32),
        "f64": np.linspace(-1, 1, 7),
        "i32": np.array([-(2**31), 0, 2**31 - 1], np.int32),
        "u8": np.arange(0, 256, 17, dtype=np.uint8),
        "i16": np.array([-32768, 1, 32767], np.int16),
        "i8": np.array([-128, 5, 127], np.int8),
        "i64": np.array([-5, 2**62], np.int64),
        "u16": np.array([0, 65535], np.uint16),
        "u32": np.array([0, 2**32 - 1], np.uint32),
        "u64": np.array([0, 2**64 - 1], np.uint64),
        "bool": np.array([[True, False], [False, True]]),
        "c64": np.array([1 + 2j, -3.5j], np.complex64),
        "c128": np.array([[1e300 + 1j]], np.complex128),
        "half": np.array([1.0, -0.5, 65504.0], np.float16),
        "scalar_f32": np.float32(3.25),
        "scalar_i64": np.int64(-9),
        "empty_f32": np.zeros((0, 3), np.float32),
        "empty_str": np.array([], dtype=object),
        "strings": np.array([b"hello", b"", b"x" * 200, "caf\u00e9".encode(), b"\xff\xfe\x00"], dtype=object),
        "long_string": np.array([b"y" * 17920]),
        "scalar_string": b"scalar-string",
        "weird[name]/with.dots": np.ones((2, 2), np.float32),
        "big/matrix": RNG.standard_normal((300, 200)).astype(np.float32),
    }
    converted = {name: tf.constant(value) for name, value in tensors.items()}
    import ml_dtypes  # ships with TensorFlow; builds tensors of the types numpy lacks

    for name in ["bfloat16", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz",
                 "float8_e5m2fnuz", "float4_e2m1fn", "int4", "uint4", "int2", "uint2"]:
        if name.startswith("uint"):
            values = [1, 2, 0, 3, 1]
        elif name.startswith("int"):
            values = [1, -2, 1, 0, -1]
        else:
            values = [1.0, -2.0, 0.5, 0.0, 3.0]
        converted[name] = tf.constant(np.array(values, dtype=getattr(ml_dtypes, name)).reshape(5, 1))
    for qname, base in [("qint8", np.int8), ("quint8", np.uint8), ("qint32", np.int32),
                        ("qint16", np.int16), ("quint16", np.uint16)]:
        try:
            converted[qname] = tf.bitcast(tf.constant(np.array([1, 2, 3], base)), getattr(tf, qname))
        except Exception as exc:
            print(f"skipping dtype {qname}: {exc}", file=sys.stderr)
    return converted


def every_dtype(out):
    """Raw SaveV2 of one tensor per dtype, plus scalars, empties and awkward strings."""
    tensors = _every_dtype_tensors()
    names = sorted(tensors)
    prefix = os.path.join(out, "dtypes")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tensors[n] for n in names])
    return {"prefix": "dtypes", "dtypes": sorted({t.dtype.name for t in tensors.values()})}


def many_vars(out):
    """12000 small tensors: an index with more than one data block."""
    names = [f"layer_{i:05d}/weights" for i in range(12000)]
    values = [tf.constant(np.full((3,), i, np.float32)) for i in range(len(names))]
    tf.raw_ops.SaveV2(prefix=os.path.join(out, "many"), tensor_names=names,
                      shape_and_slices=[""] * len(names), tensors=values)
    return {"prefix": "many", "count": len(names)}


class _Dense(tf.Module):
    def __init__(self, n_in, n_out, name=None):
        super().__init__(name=name)
        self.kernel = tf.Variable(RNG.standard_normal((n_in, n_out)).astype(np.float32), name="kernel")
        self.bias = tf.Variable(np.zeros(n_out, np.float32), name="bias")

    def __call__(self, x):
        return tf.matmul(x, self.kernel) + self.bias


class _Model(tf.Module):
    def __init__(self):
        super().__init__()
        self.dense1 = _Dense(4, 3)
        self.dense2 = _Dense(3, 2)
        setattr(self, "we.ird/name", tf.Variable([1.0, 2.0], name="weird"))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def __call__(self, x):
        return self.dense2(tf.nn.relu(self.dense1(x)))


def tf2_manager(out):
    """tf.train.CheckpointManager(max_to_keep=2) over three saves, with optimizer slots."""
    model = _Model()
    optimizer = tf.keras.optimizers.Adam(0.1)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(ckpt, out, max_to_keep=2)
    x = tf.constant(RNG.standard_normal((8, 4)).astype(np.float32))
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        manager.save()
        time.sleep(0.02)
    return {"kept": ["ckpt-2", "ckpt-3"]}


def max_shard(out):
    """TF2 save with MaxShardSizePolicy: a variable split into slices across shards."""
    module = tf.Module()
    module.big = tf.Variable(RNG.standard_normal((40, 30)).astype(np.float32))
    module.small = tf.Variable(np.arange(10, dtype=np.int64))
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=2000)
    options = tf.train.CheckpointOptions(experimental_sharding_callback=policy)
    path = tf.train.Checkpoint(module=module).write(os.path.join(out, "sharded"), options=options)
    return {"prefix": os.path.basename(path)}


def tf1_saved_model(out):
    """SavedModelBuilder with a custom tag and a predict signature."""
    export = os.path.join(out, "model")
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        w = v1.get_variable("w", initializer=RNG.standard_normal((3, 2)).astype(np.float32))
        b = v1.get_variable("b", initializer=np.ones(2, np.float32))
        y = tf.add(tf.matmul(x, w), b, name="y")
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(export)
        signature = v1.saved_model.predict_signature_def({"x": x}, {"y": y})
        builder.add_meta_graph_and_variables(sess, ["custom_tag"], signature_def_map={"predict": signature})
        builder.save()
    return {"tags": ["custom_tag"]}


def tf2_saved_model(out):
    """tf.saved_model.save of a tf.Module with a serving signature."""
    model = _Model()
    export = os.path.join(out, "model")
    tf.saved_model.save(model, export, signatures=model.__call__)
    return {}


def v1_format(out):
    """A TF1 Saver writing the old V1 single-file format, one variable partitioned."""
    def build():
        v1.get_variable("plain", initializer=RNG.standard_normal((3, 4)).astype(np.float32))
        v1.get_variable("ints", initializer=np.arange(5, dtype=np.int64))
        v1.get_variable("scalar", initializer=np.float64(2.5))
        v1.get_variable("sliced", shape=(6, 2), partitioner=v1.fixed_size_partitioner(2),
                        initializer=v1.random_normal_initializer(seed=2))
        saver = v1.train.Saver(write_version=v1.train.SaverDef.V1)

        def run(sess):
            saver.save(sess, os.path.join(out, "model.ckpt"), global_step=3)
            return {"prefix": "model.ckpt-3"}
        return run
    return _graph_session(build)


def ema_run(out):
    """A Saver checkpoint with ExponentialMovingAverage shadows and a training op."""
    def build():
        step = v1.train.get_or_create_global_step()
        x = v1.placeholder(tf.float32, [None, 2], name="x")
        w = v1.get_variable("w", initializer=np.array([[1.0], [2.0]], np.float32))
        b = v1.get_variable("b", initializer=np.zeros(1, np.float32))
        out_tensor = tf.add(tf.matmul(x, w), b, name="prediction")
        loss = tf.reduce_mean(tf.square(out_tensor))
        v1.summary.scalar("loss", loss)
        train = v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=step)
        ema = v1.train.ExponentialMovingAverage(0.5)
        with tf.control_dependencies([train]):
            train_op = ema.apply([w, b])
        saver = v1.train.Saver()

        def run(sess):
            feed = {x: RNG.standard_normal((4, 2)).astype(np.float32)}
            for _ in range(3):
                sess.run(train_op, feed)
            saver.save(sess, os.path.join(out, "model.ckpt"), global_step=step)
            return {"shadow": ema.average_name(w)}
        return run
    return _graph_session(build)


def prune_run(out):
    """Saver keeping everything: model.ckpt-100 .. -1000 (relative paths), plus a
    second family best.ckpt-300/-700 tracked in its own state file."""
    def build():
        step = v1.train.get_or_create_global_step()
        w = v1.get_variable("w", initializer=np.zeros((4, 4), np.float32))
        bump = [v1.assign_add(step, 100), v1.assign_add(w, tf.ones_like(w))]
        saver = v1.train.Saver(max_to_keep=100, save_relative_paths=True)
        best = v1.train.Saver(max_to_keep=5, save_relative_paths=True)

        def run(sess):
            for _ in range(10):
                value = sess.run(bump)[0]
                saver.save(sess, os.path.join(out, "model.ckpt"), global_step=step)
                if value in (300, 700):
                    best.save(sess, os.path.join(out, "best.ckpt"), global_step=step,
                              latest_filename="best_checkpoint", write_meta_graph=False)
            return {"steps": list(range(100, 1001, 100))}
        return run
    return _graph_session(build)


def tf2_many(out):
    """tf.train.CheckpointManager(max_to_keep=10) after six saves."""
    module = tf.Module()
    module.v = tf.Variable(np.zeros(3, np.float32))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(module=module), out, max_to_keep=10)
    for _ in range(6):
        module.v.assign_add(np.ones(3, np.float32))
        manager.save()
    return {"kept": [f"ckpt-{i}" for i in range(1, 7)]}


def classic(out):
    """The classic freeze example: placeholder x, variables v1 and v2, op = (x + v1) * v2."""
    def build():
        step = v1.train.get_or_create_global_step()
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        a = v1.get_variable("v1", initializer=np.array([1.0, 2.0, 3.0], np.float32))
        b = v1.get_variable("v2", initializer=np.array([0.5, -1.0, 2.0], np.float32))
        tf.multiply(x + a, b, name="op")
        bump = v1.assign_add(step, 1)
        saver = v1.train.Saver()

        def run(sess):
            sess.run(bump)
            saver.save(sess, os.path.join(out, "model.ckpt"), global_step=step)
            return {"prefix": "model.ckpt-1"}
        return run
    return _graph_session(build)


def iterator_state(out):
    """A tf.data iterator saved mid-way: a DT_VARIANT tensor (ITERATOR_STATE)."""
    iterator = iter(tf.data.Dataset.range(10).batch(3))
    next(iterator)
    path = tf.train.Checkpoint(it=iterator).write(os.path.join(out, "ckpt"))
    return {"prefix": os.path.basename(path), "next": next(iterator).numpy().tolist()}


def _tf1_export(export, build, tags=("serve",), session_config=None):
    """A TF1 SavedModelBuilder export of the graph `build()` makes; build returns (inputs, outputs) dicts."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph, config=session_config) as sess:
        inputs, outputs = build()
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(export)
        signature = v1.saved_model.predict_signature_def(inputs, outputs)
        builder.add_meta_graph_and_variables(sess, list(tags), signature_def_map={"serving_default": signature})
        builder.save()


def graph_only_saved_model(out):
    """A SavedModel without variables, as TF-Transform's transform_fn or a small serving model: constants
    and a placeholder only. The builder leaves an empty variables/ folder, which a git checkout of such a
    model lacks: it is removed (TensorFlow's loaders load the result)."""
    export = os.path.join(out, "model")

    def build():
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        return {"x": x}, {"y": tf.add(x * 2.0, tf.constant([1.0, -2.0, 0.5]), name="y")}
    _tf1_export(export, build)
    os.rmdir(os.path.join(export, "variables"))
    return {}


def gpu_saved_model(out):
    """A TF1 SavedModel whose variable and ops are placed on /device:GPU:0, as exported from a GPU
    trainer (written here under allow_soft_placement; the placements stay in the graph)."""
    export = os.path.join(out, "model")

    def build():
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        with tf.device("/device:GPU:0"):
            w = v1.get_variable("w", initializer=RNG.standard_normal((3, 2)).astype(np.float32))
            y = tf.nn.relu(tf.matmul(x, w), name="y")
        return {"x": x}, {"y": y}
    _tf1_export(export, build, session_config=v1.ConfigProto(allow_soft_placement=True))
    return {}


def keras_legacy_saved_model(out):
    """A TF2 SavedModel shaped like Keras' of TF 2.0-2.4 with a compiled optimizer: an object of revived
    type "optimizer" (version 1, as OptimizerV2 registered it) whose slot variables m/v are referenced
    only through `slot_variables`. TensorFlow 2.21 without tf_keras cannot revive that optimizer:
    tf.saved_model.load fails with "'_UserObject' object has no attribute 'add_slot'" as on such files.
    Written with tf.saved_model.save, then saved_model.pb edited with TensorFlow's protos."""
    from tensorflow.core.protobuf import saved_model_pb2

    class Layer(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(RNG.standard_normal((3, 2)).astype(np.float32), name="kernel")
            self.bias = tf.Variable(RNG.standard_normal(2).astype(np.float32), name="bias")

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.dense = Layer()
            self.optimizer = tf.Module()
            self.optimizer.iter = tf.Variable(np.int64(40), name="iter")
            self.optimizer.learning_rate = tf.Variable(np.float32(0.001), name="learning_rate")
            for var in ("kernel", "bias"):
                for slot in ("m", "v"):
                    value = getattr(self.dense, var) * 0 + RNG.uniform(0, 1)
                    setattr(self.optimizer, f"{var}_{slot}", tf.Variable(value, name=f"{var}/{slot}"))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"out": tf.nn.sigmoid(tf.matmul(x, self.dense.kernel) + self.dense.bias)}

    model = Model()
    export = os.path.join(out, "model")
    tf.saved_model.save(model, export, signatures=model.serve)
    path = os.path.join(export, "saved_model.pb")
    saved = saved_model_pb2.SavedModel.FromString(open(path, "rb").read())
    nodes = saved.meta_graphs[0].object_graph_def.nodes

    def child(node_id, name):
        return next(ref.node_id for ref in nodes[node_id].children if ref.local_name == name)
    optimizer = nodes[child(0, "optimizer")]
    optimizer.user_object.identifier = "optimizer"
    optimizer.user_object.version.producer = optimizer.user_object.version.min_consumer = 1
    nodes[0].user_object.identifier = "_tf_keras_model"
    nodes[child(0, "dense")].user_object.identifier = "_tf_keras_layer"
    slots = [ref for ref in optimizer.children if "_" in ref.local_name and ref.local_name != "learning_rate"]
    for ref in slots:
        var, slot = ref.local_name.split("_")
        optimizer.slot_variables.add(original_variable_node_id=child(child(0, "dense"), var), slot_name=slot,
                                     slot_variable_node_id=ref.node_id)
    for ref in slots:
        optimizer.children.remove(ref)
    open(path, "wb").write(saved.SerializeToString())
    return {"slots": len(slots)}


def keras3(out):
    """A Keras 3 model (TF 2.21's Keras) trained one step with Adam, saved with
    save_weights('m.weights.h5') and save('m.keras'); expected.npz holds each
    variable under its HDF5 path as Keras' own saving walk names it, and
    get_weights.npz the values of model.get_weights()."""
    import keras
    from keras.src.saving import saving_lib

    keras.utils.set_random_seed(7)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="encoder")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(2, dtype="bfloat16")], name="head")(x)
    model = keras.Model(inputs, keras.ops.cast(x, "float32"))
    model.compile(optimizer="adam", loss="mse")
    model.fit(RNG.standard_normal((8, 4)).astype(np.float32), np.ones((8, 2), np.float32), verbose=0)
    model.save_weights(os.path.join(out, "m.weights.h5"))
    model.save(os.path.join(out, "m.keras"))

    class Recorder(saving_lib.H5IOStore):  # Keras' saving walk, recording instead of writing
        def __init__(self):
            self.values = {}

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            values, group = self.values, f"{path}/vars" if path else "vars"

            class Entry(dict):
                def __setitem__(self, key, value):
                    values[f"{group}/{key}"] = keras.ops.convert_to_numpy(value)
            return Entry()

    recorder = Recorder()
    saving_lib._save_state(model, recorder, None, "", set())
    as_float = {k: v.astype(np.float32) if v.dtype.name == "bfloat16" else v for k, v in recorder.values.items()}
    np.savez(os.path.join(out, "expected.npz"), **as_float)
    weights = [w.astype(np.float32) if w.dtype.name == "bfloat16" else w for w in model.get_weights()]
    np.savez(os.path.join(out, "get_weights.npz"), *weights)
    return {"bfloat16": [k for k, v in recorder.values.items() if v.dtype.name == "bfloat16"]}


def v1_layouts(out):
    """V1 checkpoints as people have them, written by TF 2.21's Saver(write_version=V1):
    bare/model.ckpt with no .meta and no state file; sharded/ with two sharded saves
    (model.ckpt-N-0000i-of-00002 + model.ckpt-N.meta, the state file holding the pattern);
    export/ a session-bundle-like sharded save (export-0000i-of-00002 + export.meta, no state
    file); tf07/ a bare file whose state file names `save/model.ckpt`, relative to the working
    directory of the job that wrote it (as TF 0.x did)."""
    def build():
        with tf.device("/cpu:0"):
            a = v1.get_variable("a", initializer=np.arange(6, dtype=np.float32).reshape(2, 3))
        with tf.device("/cpu:1"):
            b = v1.get_variable("b/c", initializer=np.int64(7))
        step = v1.train.get_or_create_global_step()
        bump = [v1.assign_add(a, tf.ones_like(a)), v1.assign_add(step, 1)]

        def run(sess):
            for name in ("bare", "sharded", "export", "tf07"):
                os.makedirs(os.path.join(out, name))
            plain = v1.train.Saver([a, b], write_version=v1.train.SaverDef.V1)
            plain.save(sess, os.path.join(out, "bare", "model.ckpt"), write_meta_graph=False, write_state=False)
            plain.save(sess, os.path.join(out, "tf07", "model.ckpt"), write_meta_graph=False, write_state=False)
            with open(os.path.join(out, "tf07", "checkpoint"), "w") as handle:
                handle.write('model_checkpoint_path: "save/model.ckpt"\nall_model_checkpoint_paths: "save/model.ckpt"\n')
            sharded_saver = v1.train.Saver(write_version=v1.train.SaverDef.V1, sharded=True)
            for _ in range(2):
                sess.run(bump)
                sharded_saver.save(sess, os.path.join(out, "sharded", "model.ckpt"), global_step=step)
                time.sleep(0.02)
            v1.train.Saver([a, b], write_version=v1.train.SaverDef.V1, sharded=True).save(
                sess, os.path.join(out, "export", "export"), write_state=False)
            return {"sharded_latest": "model.ckpt-2-?????-of-00002"}
        return run
    return _graph_session(build)


BUILDERS = [iterator_state, classic, prune_run, tf2_many, saver_run, sharded, partitioned, every_dtype, many_vars, tf2_manager, max_shard,
            tf1_saved_model, tf2_saved_model, v1_format, ema_run,
            graph_only_saved_model, gpu_saved_model, keras_legacy_saved_model, keras3, v1_layouts]


def build_all(root: str) -> dict:
    manifest = {}
    for builder in BUILDERS:
        out = os.path.join(root, builder.__name__)
        os.makedirs(out, exist_ok=True)
        manifest[builder.__name__] = builder(out) or {}
    with open(os.path.join(root, "manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=1)
    return manifest


if __name__ == "__main__":
    build_all(sys.argv[1])
