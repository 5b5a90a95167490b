"""Keras 3 models and a TF1 checkpoint for `convert --like` (tests/test_keras_like.py); Keras and
TensorFlow are the oracles, run here in a subprocess.

`python tests/keras_like_fixtures.py make OUT` writes:
- trained.weights.h5 / trained.keras: a Sequential (Dense, BatchNormalization, Dense) compiled
  with Adam and trained a step; trained.npz: its get_weights(); tf2/ckpt: the same model written by
  tf.train.Checkpoint(model=model) (a TF2 checkpoint, optimizer included);
- template.weights.h5 / template.keras: the same architecture built with another seed, untrained;
- template_float16.weights.h5 / template_bfloat16.weights.h5: that architecture with every weight
  in float16 / bfloat16; trained_float16.npz / trained_bfloat16.npz: the trained weights as Keras
  casts them into it (set_weights; bfloat16 as its uint16 bits);
- tf1/model.ckpt-1: a TF1 Saver checkpoint of `dense/kernel`, `dense/bias`, `dense_1/kernel`,
  `dense_1/bias` (plus global_step and Adam slots, which no Keras weight takes); tf1.npz: those
  four as tf.train.load_checkpoint reads them, in that order; tf1_template.weights.h5: a Keras 3
  Sequential (Dense(3), Dense(2)) of that architecture.
`python tests/keras_like_fixtures.py load KIND FILE OUT.npz`: a fresh model of KIND ("bn",
"bn_float16", "bn_bfloat16" or "tf1") given FILE by model.load_weights (a .keras by keras.saving.load_model), its get_weights().
`python tests/keras_like_fixtures.py serve`: the same for each line `KIND<TAB>FILE<TAB>OUT.npz` read
from stdin, answering each with one line, `@@ok` or `@@error MESSAGE`: one Keras import for a whole
test session instead of one a load (each costs seconds); a KIND of `SCRIPT:KIND` is the `load` of
the fixture script SCRIPT.py beside this one (keras_checkpoints:functional).
"""
from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def build(kind: str):
    if kind.startswith("bn"):  # bn, or bn_float16 / bn_bfloat16: every weight in that dtype
        dtype = kind[3:] or None
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu", dtype=dtype),
                                 keras.layers.BatchNormalization(dtype=dtype), keras.layers.Dense(2, dtype=dtype)])
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])


def write_tf1(out: str) -> None:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        rng = np.random.default_rng(9)
        x = tf.compat.v1.placeholder(tf.float32, (None, 4))
        shapes = {"dense/kernel": (4, 3), "dense/bias": (3,), "dense_1/kernel": (3, 2), "dense_1/bias": (2,)}
        variables = {name: tf.compat.v1.get_variable(name, initializer=rng.standard_normal(shape).astype(np.float32))
                     for name, shape in shapes.items()}
        hidden = tf.nn.relu(tf.matmul(x, variables["dense/kernel"]) + variables["dense/bias"])
        loss = tf.reduce_sum(tf.matmul(hidden, variables["dense_1/kernel"]) + variables["dense_1/bias"])
        step = tf.compat.v1.train.get_or_create_global_step()
        train = tf.compat.v1.train.AdamOptimizer(0.01).minimize(loss, global_step=step)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(train, {x: rng.standard_normal((8, 4)).astype(np.float32)})
            prefix = saver.save(session, os.path.join(out, "tf1", "model.ckpt"), global_step=step)
    reader = tf.train.load_checkpoint(prefix)
    np.savez(os.path.join(out, "tf1.npz"), *[reader.get_tensor(name) for name in shapes])


def make(out: str) -> None:
    keras.utils.set_random_seed(21)
    model = build("bn")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    rng = np.random.default_rng(4)
    model.fit(rng.standard_normal((8, 4)).astype(np.float32), np.ones((8, 2), np.float32), batch_size=8,
              epochs=1, verbose=0)
    model.save_weights(os.path.join(out, "trained.weights.h5"))
    model.save(os.path.join(out, "trained.keras"))
    np.savez(os.path.join(out, "trained.npz"), *model.get_weights())
    import tensorflow as tf

    tf.train.Checkpoint(model=model).write(os.path.join(out, "tf2", "ckpt"))
    keras.utils.set_random_seed(99)
    template = build("bn")
    template.save_weights(os.path.join(out, "template.weights.h5"))
    template.save(os.path.join(out, "template.keras"))
    build("tf1").save_weights(os.path.join(out, "tf1_template.weights.h5"))
    for dtype in ("float16", "bfloat16"):
        # a template whose weights are all `dtype`, and what Keras makes of the trained weights in it
        # (set_weights casts them, rounding to nearest even)
        low = build(f"bn_{dtype}")
        low.save_weights(os.path.join(out, f"template_{dtype}.weights.h5"))
        low.set_weights(model.get_weights())
        np.savez(os.path.join(out, f"trained_{dtype}.npz"), *_savable(low.get_weights()))
    write_tf1(out)


def _savable(arrays) -> list:
    """bfloat16 arrays as their uint16 bits: .npz has no bfloat16."""
    return [a.view(np.uint16) if a.dtype.name == "bfloat16" else a for a in arrays]


def load(kind: str, path: str, out: str) -> None:
    if path.endswith(".keras"):
        model = keras.saving.load_model(path)
    else:
        model = build(kind)
        model.load_weights(path)
    np.savez(out, *_savable(model.get_weights()))


def serve() -> None:
    for line in sys.stdin:
        kind, path, out = line.rstrip("\n").split("\t")
        keras.backend.clear_session()  # each model as in a fresh process: layer names from their first counter
        try:
            if ":" in kind:  # SCRIPT:KIND, the load of another fixture script beside this one
                script, kind = kind.split(":")
                importlib.import_module(script).load(kind, path, out)
            else:
                load(kind, path, out)
            answer = "@@ok"
        except Exception as error:  # noqa: BLE001 - the test that asked shows it
            answer = "@@error " + repr(error).replace("\n", " ")
        print(answer, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "serve":
        serve()
    else:
        load(*sys.argv[2:5])
