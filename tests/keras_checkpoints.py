"""Builds Keras 3 models trained one step and saved with tf.train.CheckpointManager, for the
--drop-optimizer tests (`python tests/keras_checkpoints.py OUT`, run once per session by
test_drop_optimizer.py): a Sequential of Dense layers compiled with Adam, saved as
- with_optimizer/: Checkpoint(model=model, optimizer=model.optimizer), which reaches the model's
  variables first through optimizer/_trainable_variables/N;
- model_only/: Checkpoint(model=model), which reaches the optimizer through model/optimizer;
- renamed/: Checkpoint(net=model, trainer=model.optimizer), an optimizer under another name;
- optimizer_only/: Checkpoint(optimizer=model.optimizer), which reaches the weights through it only.
OUT/weights.npz holds model.get_weights() (arr_0 ...), OUT/manifest.json the model.weights paths."""
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


if __name__ == "__main__":
    main(sys.argv[1])
