"""The same weights written by each format's own library, for the manifest tests (tests/test_manifest.py):

- tf/weights: tf.raw_ops.SaveV2 (TensorFlow's bundle writer) of WEIGHTS, one data shard;
- tf_sharded/weights: the same variables saved by tf.compat.v1's Saver(sharded=True) from two CPU devices
  (two data shards);
- lib.safetensors: safetensors.numpy.save_file of WEIGHTS;
- lib.npz: numpy.savez of WEIGHTS but bfloat16 (numpy has no such dtype: .npz cannot say it is one);
- keras/model.weights.h5: Keras' model.save_weights, and keras/ckpt: tf.train.Checkpoint(model=...).write
  of the same model, so the Keras file and the TF checkpoint hold the same values under other names.

Run as `python tests/manifest_fixtures.py OUT` (conftest.build_fixtures)."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ml_dtypes  # noqa: E402 - ships with TensorFlow
import numpy as np  # noqa: E402

RNG = np.random.default_rng(27)
WEIGHTS = {
    "dense/kernel": RNG.standard_normal((600, 700)).astype(np.float32),  # > 1 MiB: hashed by a worker thread
    "dense/bias": RNG.standard_normal(700).astype(np.float32),
    "embedding": RNG.standard_normal((300, 64)).astype(np.float64),
    "half": np.array([1.0, -0.5, 65504.0, -0.0], np.float16),
    "bf16": np.array([[1.0, -2.5], [0.125, 3.0]], ml_dtypes.bfloat16),
    "flags": np.array([True, False, True]),
    "step": np.int64(1234),
    "counts": np.arange(-5, 5, dtype=np.int32).reshape(2, 5),
    "bytes": np.arange(256, dtype=np.uint8),
    "empty": np.zeros((0, 4), np.float32),
}


def main(out: str) -> None:
    import safetensors.numpy
    import tensorflow as tf

    names = sorted(WEIGHTS)
    os.makedirs(os.path.join(out, "tf"))
    tf.raw_ops.SaveV2(prefix=os.path.join(out, "tf", "weights"), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(WEIGHTS[n]) for n in names])
    os.makedirs(os.path.join(out, "tf_sharded"))
    with tf.Graph().as_default(), tf.compat.v1.Session(config=tf.compat.v1.ConfigProto(device_count={"CPU": 2})) as sess:
        variables = []
        for i, name in enumerate(names):
            with tf.device(f"/cpu:{i % 2}"):
                variables.append(tf.compat.v1.Variable(WEIGHTS[name], name=name))
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver(variables, sharded=True).save(sess, os.path.join(out, "tf_sharded", "weights"),
                                                               write_meta_graph=False, write_state=False)
    safetensors.numpy.save_file({n: np.asarray(v) for n, v in WEIGHTS.items()}, os.path.join(out, "lib.safetensors"))
    np.savez(os.path.join(out, "lib.npz"), **{n: v for n, v in WEIGHTS.items() if v.dtype != ml_dtypes.bfloat16})
    keras_model(os.path.join(out, "keras"))


def keras_model(out: str) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(27)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(4, name="encoder")(inputs)
    x = keras.layers.BatchNormalization(name="norm")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    model(np.ones((1, 5), np.float32))
    os.makedirs(out)
    model.save_weights(os.path.join(out, "model.weights.h5"))
    tf.train.Checkpoint(model=model).write(os.path.join(out, "ckpt"))


if __name__ == "__main__":
    main(sys.argv[1])
