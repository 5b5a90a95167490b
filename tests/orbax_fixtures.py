"""Orbax checkpoints written by orbax.checkpoint itself (JAX on CPU), and what Orbax restores from
them, for tests/test_orbax.py. Run as a script, once per session:

  orbax_fixtures.py write OUT     eight virtual CPU devices (XLA_FLAGS set before JAX starts):
      run/            CheckpointManager steps 1 and 2 (OCDBT, the default): every dtype, scalars,
                      a string, lists and empty nodes
      zarr/7/default  the same tree with use_ocdbt=False (a zarr directory per array)
      multi/3/        a CheckpointManager step with two items, `params` and `opt_state`
      v1/             the v1 API's save_pytree (its `orbax.checkpoint` marker, zarr v3)
      sharded/5/      jax.Arrays sharded over a Mesh of the 8 devices, laid out as a Keras model
                      (dense/kernel, dense/bias, dense_1/...)
  orbax_fixtures.py restore ITEM OUT.npz   ONE device: orbax restores ITEM to numpy; OUT.npz holds
      each leaf's raw bits by its `/`-joined keys, OUT.json each leaf's dtype name and shape, and the strings
  orbax_fixtures.py keras OUT.weights.h5   a Keras 3 model of the `sharded` tree's shapes
  orbax_fixtures.py keras-load WEIGHTS OUT.npz   Keras loads WEIGHTS into that model: its weights
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

DEVICES = 8
KERAS_UNITS = ((64, 128), (128, 16))  # the sharded model's Dense layers: (inputs, units)


def every_dtype_tree() -> dict:
    import ml_dtypes

    rng = np.random.default_rng(28)
    floats = rng.standard_normal((5, 6))
    return {
        "params": {
            "dense": {"kernel": floats.astype(np.float32), "bias": floats[0].astype(ml_dtypes.bfloat16)},
            "half": floats.astype(np.float16), "double": floats.astype(np.float64),
            "bf16": (floats * 1000).astype(ml_dtypes.bfloat16),
            "f8": floats.astype(ml_dtypes.float8_e4m3fn),
            "ints": [np.arange(-5, 5, dtype=dt) for dt in (np.int8, np.int16, np.int32, np.int64)],
            "uints": [np.arange(10, dtype=dt) for dt in (np.uint8, np.uint16, np.uint32, np.uint64)],
            "mask": np.array([True, False, True]), "c64": (floats + 1j * floats).astype(np.complex64),
            "nothing": None, "no_dict": {},
        },
        "step": 7, "lr": 0.125, "note": "trained on CPU",
    }


def sharded_tree():
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("a", "b"))
    rng = np.random.default_rng(5)
    tree = {}
    for i, (inputs, units) in enumerate(KERAS_UNITS):
        layer = "dense" if i == 0 else f"dense_{i}"
        kernel = rng.standard_normal((inputs, units)).astype(np.float32)
        bias = rng.standard_normal(units).astype(np.float32)
        tree[layer] = {"kernel": jax.device_put(kernel, NamedSharding(mesh, PartitionSpec("a", "b"))),
                       "bias": jax.device_put(bias, NamedSharding(mesh, PartitionSpec("a")))}
    emb = rng.standard_normal((32, 8)).astype(np.float32)
    import jax.numpy as jnp

    tree["extra"] = {"bf16": jax.device_put(jnp.asarray(emb, jnp.bfloat16), NamedSharding(mesh, PartitionSpec(("a", "b")))),
                     "replicated": jax.device_put(emb[:4], NamedSharding(mesh, PartitionSpec()))}
    return tree


def write(out: str) -> None:
    import jax
    import orbax.checkpoint as ocp

    assert len(jax.devices()) == DEVICES, jax.devices()
    tree = every_dtype_tree()
    with ocp.CheckpointManager(os.path.join(out, "run")) as manager:
        for step in (1, 2):
            tree["step"] = step
            manager.save(step, args=ocp.args.PyTreeSave(tree))
        manager.wait_until_finished()
    ocp.PyTreeCheckpointer(use_ocdbt=False).save(os.path.join(out, "zarr", "7", "default"), tree)
    with ocp.CheckpointManager(os.path.join(out, "multi"), item_names=("params", "opt_state")) as manager:
        manager.save(3, args=ocp.args.Composite(
            params=ocp.args.StandardSave({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}),
            opt_state=ocp.args.StandardSave({"mu": np.ones(4, np.float32), "count": np.array(3, np.int32)})))
        manager.wait_until_finished()
    from orbax.checkpoint import v1

    v1.save_pytree(os.path.join(out, "v1"), {"params": tree["params"]["dense"], "step": np.array(9, np.int64)})
    with ocp.CheckpointManager(os.path.join(out, "sharded")) as manager:
        manager.save(5, args=ocp.args.StandardSave(sharded_tree()))
        manager.wait_until_finished()


def _keys(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def restore(item: str, out: str) -> None:
    """Orbax restores every leaf to numpy on this process's one device."""
    import jax
    import orbax.checkpoint as ocp

    assert len(jax.devices()) == 1
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(item).item_metadata.tree
    restore_args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray)
                                if type(m).__name__ == "ArrayMetadata" else ocp.RestoreArgs(), metadata)
    restored = checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    bits, dtypes, shapes, strings = {}, {}, {}, {}
    for path, value in jax.tree_util.tree_flatten_with_path(restored)[0]:
        name = _keys(path)
        if isinstance(value, str):
            strings[name] = value
            continue
        value = np.asarray(value)
        dtypes[name], shapes[name] = value.dtype.name, list(value.shape)
        bits[name] = value.view(f"u{value.dtype.itemsize}") if value.dtype.kind not in "biuc" else value
        if value.dtype.kind == "c":
            bits[name] = value.view(np.uint8)
    np.savez(out, **bits)
    with open(out[:-len(".npz")] + ".json", "w") as handle:
        json.dump({"dtypes": dtypes, "shapes": shapes, "strings": strings}, handle)


def keras_model():
    import keras

    inputs = keras.Input((KERAS_UNITS[0][0],))
    hidden = keras.layers.Dense(KERAS_UNITS[0][1])(inputs)
    return keras.Model(inputs, keras.layers.Dense(KERAS_UNITS[1][1])(hidden))


def keras_template(out: str) -> None:
    keras_model().save_weights(out)


def keras_load(weights: str, out: str) -> None:
    model = keras_model()
    model.load_weights(weights)
    np.savez(out, **{f"{layer.name}/{w.name}": np.asarray(w) for layer in model.layers for w in layer.weights})


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "write":
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    {"write": write, "restore": restore, "keras": keras_template, "keras-load": keras_load}[command](*args)
