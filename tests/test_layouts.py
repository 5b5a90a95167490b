"""`convert --layout torch|tf` and `--transpose` against Keras 3: each layer kind's output on random
input equals the output computed from the converted tensors with PyTorch's conventions (numpy
implementations of torch.nn.functional's linear / conv / conv_transpose / batch_norm / embedding,
below, checked by hand against torch 2.13.0 once), and the way back restores into the model
bit-exactly. Transposes larger than the memory bound stream through a temp file in blocks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import product

import numpy as np
import pytest

from tests.conftest import ROOT, assert_one_line_error, run_cli


# -- PyTorch's conventions, in numpy (channels first; weights as torch.nn stores them) -----------

def linear(x, weight, bias=None):  # torch.nn.functional.linear
    out = x @ weight.T
    return out if bias is None else out + bias


def conv(x, weight, bias=None, groups=1):  # F.conv1d/2d/3d, stride 1, no padding
    spatial = weight.shape[2:]
    out_shape = tuple(s - k + 1 for s, k in zip(x.shape[2:], spatial))
    out_channels, in_per_group = weight.shape[:2]
    out = np.zeros((x.shape[0], out_channels, *out_shape), dtype=np.float64)
    per_group = out_channels // groups
    for o in range(out_channels):
        g = o // per_group
        xs = x[:, g * in_per_group:(g + 1) * in_per_group]
        for offset in product(*(range(k) for k in spatial)):
            window = xs[(slice(None), slice(None)) + tuple(slice(a, a + n) for a, n in zip(offset, out_shape))]
            out[:, o] += np.tensordot(window, weight[(o, slice(None)) + offset], axes=([1], [0]))
    return out if bias is None else out + bias.reshape(1, -1, *([1] * len(spatial)))


def conv_transpose(x, weight, bias=None):  # F.conv_transpose1d/2d/3d, stride 1, no padding
    spatial = weight.shape[2:]
    out_shape = tuple(s + k - 1 for s, k in zip(x.shape[2:], spatial))
    out = np.zeros((x.shape[0], weight.shape[1], *out_shape), dtype=np.float64)
    for offset in product(*(range(k) for k in spatial)):
        contribution = np.einsum("nc...,co->no...", x, weight[(slice(None), slice(None)) + offset])
        out[(slice(None), slice(None)) + tuple(slice(a, a + n) for a, n in zip(offset, x.shape[2:]))] += contribution
    return out if bias is None else out + bias.reshape(1, -1, *([1] * len(spatial)))


def batch_norm(x, running_mean, running_var, weight, bias, eps):  # F.batch_norm, training=False
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - running_mean.reshape(shape)) / np.sqrt(running_var.reshape(shape) + eps) * weight.reshape(shape)
            + bias.reshape(shape))


def embedding(indices, weight):  # F.embedding
    return weight[indices]


def _first(x):  # channels last (Keras) -> channels first (PyTorch)
    return np.moveaxis(x, -1, 1)


def _last(x):
    return np.moveaxis(x, 1, -1)


# -- the layers -----------------------------------------------------------------------------------

def _cases():
    import keras

    L = keras.layers
    return {
        "dense": ((5,), L.Dense(3), lambda w, x: linear(x, w["weight"], w["bias"])),
        "conv1d": ((7, 3), L.Conv1D(4, 3), lambda w, x: _last(conv(_first(x), w["weight"], w["bias"]))),
        "conv2d": ((6, 5, 3), L.Conv2D(4, (3, 2)), lambda w, x: _last(conv(_first(x), w["weight"], w["bias"]))),
        "conv3d": ((4, 5, 4, 2), L.Conv3D(3, (2, 3, 2)),
                   lambda w, x: _last(conv(_first(x), w["weight"], w["bias"]))),
        "depthwise_conv2d": ((6, 5, 3), L.DepthwiseConv2D((3, 2), depth_multiplier=2),
                             lambda w, x: _last(conv(_first(x), w["weight"], w["bias"], groups=3))),
        "conv2d_transpose": ((4, 5, 3), L.Conv2DTranspose(2, (3, 2)),
                             lambda w, x: _last(conv_transpose(_first(x), w["weight"], w["bias"]))),
        "conv1d_transpose": ((5, 3), L.Conv1DTranspose(2, 3),
                             lambda w, x: _last(conv_transpose(_first(x), w["weight"], w["bias"]))),
        "batch_normalization": ((6, 4), L.BatchNormalization(epsilon=1e-3),
                                lambda w, x: _last(batch_norm(_first(x), w["running_mean"], w["running_var"],
                                                              w["weight"], w["bias"], 1e-3))),
        "embedding": (None, L.Embedding(11, 4), lambda w, x: embedding(x, w["weight"])),
    }


def _model(kind):
    import keras

    keras.utils.set_random_seed(7)
    shape, layer, oracle = _cases()[kind]
    inputs = keras.Input((6,), dtype="int32") if shape is None else keras.Input(shape)
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(3)
    for weight in model.weights:  # random values everywhere (BatchNormalization starts at 0/1)
        value = rng.standard_normal(weight.shape).astype(np.float32)
        weight.assign(np.abs(value) + 0.5 if "variance" in weight.path else value)
    x = rng.integers(0, 11, (2, 6)) if shape is None else rng.standard_normal((2, *shape)).astype(np.float32)
    return model, x, oracle


def _torch_tensors(path):
    from safetensors.numpy import load_file

    return {name.rsplit(".", 1)[-1]: value for name, value in load_file(str(path)).items()}


@pytest.mark.parametrize("kind", list(_cases()))
def test_layer_output_from_torch_layout_equals_keras(tmp_path, tf, kind):
    model, x, oracle = _model(kind)
    model.save_weights(str(tmp_path / "m.weights.h5"))
    result = run_cli("convert", str(tmp_path / "m.weights.h5"), str(tmp_path / "m.safetensors"), "--layout", "torch",
                     "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    weights = _torch_tensors(tmp_path / "m.safetensors")
    expected = np.asarray(model(x, training=False), dtype=np.float64)
    assert np.allclose(oracle(weights, x), expected, rtol=1e-5, atol=1e-5)
    # every transform is in the plan
    kernels = [t for t in document["transformed"] if any("transposed" in d for d in t["transforms"])]
    assert len(kernels) == (0 if kind in ("batch_normalization", "embedding") else 1)
    assert all(name.endswith(("weight", "bias", "running_mean", "running_var"))
               for name in (t["name"] for t in document["transformed"]))


@pytest.mark.parametrize("kind", ["dense", "conv1d", "conv2d", "conv3d", "conv2d_transpose", "batch_normalization",
                                  "embedding", "depthwise_1"])
def test_way_back_restores_into_the_keras_model_bit_exactly(tmp_path, tf, kind):
    import keras

    if kind == "depthwise_1":  # the way back assumes a depth multiplier of 1 (PyTorch's shape loses it)
        keras.utils.set_random_seed(7)
        inputs = keras.Input((6, 5, 3))
        model = keras.Model(inputs, keras.layers.DepthwiseConv2D(3)(inputs))
        for weight in model.weights:
            weight.assign(np.random.default_rng(1).standard_normal(weight.shape).astype(np.float32))
        x = np.random.default_rng(2).standard_normal((2, 6, 5, 3)).astype(np.float32)
    else:
        model, x, _ = _model(kind)
    import shutil

    import h5py

    original = [np.array(w.numpy()) for w in model.weights]
    model.save_weights(str(tmp_path / "m.weights.h5"))
    assert run_cli("convert", str(tmp_path / "m.weights.h5"), str(tmp_path / "m.safetensors"),
                   "--layout", "torch").exit_code == 0
    result = run_cli("convert", str(tmp_path / "m.safetensors"), str(tmp_path / "back" / "ckpt-1"), "--layout", "tf")
    assert result.exit_code == 0, result.stderr
    reader = tf.train.load_checkpoint(str(tmp_path / "back" / "ckpt-1"))
    # Keras restores: its own file, every dataset overwritten with what TensorFlow reads back
    shutil.copy(tmp_path / "m.weights.h5", tmp_path / "back.weights.h5")
    paths = []
    with h5py.File(tmp_path / "back.weights.h5", "r+") as handle:
        handle.visititems(lambda path, item: paths.append(path) if isinstance(item, h5py.Dataset) else None)
        for path in paths:
            handle[path][...] = np.zeros(handle[path].shape, handle[path].dtype)
            handle[path][...] = reader.get_tensor(path)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(paths)
    expected = np.asarray(model(x, training=False))
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, np.float32))
    model.load_weights(str(tmp_path / "back.weights.h5"))
    for before, after in zip(original, model.weights):
        assert before.dtype == after.numpy().dtype and before.tobytes() == after.numpy().tobytes()
    assert np.asarray(model(x, training=False)).tobytes() == expected.tobytes()


def test_tf_checkpoint_names_attributes_and_rank(tmp_path, tf):
    """A Keras 3 TF checkpoint names attributes, not layers: kernel by rank, BN by its names; the
    TF suffix goes, --sep . is the default."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((5, 5, 2))
    hidden = keras.layers.BatchNormalization()(keras.layers.Conv2D(3, 2)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(hidden)))
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ck" / "m"))
    result = run_cli("convert", str(tmp_path / "ck" / "m"), str(tmp_path / "m.safetensors"), "--layout", "torch",
                     "--json")
    assert result.exit_code == 0, result.stderr
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp_path / "m.safetensors"))
    reader = tf.train.load_checkpoint(str(tmp_path / "ck" / "m"))
    for key in reader.get_variable_to_shape_map():
        if key.startswith("_CHECKPOINTABLE"):
            continue
        value = reader.get_tensor(key)
        stem, attribute = key[: -len("/.ATTRIBUTES/VARIABLE_VALUE")].rsplit("/", 1)
        new = stem.replace("/", ".") + "." + {"_kernel": "weight", "kernel": "weight", "gamma": "weight",
                                              "beta": "bias", "moving_mean": "running_mean",
                                              "moving_variance": "running_var", "bias": "bias"}[attribute]
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        elif value.ndim == 2:
            value = value.T
        assert tensors[new].tobytes() == np.ascontiguousarray(value).tobytes(), key


@pytest.mark.parametrize("kind", ["dense", "conv2d", "depthwise_conv2d", "depthwise_1", "conv2d_transpose",
                                  "batch_normalization", "embedding"])
def test_keras_tf_checkpoint_by_attribute_rank_and_bias(tmp_path, tf, kind):
    """A Keras 3 model saved with tf.train.Checkpoint: object-graph paths name no layer class; the
    attribute, the rank and (for depthwise kernels) the layer's bias decide, and PyTorch's
    conventions on the converted tensors give the layer's output. An Embedding's table, stored as
    `_embeddings`, is named `weight` as torch.nn.Embedding names it."""
    import keras

    if kind == "depthwise_1":
        shape, layer = (6, 5, 3), keras.layers.DepthwiseConv2D((3, 2))
        oracle = lambda w, x: _last(conv(_first(x), w["weight"], w["bias"], groups=3))  # noqa: E731
        keras.utils.set_random_seed(7)
        inputs = keras.Input(shape)
        model = keras.Model(inputs, layer(inputs))
        rng = np.random.default_rng(3)
        for weight in model.weights:
            weight.assign(rng.standard_normal(weight.shape).astype(np.float32))
        x = rng.standard_normal((2, *shape)).astype(np.float32)
    else:
        model, x, oracle = _model(kind)
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ck" / "m"))
    result = run_cli("convert", str(tmp_path / "ck" / "m"), str(tmp_path / "m.safetensors"), "--layout", "torch")
    assert result.exit_code == 0, result.stderr
    weights = _torch_tensors(tmp_path / "m.safetensors")
    expected = np.asarray(model(x, training=False), dtype=np.float64)
    assert np.allclose(oracle(weights, x), expected, rtol=1e-5, atol=1e-5)


def test_transpose_by_hand_wins_and_bad_ones_are_usage_errors(tmp_path, tf):
    v = tf.Variable(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    w = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    tf.train.Checkpoint(v=v, kernel=w).write(str(tmp_path / "ck"))
    result = run_cli("convert", str(tmp_path / "ck"), str(tmp_path / "o.npz"), "--transpose", "^v/=2,0,1",
                     "--layout", "torch", "--transpose", "kernel=0,1")
    assert result.exit_code == 0, result.stderr
    assert "1 transposed" in result.stdout  # v by hand; the kernel's layout permutation overridden to 0,1
    with np.load(tmp_path / "o.npz") as data:
        assert data["v"].tobytes() == np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(2, 0, 1).tobytes()
        assert data["weight"].tobytes() == np.arange(6, dtype=np.float32).reshape(2, 3).tobytes()  # by hand: kept
    for bad in ("v=1,1,0", "v", "=1,0", "v=a,b"):
        assert_one_line_error(run_cli("convert", str(tmp_path / "ck"), str(tmp_path / "x.npz"), "--transpose", bad), 2)
    assert_one_line_error(run_cli("convert", str(tmp_path / "ck"), str(tmp_path / "x.npz"), "--transpose", "^v/=1,0"),
                          2)


def test_blocked_transpose_through_the_cli_above_the_bound(tmp_path, tf, monkeypatch):
    """A tensor over the memory bound goes through the staged path (a temp file beside DST, read back
    by ranges); TensorFlow reads the transposed values; no temp file is left."""
    from ckpttool.ops.tensors import layouts

    monkeypatch.setattr(layouts, "MEMORY_BOUND", 1 << 16)
    monkeypatch.setattr(layouts, "BLOCK_BYTES", 1 << 12)
    value = np.random.default_rng(0).standard_normal((3, 4, 37, 29)).astype(np.float32)
    tf.train.Checkpoint(conv=tf.train.Checkpoint(kernel=tf.Variable(value)),
                        dense=tf.train.Checkpoint(kernel=tf.Variable(value[0, 0]))).write(str(tmp_path / "ck"))
    result = run_cli("convert", str(tmp_path / "ck"), str(tmp_path / "out" / "t.safetensors"), "--layout", "torch")
    assert result.exit_code == 0, result.stderr
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp_path / "out" / "t.safetensors"))
    assert tensors["conv.weight"].tobytes() == value.transpose(3, 2, 0, 1).tobytes()
    assert tensors["dense.weight"].tobytes() == value[0, 0].T.tobytes()
    assert os.listdir(tmp_path / "out") == ["t.safetensors"]


_PEAK = r"""
import resource, sys
import numpy as np
from ckpttool.ops.tensors.layouts import permute_stream
shape, perm, bound, out = (1024, 8, 2048), (2, 1, 0), 8 << 20, sys.argv[1]
def chunks():
    for i in range(shape[0]):
        yield np.random.default_rng(i).standard_normal(shape[1:]).astype(np.float32).tobytes()
next(chunks())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(out, "wb") as handle:
    for piece in permute_stream(chunks(), shape, 4, perm, out, memory_bound=bound):
        handle.write(piece)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_transpose_larger_than_memory_stays_bounded(tmp_path):
    """A 64 MiB tensor transposed under an 8 MiB bound: the process grows by far less than the tensor,
    and the bytes equal numpy's transpose."""
    out = tmp_path / "out.bin"
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    grown = int(proc.stdout.strip())
    assert grown < 32 << 20, grown
    value = np.stack([np.random.default_rng(i).standard_normal((8, 2048)).astype(np.float32) for i in range(1024)])
    assert out.read_bytes() == value.transpose(2, 1, 0).tobytes()
    assert os.listdir(tmp_path) == ["out.bin"]  # the staged temp is gone


def test_kind_by_name_and_rank():
    """The names' hints where the rank fits them, else the rank; unknown PyTorch names keep their words."""
    from ckpttool.ops.tensors.layouts import plan_layout

    torch = plan_layout([("conv_block/kernel", (4, 3)), ("net/depthwise_conv2d/kernel", (3, 3, 4, 2)),
                         ("net/up/conv2d_transpose/kernel", (3, 3, 5, 8)), ("emb/embeddings", (10, 4)),
                         ("bn/moving_variance", (4,)), ("dense_1/bias", (3,)), ("scalar", ())], "torch")
    assert torch["conv_block/kernel"].perm == (1, 0)  # rank 2: a Dense kernel whatever the path says
    assert (torch["net/depthwise_conv2d/kernel"].perm, torch["net/depthwise_conv2d/kernel"].shape) == \
        ((2, 3, 0, 1), (8, 1, 3, 3))
    assert torch["net/up/conv2d_transpose/kernel"].kind == "conv_transpose"
    assert torch["emb/embeddings"].name == "emb/weight" and torch["emb/embeddings"].perm is None
    assert torch["bn/moving_variance"].name == "bn/running_var"
    assert "dense_1/bias" not in torch and "scalar" not in torch
    legacy = plan_layout([("model_weights/dense/dense/kernel:0", (5, 3)), ("model_weights/dense/dense/bias:0", (3,))],
                         "torch")  # legacy Keras HDF5 names keep the tensor's output index
    assert legacy["model_weights/dense/dense/kernel:0"].name == "model_weights/dense/dense/weight"
    assert legacy["model_weights/dense/dense/kernel:0"].perm == (1, 0)
    assert legacy["model_weights/dense/dense/bias:0"].name == "model_weights/dense/dense/bias"
    back = plan_layout([("model.norm.weight", (4,)), ("model.bn.weight", (4,)), ("model.bn.running_mean", (4,)),
                        ("model.proj.weight", (3, 5)), ("model.step", ())], "tf")
    assert back["model.norm.weight"].name == "model/norm/weight" and back["model.norm.weight"].perm is None
    assert back["model.bn.weight"].name == "model/bn/gamma"
    assert (back["model.proj.weight"].name, back["model.proj.weight"].perm) == ("model/proj/kernel", (1, 0))
    assert back["model.step"].name == "model/step"


def test_way_back_knows_batch_normalization_by_its_running_stats_in_model_paths(tmp_path, tf):
    """`--names model` paths of a TF2 checkpoint (`model._functional._operations.2.weight`) say no
    layer class: on the way back (`--layout tf`) a weight and bias whose scope holds running_mean and
    running_var are BatchNormalization's gamma and beta (they stayed `weight` and `bias`); every
    tensor comes back as TensorFlow reads it from the original checkpoint."""
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(),
                              keras.layers.Dense(2)])
    rng = np.random.default_rng(3)
    for weight in model.weights:  # random values everywhere (BatchNormalization starts at 0/1)
        weight.assign(rng.standard_normal(weight.shape).astype(np.float32))
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ck" / "m"))
    assert run_cli("convert", tmp_path / "ck" / "m", tmp_path / "m.safetensors", "--names", "model",
                   "--layout", "torch").exit_code == 0
    result = run_cli("convert", tmp_path / "m.safetensors", tmp_path / "back.npz", "--layout", "tf")
    assert result.exit_code == 0, result.stderr
    reader = tf.train.load_checkpoint(str(tmp_path / "ck" / "m"))
    expected = {}
    for key in reader.get_variable_to_shape_map():
        if not key.startswith("_CHECKPOINTABLE"):
            name = key[: -len("/.ATTRIBUTES/VARIABLE_VALUE")]
            expected[name[:-len("_kernel")] + "kernel" if name.endswith("/_kernel") else name] = reader.get_tensor(key)
    with np.load(tmp_path / "back.npz") as back:
        assert sorted(back.files) == sorted(expected)
        for name, value in expected.items():
            assert back[name].tobytes() == value.tobytes(), name


def test_embedding_table_from_a_tf2_checkpoint_to_torch_and_back_into_keras(tmp_path, tf):
    """A Keras 3 Embedding + Dense model saved with tf.train.Checkpoint, out with `--names model
    --layout torch`: the table is `…_operations.1.weight` (torch.nn.Embedding takes it as it is, the
    Dense kernel transposed). Back with `--like TEMPLATE --layout tf`: nothing in `_operations.1.weight`
    says Embedding (a lone rank-2 weight reads as a Dense kernel and was transposed, filling nothing),
    so the template decides; Keras' load_weights gives the original weights bit for bit."""
    import keras
    from safetensors.numpy import load_file

    torch = pytest.importorskip("torch")

    def build():
        inputs = keras.Input((6,), dtype="int32")
        pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(11, 4)(inputs))
        return keras.Model(inputs, keras.layers.Dense(3)(pooled))

    keras.utils.set_random_seed(7)
    model = build()
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ck" / "m"))
    result = run_cli("convert", tmp_path / "ck" / "m", tmp_path / "pt.safetensors", "--names", "model",
                     "--layout", "torch")
    assert result.exit_code == 0, result.stderr
    tensors = load_file(str(tmp_path / "pt.safetensors"))
    table = next(v for n, v in tensors.items() if v.shape == (11, 4))
    assert [n for n, v in tensors.items() if v is table][0].endswith(".weight")
    embedding = torch.nn.Embedding(11, 4)
    embedding.load_state_dict({"weight": torch.from_numpy(table)}, strict=True)
    np.testing.assert_array_equal(embedding.weight.detach().numpy(), model.layers[1].embeddings.numpy())
    keras.utils.set_random_seed(8)
    build().save_weights(str(tmp_path / "template.weights.h5"))
    result = run_cli("convert", tmp_path / "pt.safetensors", tmp_path / "back.weights.h5", "--like",
                     tmp_path / "template.weights.h5", "--layout", "tf", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["unmatched"] == []
    back = build()
    back.load_weights(str(tmp_path / "back.weights.h5"))
    for got, want in zip(back.get_weights(), model.get_weights()):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("staged", [False, True], ids=["in_memory", "staged"])
def test_permute_stream_equals_numpy_for_odd_shapes_and_blocks(tmp_path, monkeypatch, staged):
    """Odd shapes and element sizes (1 to 16 bytes), chunks that end inside elements, output blocks
    that cut rows (so the reused block buffer is refilled at several sizes): numpy's transpose."""
    from ckpttool.ops.tensors import layouts

    monkeypatch.setattr(layouts, "BLOCK_BYTES", 96)
    rng = np.random.default_rng(29)
    for shape, perm, itemsize in [((3, 5, 7, 11), (3, 2, 0, 1), 4), ((64, 33), (1, 0), 8), ((5, 6, 7), (2, 0, 1), 2),
                                  ((4, 9), (1, 0), 1), ((2, 3, 4), (0, 2, 1), 16), ((1000, 3), (1, 0), 4)]:
        dtype = {1: "u1", 2: "<u2", 4: "<u4", 8: "<u8", 16: "V16"}[itemsize]
        value = np.frombuffer(rng.bytes(int(np.prod(shape)) * itemsize), dtype).reshape(shape)
        data = value.tobytes()
        pieces = iter([data[i:i + 7] for i in range(0, len(data), 7)])
        # each piece copied before the next is asked for, as the writers do: the pieces are views
        # of a reused block buffer
        got = b"".join(bytes(piece) for piece in layouts.permute_stream(
            pieces, shape, itemsize, perm, str(tmp_path / "out"), memory_bound=64 if staged else None))
        assert got == np.ascontiguousarray(value.transpose(perm)).tobytes(), (shape, perm)
    assert os.listdir(tmp_path) == []
