"""Weights out of graphs without TensorFlow (formats/tf/graphs/graphdef.py): every Const node of frozen
GraphDefs, MetaGraphs and SavedModel graphs, with TensorFlow's make_ndarray as the oracle; hostile
graphs bounded."""
from __future__ import annotations

import numpy as np
import pytest

from ckpttool.errors import BadInput, CorruptCheckpoint
from ckpttool.formats import raw
from ckpttool.formats.tf.graphs.graphdef import GraphConstants


@pytest.fixture(scope="module")
def frozen(tf, tmp_path_factory):
    """A TF1 graph with variables of several dtypes and constants in every encoding TF uses
    (tensor_content, a splat in one typed value, typed lists, strings), frozen by TensorFlow."""
    out = tmp_path_factory.mktemp("frozen")
    v1 = tf.compat.v1
    graph = tf.Graph()
    rng = np.random.default_rng(5)
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 8], name="x")
        kernel = v1.get_variable("dense/kernel", initializer=rng.standard_normal((8, 4)).astype(np.float32))
        bias = v1.get_variable("dense/bias", initializer=rng.standard_normal(4).astype(np.float32))
        half = v1.get_variable("half", initializer=rng.standard_normal((3, 5)).astype(np.float16))
        wide = v1.get_variable("wide", initializer=rng.standard_normal((2, 3)))
        ints = v1.get_variable("ints", initializer=np.arange(12, dtype=np.int64).reshape(3, 4))
        bf = tf.cast(tf.constant(rng.standard_normal((4, 4)).astype(np.float32)), tf.bfloat16, name="bf_src")
        y = tf.matmul(x, kernel) + bias
        y = y + tf.reduce_sum(tf.cast(half, tf.float32)) + tf.cast(tf.reduce_sum(wide), tf.float32)
        y = y + tf.cast(tf.reduce_sum(ints), tf.float32) + tf.reduce_sum(tf.cast(bf, tf.float32))
        y = y + tf.reduce_sum(tf.constant(0.5, shape=[64, 64], name="splat"))  # one float_val, 4096 elements
        y = y + tf.cast(tf.reduce_sum(tf.constant([1, 2, 3], tf.int8)), tf.float32)
        y = tf.identity(y + tf.cast(tf.reduce_all(tf.constant([True, False])), tf.float32), name="out")
        tf.constant([b"ab", b"\xffz"], name="strings")
        tf.constant(np.array([1.5, -2.0], np.float16), name="half_list")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            frozen_def = v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["out", "strings",
                                                                                                    "half_list"])
            v1.train.export_meta_graph(str(out / "model.meta"))
    path = out / "frozen.pb"
    path.write_bytes(frozen_def.SerializeToString())
    return path


def _tf_consts(tf, graph_def):
    """Every Const node of the graph, walked with TensorFlow's protos: its own nodes by name, and those
    of its function library's functions as `<function>/<node>`; values by make_ndarray."""
    nodes = [(node.name, node) for node in graph_def.node]
    nodes += [(f"{function.signature.name}/{node.name}", node) for function in graph_def.library.function
              for node in function.node_def]
    found = {name: tf.make_ndarray(node.attr["value"].tensor) for name, node in nodes if node.op == "Const"}
    assert len(found) == sum(1 for _, node in nodes if node.op == "Const")  # no two named alike
    return found


def _raw_bytes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def test_every_const_equals_make_ndarray(tf, frozen):
    graph_def = tf.compat.v1.GraphDef.FromString(frozen.read_bytes())
    theirs = _tf_consts(tf, graph_def)
    with GraphConstants(str(frozen), min_elements=0) as reader:
        assert sorted(v.name for v in reader.variables) == sorted(theirs)
        for var in reader.variables:
            ref = theirs[var.name]
            assert var.dtype.name == tf.as_dtype(ref.dtype).name, var.name
            assert var.shape == ref.shape, var.name
            ours = reader.read(var)
            if ref.dtype == object:
                assert list(ours.reshape(-1)) == list(ref.reshape(-1)), var.name
            else:
                assert np.array_equal(_raw_bytes(raw.read_stored(reader, var)), _raw_bytes(ref)), var.name
                if ref.dtype.name != "bfloat16":  # people get bfloat16 as float32; the bits are checked above
                    assert ours.dtype == ref.dtype and np.array_equal(ours, ref), var.name
    assert {"dense/kernel", "dense/bias", "half", "wide", "ints"} <= set(theirs)


def test_small_constants_are_left_out_by_default(tf, frozen):
    graph_def = tf.compat.v1.GraphDef.FromString(frozen.read_bytes())
    sizes = {name: value.size for name, value in _tf_consts(tf, graph_def).items()}
    with GraphConstants(str(frozen)) as reader:
        assert sorted(v.name for v in reader.variables) == sorted(n for n, s in sizes.items() if s >= 2)
        assert reader.left_out == sum(1 for s in sizes.values() if s < 2)
        splat = reader.variable("splat")
        assert splat is not None and np.array_equal(reader.read(splat), np.full((64, 64), 0.5, np.float32))


def test_meta_graph_and_saved_model_constants(tf, frozen, fixtures_dir):
    meta = tf.compat.v1.MetaGraphDef.FromString((frozen.parent / "model.meta").read_bytes())
    with GraphConstants(str(frozen.parent / "model.meta"), min_elements=0) as reader:
        assert sorted(v.name for v in reader.variables) == sorted(_tf_consts(tf, meta.graph_def))
    for saved in sorted(fixtures_dir.rglob("saved_model.pb"))[:3]:
        from tensorflow.core.protobuf import saved_model_pb2

        model = saved_model_pb2.SavedModel.FromString(saved.read_bytes())
        theirs = _tf_consts(tf, model.meta_graphs[0].graph_def)
        with GraphConstants(str(saved), min_elements=0) as reader:
            assert sorted(v.name for v in reader.variables) == sorted(theirs), saved
            for var in reader.variables:
                if theirs[var.name].dtype != object:
                    assert np.array_equal(_raw_bytes(raw.read_stored(reader, var)), _raw_bytes(theirs[var.name]))


def _edited(tf, frozen, tmp_path, edit) -> str:
    graph_def = tf.compat.v1.GraphDef.FromString(frozen.read_bytes())
    node = next(n for n in graph_def.node if n.name == "dense/kernel")
    edit(node.attr["value"].tensor)
    path = tmp_path / "edited.pb"
    path.write_bytes(graph_def.SerializeToString())
    return str(path)


def test_hostile_graphs(tf, frozen, tmp_path):
    def lying_content(tensor):
        tensor.tensor_content = tensor.tensor_content[:-4]

    def huge_shape(tensor):
        tensor.tensor_shape.dim[0].size = 1 << 62

    def huge_splat(tensor):
        tensor.tensor_content = b""
        tensor.float_val.append(1.0)
        tensor.tensor_shape.dim[0].size = 1 << 24
        tensor.tensor_shape.dim[1].size = 1 << 10

    for edit, message in ((lying_content, "holds 124 bytes"), (huge_shape, "too large")):
        with pytest.raises(CorruptCheckpoint, match=message):
            GraphConstants(_edited(tf, frozen, tmp_path, edit))
    with GraphConstants(_edited(tf, frozen, tmp_path, huge_splat)) as reader:  # listed; its values refused
        with pytest.raises(CorruptCheckpoint, match="expanding"):
            reader.read(reader.variable("dense/kernel"))
    data = frozen.read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 7):
        (tmp_path / "cut.pb").write_bytes(data[:cut])
        with pytest.raises(BadInput):
            GraphConstants(str(tmp_path / "cut.pb"))
    (tmp_path / "garbage.pb").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(BadInput):
        GraphConstants(str(tmp_path / "garbage.pb"))


def _splat_graph(tf, path, constants) -> None:
    """A GraphDef of Const nodes each holding one typed value for a large shape (TensorFlow's
    shorthand: the value fills the shape); `constants`: (name, dtype, shape, value)."""
    graph_def = tf.compat.v1.GraphDef()
    for name, dtype, shape, value in constants:
        node = graph_def.node.add(name=name, op="Const")
        node.attr["dtype"].type = dtype.as_datatype_enum
        tensor = node.attr["value"].tensor
        tensor.dtype = dtype.as_datatype_enum
        for size in shape:
            tensor.tensor_shape.dim.add(size=size)
        (tensor.string_val if dtype == tf.string else tensor.float_val).append(value)
    path.write_bytes(graph_def.SerializeToString())


def test_repeated_values_expand_within_one_bound_for_the_whole_graph(tf, tmp_path):
    """A 4 KB graph whose string constant repeats one 4,000-byte value 400,000 times (a 1.6 GB
    checkpoint), or whose float constants each repeat one value 10 million times (40 MB each, each
    under the per-tensor bound, 120 MB together): the expansion of a file's tensors together is
    bounded (64 MiB or the file's size), so convert refuses (exit 3, nothing written) under a memory
    cap. TensorFlow's rule, on a small one: make_ndarray fills the shape with the value."""
    import os

    from tests.conftest import assert_one_line_error
    from tests.hostile import assert_clean_exit, run_limited

    _splat_graph(tf, tmp_path / "small.pb", [("s", tf.string, (3,), b"ab"), ("f", tf.float32, (2, 2), 1.5)])
    graph_def = tf.compat.v1.GraphDef.FromString((tmp_path / "small.pb").read_bytes())
    with GraphConstants(str(tmp_path / "small.pb"), min_elements=1) as reader:
        for name, expected in _tf_consts(tf, graph_def).items():
            assert reader.read(reader.variable(name)).tolist() == expected.tolist(), name
    cases = {"strings.pb": [("big", tf.string, (400_000,), b"x" * 4000)],
             "floats.pb": [(f"f{i}", tf.float32, (10_000_000,), 1.0) for i in range(3)]}
    for name, constants in cases.items():
        _splat_graph(tf, tmp_path / name, constants)
        assert os.path.getsize(tmp_path / name) < 5000
        out = tmp_path / f"out-{name}"
        for destination in (out / "ckpt-1", out / "o.npz")[: 1 if name == "strings.pb" else 2]:  # npz holds no strings
            result = run_limited("convert", tmp_path / name, destination)
            assert_clean_exit(result, (3,))
            assert_one_line_error(result, 3)
            assert "expanding" in result.stderr, result.stderr
        assert not out.exists() or os.listdir(out) == []
        verify = run_limited("verify", tmp_path / name)
        assert_clean_exit(verify, (1,))


@pytest.fixture(scope="module")
def tf2_functions(tf, tmp_path_factory):
    """A TF2 SavedModel written by tf.saved_model.save whose constants live in its tf.functions (the
    function library), as in real TF2 exports: a graph with one top-level constant against dozens in
    functions."""
    out = tmp_path_factory.mktemp("tf2_functions")
    rng = np.random.default_rng(11)
    table = rng.standard_normal((6, 5)).astype(np.float32)
    shift = np.arange(5, dtype=np.int64)

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((5, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32)])
        def __call__(self, x):
            h = tf.matmul(x, tf.constant(table)) + tf.cast(tf.constant(shift), tf.float32)
            h = h * tf.cast(tf.constant(np.float16([0.5, 1.5, 2.5, 3.5, 4.5])), tf.float32)
            return tf.matmul(h, self.w) + tf.constant([[1.0, 2.0, 3.0]])

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def label(self, key):
            return tf.strings.join([key, tf.constant(["a", "b"])[0]])

    model = Model()
    tf.saved_model.save(model, str(out / "export"), signatures={"serving_default": model.__call__,
                                                                 "label": model.label})
    return out / "export" / "saved_model.pb"


def test_tf2_saved_model_constants_in_its_function_library(tf, tf2_functions):
    """The constants of a TF2 SavedModel's functions (graph_def.library.function[*].node_def) are read
    with the top-level ones: the same names (`<function>/<node>`), dtypes, shapes and bytes as
    TensorFlow's own MetaGraphDef holds, walked with its protos; the default leaves out those under 2
    elements, as for top-level constants."""
    from tensorflow.core.protobuf import saved_model_pb2

    graph_def = saved_model_pb2.SavedModel.FromString(tf2_functions.read_bytes()).meta_graphs[0].graph_def
    theirs = _tf_consts(tf, graph_def)
    in_functions = [name for name in theirs if "/" in name and name.split("/")[0] in
                    {f.signature.name for f in graph_def.library.function}]
    assert len(in_functions) > len(theirs) - len(in_functions)  # most constants live in functions
    with GraphConstants(str(tf2_functions), min_elements=0) as reader:
        assert sorted(v.name for v in reader.variables) == sorted(theirs)
        for var in reader.variables:
            ref = theirs[var.name]
            assert var.dtype.name == tf.as_dtype(ref.dtype).name and var.shape == ref.shape, var.name
            if ref.dtype == object:
                assert list(reader.read(var).reshape(-1)) == list(ref.reshape(-1)), var.name
            else:
                assert np.array_equal(_raw_bytes(raw.read_stored(reader, var)), _raw_bytes(ref)), var.name
    with GraphConstants(str(tf2_functions)) as reader:
        assert sorted(v.name for v in reader.variables) == sorted(n for n, v in theirs.items() if v.size >= 2)
        assert reader.left_out == sum(1 for v in theirs.values() if v.size < 2)


def test_graph_option_of_a_tf2_saved_model_lists_its_function_constants(tf, tf2_functions):
    """`inspect --graph` of the SavedModel directory: every constant of at least 2 elements, those of
    its functions included, as TensorFlow's graph holds them."""
    from tensorflow.core.protobuf import saved_model_pb2

    from tests.conftest import run_cli

    graph_def = saved_model_pb2.SavedModel.FromString(tf2_functions.read_bytes()).meta_graphs[0].graph_def
    theirs = {name: value for name, value in _tf_consts(tf, graph_def).items() if value.size >= 2}
    result = run_cli("inspect", tf2_functions.parent, "--graph", "--json", "--values")
    assert result.exit_code == 0, result.stderr
    listed = {v["name"]: v for v in result.json()["variables"]}
    assert sorted(listed) == sorted(theirs)
    for name, value in theirs.items():
        if value.dtype != object:
            assert listed[name]["value"] == value.tolist(), name


def test_hostile_function_libraries(tf, tf2_functions, tmp_path):
    """A library function's Const whose tensor_content lies about its size, a function without a
    name, and the file cut anywhere inside the library: CorruptCheckpoint / BadInput, never another
    exception."""
    from tensorflow.core.protobuf import saved_model_pb2

    data = tf2_functions.read_bytes()
    model = saved_model_pb2.SavedModel.FromString(data)
    library = model.meta_graphs[0].graph_def.library
    function, node = next((f, n) for f in library.function for n in f.node_def
                          if n.op == "Const" and n.attr["value"].tensor.tensor_content)
    node.attr["value"].tensor.tensor_content = node.attr["value"].tensor.tensor_content[:-1]
    lying = tmp_path / "lying" / "saved_model.pb"
    lying.parent.mkdir()
    lying.write_bytes(model.SerializeToString())
    with pytest.raises(CorruptCheckpoint, match="declares shape"):
        GraphConstants(str(lying))
    model = saved_model_pb2.SavedModel.FromString(data)
    next(f for f in model.meta_graphs[0].graph_def.library.function
         if any(n.op == "Const" for n in f.node_def)).signature.ClearField("name")
    nameless = tmp_path / "nameless" / "saved_model.pb"
    nameless.parent.mkdir()
    nameless.write_bytes(model.SerializeToString())
    with pytest.raises(CorruptCheckpoint, match="without a name"):
        GraphConstants(str(nameless))
    cut = tmp_path / "cut" / "saved_model.pb"
    cut.parent.mkdir()
    for size in range(len(data) // 8, len(data), len(data) // 8):
        cut.write_bytes(data[:size])
        try:
            GraphConstants(str(cut)).close()
        except BadInput:
            pass
