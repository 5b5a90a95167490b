"""A training job for the `watch` tests, paced by its stdin so that the test decides when each
checkpoint is written (never a sleep):

    python tests/watch_writer.py tf OUT      # tf.train.CheckpointManager(max_to_keep=None) in OUT
    python tests/watch_writer.py keras OUT   # model.fit with keras.callbacks.ModelCheckpoint

It prints `ready` once TensorFlow is loaded; then each line `save` on stdin writes the next
checkpoint (TF: step N holds a 2M-element variable all equal to N, saved with
checkpoint_number=N; Keras: one more epoch, after which ModelCheckpoint writes
`w.{epoch:02d}.weights.h5`), and `saved N DIGEST` is printed once it is written (DIGEST: the
SHA-256 of what the checkpoint holds, as the restoring side computes it: tests/test_watch.py).
`quit` (or the end of stdin) ends it.
"""
from __future__ import annotations

import hashlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ELEMENTS = 1 << 21  # 8 MiB of float32 per checkpoint: a save takes long enough to be seen half done


def weights_digest(arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def build_keras_model():
    import keras

    return keras.Sequential([keras.Input((512,)), keras.layers.Dense(512), keras.layers.Dense(4)])


def _commands():
    for line in sys.stdin:
        if line.strip() != "save":
            return
        yield


def write_tf(out: str) -> None:
    import tensorflow as tf

    variable = tf.Variable(tf.zeros([ELEMENTS]))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), out, max_to_keep=None)
    print("ready", flush=True)
    for step, _ in enumerate(_commands(), start=1):
        variable.assign(tf.fill([ELEMENTS], float(step)))
        manager.save(checkpoint_number=step)
        print(f"saved {step} {weights_digest([variable.numpy()])}", flush=True)


def write_keras(out: str) -> None:
    import keras

    model = build_keras_model()
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 512)).astype("float32"), rng.normal(size=(64, 4)).astype("float32")
    commands = _commands()

    class Pace(keras.callbacks.Callback):
        """Before ModelCheckpoint saves epoch N: wait for the test's `save` (stop at `quit`)."""

        def on_epoch_end(self, epoch, logs=None):
            if next(commands, "quit") == "quit":
                self.model.stop_training = True
                raise SystemExit(0)

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"saved {epoch + 1} {weights_digest(self.model.get_weights())}", flush=True)

    print("ready", flush=True)
    save = keras.callbacks.ModelCheckpoint(os.path.join(out, "w.{epoch:02d}.weights.h5"), save_weights_only=True)
    model.fit(x, y, epochs=1000, batch_size=64, verbose=0, callbacks=[Pace(), save, Report()])


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    (write_tf if kind == "tf" else write_keras)(out)
