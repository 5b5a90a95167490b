"""Legacy Keras HDF5 files written by Keras' own legacy writer (keras.src.legacy.saving.
legacy_h5_format, what `model.save("m.h5")` runs), and what Keras' legacy loader reads back from
them: the oracle of tests/test_keras_legacy.py. `python tests/keras_legacy_fixtures.py OUT`:

- full.h5: a Sequential (Dense, BatchNormalization, Dense) compiled with Adam and trained a step,
  saved as a whole model (model_weights/, model_config, training_config, optimizer_weights/);
  full.keras: the same bytes under a Keras 3 name; full.hdf5 likewise;
- weights.h5: its weights only (save_weights' layout: layer_names at the root);
- keras2.h5: the same weights in the layout Keras 2 / tf.keras wrote (`dense_1/kernel:0` names,
  each dataset under its layer's group), written with h5py;
- oracle.npz: `model/<path>` for each weight of the model load_model_from_hdf5 returns,
  `optimizer/<path>` for each variable of its restored optimizer, `weights/<i>` the get_weights()
  of a fresh model after load_weights_from_hdf5_group(weights.h5), `keras2/<i>` the same from
  keras2.h5.
"""
from __future__ import annotations

import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402


def build_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(2)])


def write_keras2_layout(path: str, model) -> None:
    """What Keras 2 wrote for this model: layer groups named dense_1 ..., weight names `<layer>/<w>:0`."""
    with h5py.File(path, "w") as out:
        names = ["dense_1", "batch_normalization_1", "dense_2"]
        out.attrs["layer_names"] = [n.encode() for n in names]
        out.attrs["backend"] = b"tensorflow"
        out.attrs["keras_version"] = b"2.4.0"
        for name, layer in zip(names, model.layers):
            group = out.create_group(name)
            weights = legacy_h5_format._legacy_weights(layer)
            weight_names = [f"{name}/{w.name}:0".encode() for w in weights]
            group.attrs["weight_names"] = weight_names
            for weight_name, w in zip(weight_names, weights):
                group.create_dataset(weight_name.decode(), data=np.asarray(w.numpy()))


def main(out: str) -> None:
    keras.utils.set_random_seed(3)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.MeanSquaredError())
    rng = np.random.default_rng(7)
    model.fit(rng.standard_normal((8, 4)).astype(np.float32), np.ones((8, 2), np.float32), batch_size=8,
              epochs=1, verbose=0)
    full = os.path.join(out, "full.h5")
    keras.saving.save_model(model, full)
    shutil.copyfile(full, os.path.join(out, "full.keras"))
    shutil.copyfile(full, os.path.join(out, "full.hdf5"))
    with h5py.File(os.path.join(out, "weights.h5"), "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    write_keras2_layout(os.path.join(out, "keras2.h5"), model)

    oracle = {}
    loaded = legacy_h5_format.load_model_from_hdf5(full)
    oracle.update({f"model/{w.path}": np.asarray(w.numpy()) for w in loaded.weights})
    oracle.update({f"optimizer/{v.path}": np.asarray(v.numpy()) for v in loaded.optimizer.variables})
    for name in ("weights", "keras2"):
        fresh = build_model()
        with h5py.File(os.path.join(out, f"{name}.h5"), "r") as handle:
            legacy_h5_format.load_weights_from_hdf5_group(handle, fresh)
        oracle.update({f"{name}/{i}": value for i, value in enumerate(fresh.get_weights())})
    np.savez(os.path.join(out, "oracle.npz"), **oracle)


if __name__ == "__main__":
    main(sys.argv[1])
