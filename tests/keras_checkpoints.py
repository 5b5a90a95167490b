"""Builds Keras 3 models trained one step and saved with tf.train.CheckpointManager, for the
--drop-optimizer tests (`python tests/keras_checkpoints.py OUT`, run once per session by
test_drop_optimizer.py): a Sequential of Dense layers compiled with Adam, saved as
- with_optimizer/: Checkpoint(model=model, optimizer=model.optimizer), which reaches the model's
  variables first through optimizer/_trainable_variables/N;
- model_only/: Checkpoint(model=model), which reaches the optimizer through model/optimizer;
- renamed/: Checkpoint(net=model, trainer=model.optimizer), an optimizer under another name;
- optimizer_only/: Checkpoint(optimizer=model.optimizer), which reaches the weights through it only.
OUT/weights.npz holds model.get_weights() (arr_0 ...), OUT/manifest.json the model.weights paths.

For --names model, OUT/models/<kind>/ for kind in sequential, functional (with BatchNormalization:
weights no optimizer trains) and subclassed (its own add_weight), each trained and saved twice by
one CheckpointManager run (run/ckpt-1, run/ckpt-2, with Checkpoint(model=..., optimizer=...)) and
once as model_only/ (Checkpoint(model=...)) at the end. Its weights.npz holds get_weights() after
the second save, template.weights.h5 an untrained model of the kind (for --like; `python
tests/keras_checkpoints.py load KIND FILE OUT.npz` gives a fresh model's get_weights() after
load_weights(FILE)), momentums.npz Adam's m of each trainable variable, manifest.json each weight's path
through the model ("model/" + the names TensorFlow's tf.train.TrackableView gives on the least of
the shortest paths that enter no optimizer) and the trainable ones' indexes in model.weights."""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def build_model():
    """The architecture the tests restore into (uncompiled)."""
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])


def build_functional():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="relu")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.encoder = keras.layers.Dense(3, activation="relu")
        self.head = keras.layers.Dense(2)
        self.scale = self.add_weight(shape=(2,), initializer="ones", name="scale")

    def call(self, x):
        return self.head(self.encoder(x)) * self.scale


BUILDERS = {"sequential": build_model, "functional": build_functional, "subclassed": Subclassed}


def model_paths(model) -> dict[int, str]:
    """id(variable) -> its path from Checkpoint(model=model), found on the live objects with
    TensorFlow's TrackableView: shortest, least by names among the shortest, entering no optimizer."""
    view = tf.train.TrackableView(model)
    best = {id(model): ("model",)}
    level = [model]
    found = {}
    while level:
        candidates = {}
        for parent in level:
            for name, child in view.children(parent).items():
                if isinstance(child, keras.optimizers.Optimizer) or id(child) in best:
                    continue
                path = best[id(parent)] + (name,)
                if id(child) not in candidates or path < candidates[id(child)][0]:
                    candidates[id(child)] = (path, child)
        level = []
        for key, (path, child) in candidates.items():
            best[key] = path
            level.append(child)
            found[key] = "/".join(path)
    return found


def save_models(out: str) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal((16, 2)).astype(np.float32)
    for kind, builder in BUILDERS.items():
        keras.utils.set_random_seed(3)
        model = builder()
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        root = os.path.join(out, "models", kind)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=model.optimizer),
                                             os.path.join(root, "run"), max_to_keep=2)
        for _ in range(2):
            model.fit(x, y, batch_size=8, epochs=1, verbose=0)
            manager.save()
        tf.train.CheckpointManager(tf.train.Checkpoint(model=model), os.path.join(root, "model_only"),
                                   max_to_keep=1).save()
        paths = model_paths(model)
        np.savez(os.path.join(root, "weights.npz"), *model.get_weights())
        keras.utils.set_random_seed(99)  # a template for --like: the architecture, other values
        fresh(kind).save_weights(os.path.join(root, "template.weights.h5"))
        trainable = [next(i for i, w in enumerate(model.weights) if w is t) for t in model.trainable_variables]
        optimizer = model.optimizer
        np.savez(os.path.join(root, "momentums.npz"),
                 *[optimizer._momentums[optimizer._get_variable_index(t)].numpy()  # noqa: SLF001 - the oracle
                   for t in model.trainable_variables])
        with open(os.path.join(root, "manifest.json"), "w") as handle:
            json.dump({"paths": [paths[id(w)] for w in model.weights], "trainable": trainable}, handle)


def fresh(kind: str):
    """An untrained model of KIND, built (a subclassed model creates its weights on its first call)."""
    model = BUILDERS[kind]()
    if kind == "subclassed":
        model(np.zeros((1, 4), np.float32))
    return model


def load(kind: str, path: str, out: str) -> None:
    """get_weights() of a fresh model of KIND after Keras' load_weights(path), into OUT.npz."""
    model = fresh(kind)
    model.load_weights(path)
    np.savez(out, *model.get_weights())


def main(out: str) -> None:
    keras.utils.set_random_seed(11)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    rng = np.random.default_rng(5)
    model.fit(rng.standard_normal((8, 4)).astype(np.float32), np.ones((8, 2), np.float32), batch_size=8,
              epochs=1, verbose=0)
    for name, checkpoint in (("with_optimizer", tf.train.Checkpoint(model=model, optimizer=model.optimizer)),
                             ("model_only", tf.train.Checkpoint(model=model)),
                             ("renamed", tf.train.Checkpoint(net=model, trainer=model.optimizer)),
                             ("optimizer_only", tf.train.Checkpoint(optimizer=model.optimizer))):
        tf.train.CheckpointManager(checkpoint, os.path.join(out, name), max_to_keep=1).save()
    np.savez(os.path.join(out, "weights.npz"), *model.get_weights())
    with open(os.path.join(out, "manifest.json"), "w") as handle:
        json.dump({"weights": [w.path for w in model.weights],
                   "iterations": int(model.optimizer.iterations.numpy())}, handle)
    save_models(out)


if __name__ == "__main__":
    if sys.argv[1] == "load":
        load(*sys.argv[2:5])
    else:
        main(sys.argv[1])
