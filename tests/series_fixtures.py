"""Builds what training runs leave besides TF prefixes, with TensorFlow and Keras: TensorBoard event
files (for the TF-free event reader and retention by quality) and checkpoint series (Keras
ModelCheckpoint files, SavedModel export versions).

Run as a script (`python tests/series_fixtures.py OUT`); the tests run it once per session. Each
layout is a directory under OUT:
- tf2/: `tf.summary.scalar` (float32 and float64 values), a histogram, an image, text, under
  `tf.summary.create_file_writer`, steps 0..9 (a tag `loss`, another `acc`);
- tf1/: `tf.compat.v1.summary.FileWriter` with simple_value scalars, and merged summaries holding
  a 1.5 MiB image beside two scalars (records large enough to be streamed);
- keras/: a Keras 3 model fitted 4 epochs with the TensorBoard callback (`train/`, `validation/`,
  `epoch_*` tags), a CSVLogger file and ModelCheckpoint files named from a template;
- restart/: two files of one run, the second rewriting steps 5..9 with other values;
- export/: SavedModel versions 1, 2, 3 of a tf.Module (`tf.saved_model.save`), as TF Serving's
  model_base_path holds them, and an exporter's leftover `temp-4/`;
- kinds/: what a file's bytes must tell apart (issue 24): models/ (ModelCheckpoint's whole models,
  `m-{epoch}.keras`), legacy/ (`model.save("legacy-N.h5")`, Keras' legacy HDF5), data/ (plain HDF5
  written with h5py, named like members: `eval_predictions_2022.h5` ..., one with
  libver="latest" and more links than fit in its root's header), unclosed/ (`w.05.weights.h5`,
  a save_weights whose process died before HDF5 closed the file);
- fleet/: a tree of run directories (issue 26: `ls -r --summary`, `prune -r --budget`,
  `--drop-failed-runs`):
  - tf_failed/: a TF2 job that died right after its start-up save: CheckpointManager's ckpt-0 (and
    its state file), a summary writer's event file in train/ holding a step-0 scalar;
  - keras_failed/: a Keras fit that raised before its first batch ended, with the TensorBoard
    callback (logs/) and a ModelCheckpoint that never saved;
  - hf_failed/: what an HF Trainer leaves when it fails before its first step: its TensorBoard
    writer's runs/<date>_<host>/ event file, the run's arguments as text at step 0;
  - tf_started/: ckpt-0 only, but an event file logging step 50: a job that trained (not failed);
  - run_a/, run_b/: TF2 CheckpointManager saves at steps 100..400 and 100..300 with a `loss` scalar
    at each step in the run directory's event file (FLEET_LOSS; run_a's best is not its latest);
  - keras_run/: ModelCheckpoint weights files of 3 epochs (`w.{epoch:02d}.weights.h5`).
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
RNG = np.random.default_rng(7)


def tf2(out):
    writer = tf.summary.create_file_writer(out)
    with writer.as_default():
        for step in range(10):
            tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
            tf.summary.scalar("acc", tf.constant(step / 10.0, tf.float64), step=step)
            tf.summary.histogram("weights", RNG.standard_normal(100), step=step)
            if step % 3 == 0:
                tf.summary.image("picture", RNG.random((1, 8, 8, 3)), step=step)
                tf.summary.text("note", f"step {step}", step=step)
    writer.close()


def tf1(out):
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.uint8, [1, 700, 700, 3])
        loss = tf.compat.v1.placeholder(tf.float32, [])
        merged = tf.compat.v1.summary.merge([
            tf.compat.v1.summary.image("big", image),
            tf.compat.v1.summary.scalar("merged_loss", loss),
            tf.compat.v1.summary.scalar("merged_twice", loss * 2),
        ])
        writer = tf.compat.v1.summary.FileWriter(out, graph)
        with tf.compat.v1.Session() as sess:
            for step in range(6):
                value = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag="val_loss",
                                                                               simple_value=0.5 + step * 0.25 % 1)])
                writer.add_summary(value, step * 100)
                if step % 2 == 0:
                    pixels = RNG.integers(0, 255, (1, 700, 700, 3), dtype=np.uint8)
                    writer.add_summary(sess.run(merged, {image: pixels, loss: 0.1 * step}), step * 100)
        writer.close()


def keras(out):
    import keras

    x = RNG.standard_normal((64, 4)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, validation_split=0.25, epochs=4, verbose=0, callbacks=[
        keras.callbacks.TensorBoard(os.path.join(out, "logs")),
        keras.callbacks.CSVLogger(os.path.join(out, "log.csv")),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "ckpt", "w.{epoch:02d}-{val_loss:.2f}.weights.h5"),
                                        save_weights_only=True),
    ])
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in history.history.items()}, f)


def restart(out):
    for offset, steps in ((0.0, range(10)), (100.0, range(5, 10))):
        writer = tf.summary.create_file_writer(out, filename_suffix=f".part{int(offset)}")
        with writer.as_default():
            for step in steps:
                tf.summary.scalar("loss", offset + step, step=step)
        writer.close()


def export(out):
    class Scale(tf.Module):
        def __init__(self, factor):
            self.factor = tf.Variable(factor)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return x * self.factor

    for version in (1, 2, 3):
        tf.saved_model.save(Scale(float(version)), os.path.join(out, str(version)))
    os.makedirs(os.path.join(out, "temp-4", "variables"))
    with open(os.path.join(out, "temp-4", "saved_model.pb"), "wb") as f:
        f.write(b"partial")


def _fitted_model():
    import keras

    x = RNG.standard_normal((32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model, x


def _die_before_hdf5_closes(path: str) -> None:
    """save_weights in a child process that exits (as a killed job does) when Keras closes the file."""
    import subprocess

    code = (f"import os, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
            "import h5py, series_fixtures\n"
            "h5py.File.close = lambda self: os._exit(0)\n"
            "model, x = series_fixtures._fitted_model()\n"
            "model.fit(x, x[:, :1], epochs=1, verbose=0)\n"
            f"model.save_weights({path!r})\n"
            "os._exit(3)\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def kinds(out):
    import h5py
    import keras

    model, x = _fitted_model()
    os.makedirs(os.path.join(out, "models"))
    model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(os.path.join(out, "models", "m-{epoch}.keras"))])
    os.makedirs(os.path.join(out, "legacy"))
    for step in (1, 2, 3):
        model.fit(x, x[:, :1], epochs=1, verbose=0)
        model.save(os.path.join(out, "legacy", f"legacy-{step}.h5"))
    os.makedirs(os.path.join(out, "data"))
    for year in (2022, 2023, 2024):
        with h5py.File(os.path.join(out, "data", f"eval_predictions_{year}.h5"), "w") as f:
            f["predictions"] = RNG.standard_normal(100)
            f["labels"] = RNG.integers(0, 2, 100)
            f.attrs["year"] = year
    with h5py.File(os.path.join(out, "data", "scores-2025.h5"), "w", libver="latest") as f:
        for i in range(12):  # more than 8 links: the root's links move to a fractal heap
            f[f"run{i}"] = RNG.standard_normal(4)
    os.makedirs(os.path.join(out, "unclosed"))
    _die_before_hdf5_closes(os.path.join(out, "unclosed", "w.05.weights.h5"))


FLEET_LOSS = {"run_a": {100: 0.9, 200: 0.2, 300: 0.5, 400: 0.4}, "run_b": {100: 0.8, 200: 0.7, 300: 0.6}}


def _manager(directory: str, steps, losses=None, log_dir=None):
    variable = tf.Variable(np.arange(4096, dtype=np.float32))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), directory, max_to_keep=None)
    writer = tf.summary.create_file_writer(log_dir or directory)
    with writer.as_default():
        for step in steps:
            variable.assign_add(tf.ones_like(variable))
            manager.save(checkpoint_number=step)
            tf.summary.scalar("loss", (losses or {}).get(step, 1.0), step=step)
    writer.close()


def tf_failed(out):
    _manager(out, [0], log_dir=os.path.join(out, "train"))


def tf_started(out):
    _manager(out, [0])
    writer = tf.summary.create_file_writer(out, filename_suffix=".later")
    with writer.as_default():
        tf.summary.scalar("loss", 0.5, step=50)
    writer.close()


def keras_failed(out):
    import keras

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("out of memory (as a job fails at start-up)")

    x = np.ones((8, 4), np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    try:
        model.fit(x, x[:, :1], epochs=2, verbose=0, callbacks=[
            keras.callbacks.TensorBoard(os.path.join(out, "logs")),
            keras.callbacks.ModelCheckpoint(os.path.join(out, "w.{epoch:02d}.weights.h5"), save_weights_only=True),
            Crash()])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the fit should have failed")


def keras_run(out):
    import keras

    x = np.ones((8, 4), np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(os.path.join(out, "w.{epoch:02d}.weights.h5"), save_weights_only=True)])


def hf_failed(out):
    writer = tf.summary.create_file_writer(os.path.join(out, "runs", "Dec07_10-00-00_host"))
    with writer.as_default():
        tf.summary.text("args", '{"output_dir": "hf_failed", "learning_rate": 5e-05}', step=0)
    writer.close()


def fleet(out):
    for name, build in (("tf_failed", tf_failed), ("tf_started", tf_started), ("keras_failed", keras_failed),
                        ("hf_failed", hf_failed), ("keras_run", keras_run),
                        *((run, lambda d, losses=losses: _manager(d, sorted(losses), losses))
                          for run, losses in FLEET_LOSS.items())):
        os.makedirs(os.path.join(out, name))
        build(os.path.join(out, name))


def main(root: str) -> None:
    for name, build in (("tf2", tf2), ("tf1", tf1), ("keras", keras), ("restart", restart), ("export", export),
                        ("kinds", kinds), ("fleet", fleet)):
        directory = os.path.join(root, name)
        os.makedirs(directory, exist_ok=True)
        build(directory)


if __name__ == "__main__":
    main(sys.argv[1])
