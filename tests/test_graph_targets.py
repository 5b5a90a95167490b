"""Graphs as TARGETs (issue 20): a GraphDef `.pb`, a `.meta` with no checkpoint beside it, a SavedModel's
graph (`--graph`, or its saved_model.pb when it has no variables) are read by inspect, verify, diff and
convert as their Const nodes, without TensorFlow; `inspect --meta` summarises any graph TF-free. TensorFlow
is the oracle: make_ndarray of every Const node, load_checkpoint and Saver.restore of what convert writes,
its own GraphDef protos for op counts and placeholders."""
from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.test_graphdef import frozen  # noqa: F401 - the frozen GraphDef fixture (TensorFlow froze it)


def _consts(tf, graph_def) -> dict[str, np.ndarray]:
    return {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}


def _graph_def(tf, path):
    return tf.compat.v1.GraphDef.FromString(path.read_bytes())


def _bits(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).tobytes()


def test_inspect_a_frozen_graph_lists_its_constants(tf, frozen):  # noqa: F811
    theirs = _consts(tf, _graph_def(tf, frozen))
    result = run_cli("inspect", "--json", frozen)
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["format"] == "graphdef"
    listed = {v["name"]: v for v in doc["variables"]}
    assert set(listed) == {name for name, value in theirs.items() if value.size >= 2}
    for name, var in listed.items():
        assert var["shape"] == list(theirs[name].shape) and var["dtype"] == tf.as_dtype(theirs[name].dtype).name
    small = sum(1 for value in theirs.values() if value.size < 2)
    assert f"{small} constant(s) with fewer than 2 elements left out" in result.stderr
    for every in (["--all"], ["--min-elements", "0"]):
        assert {v["name"] for v in run_cli("inspect", "--json", *every, frozen).json()["variables"]} == set(theirs)
    big = run_cli("inspect", "--json", "--min-elements", "4096", frozen).json()["variables"]
    assert {v["name"] for v in big} == {name for name, value in theirs.items() if value.size >= 4096}


def test_inspect_values_equal_make_ndarray(tf, frozen):  # noqa: F811
    theirs = _consts(tf, _graph_def(tf, frozen))
    doc = run_cli("inspect", "--json", "--values", "--all", frozen).json()
    for var in doc["variables"]:
        ref = theirs[var["name"]]
        if ref.dtype == object:
            assert var["value"] == [b.decode("utf-8") if b == b"ab" else {"base64": "/3o="} for b in ref.tolist()]
        elif ref.dtype.name != "bfloat16":
            assert np.array_equal(np.array(var["value"], dtype=ref.dtype), ref), var["name"]


def test_verify_checks_every_constant(tf, frozen, tmp_path):  # noqa: F811
    theirs = _consts(tf, _graph_def(tf, frozen))
    doc = run_cli("verify", "--json", frozen).json()
    assert doc["ok"] and doc["checked_tensors"] == len(theirs)  # the small ones too
    graph_def = _graph_def(tf, frozen)
    node = next(n for n in graph_def.node if n.name == "dense/kernel")
    node.attr["value"].tensor.tensor_content = node.attr["value"].tensor.tensor_content[:-4]
    lying = tmp_path / "lying.pb"
    lying.write_bytes(graph_def.SerializeToString())
    assert_one_line_error(run_cli("inspect", lying), 3)
    damaged = run_cli("verify", "--json", lying)
    assert damaged.exit_code == 1 and not damaged.json()["ok"]


def test_convert_a_frozen_graph_restores_in_tensorflow(tf, frozen, tmp_path):  # noqa: F811
    """`convert frozen.pb out/model.ckpt`: a TF checkpoint whose names are the Const node names, which
    load_checkpoint reads bit-exactly and a TF1 graph with variables of those names restores."""
    theirs = _consts(tf, _graph_def(tf, frozen))
    prefix = tmp_path / "out" / "model.ckpt"
    result = run_cli("convert", "--min-elements", "0", frozen, prefix)
    assert result.exit_code == 0, result.stderr
    reader = tf.train.load_checkpoint(str(prefix))
    numeric = {name: value for name, value in theirs.items() if value.dtype != object}
    assert set(reader.get_variable_to_shape_map()) == set(theirs)
    for name, value in numeric.items():
        assert _bits(reader.get_tensor(name)) == _bits(value), name
    v1 = tf.compat.v1
    weights = ("dense/kernel", "dense/bias", "half", "wide", "ints")
    with tf.Graph().as_default(), v1.Session() as sess:
        variables = [v1.get_variable(name, shape=theirs[name].shape, dtype=tf.as_dtype(theirs[name].dtype))
                     for name in weights]
        v1.train.Saver(variables).restore(sess, str(prefix))
        for name, value in zip(weights, sess.run(variables)):
            assert _bits(value) == _bits(theirs[name]), name
    assert run_cli("diff", frozen, prefix, "--min-elements", "0").exit_code == 0


def test_convert_a_frozen_graph_to_safetensors(tf, frozen, tmp_path):  # noqa: F811
    from safetensors.numpy import load_file

    theirs = _consts(tf, _graph_def(tf, frozen))
    out = tmp_path / "model.safetensors"
    result = run_cli("convert", frozen, out)
    assert result.exit_code == 0, result.stderr
    loaded = load_file(str(out))
    expected = {n for n, v in theirs.items() if v.size >= 2 and v.dtype != object and v.dtype.name != "bfloat16"}
    assert expected <= set(loaded)
    for name in expected:
        assert loaded[name].dtype == theirs[name].dtype and _bits(loaded[name]) == _bits(theirs[name]), name
    assert "strings" in result.stderr  # a string constant is skipped with a note


def test_meta_target_rules(tf, fixtures_dir, tmp_path):
    """`model.ckpt-50.meta` is still the checkpoint when it exists; a `.meta` alone is its graph's
    constants, said on stderr, and `inspect --meta` summarises the graph either way."""
    run = fixtures_dir / "saver_run"
    with_checkpoint = run_cli("inspect", "--json", run / "model.ckpt-50.meta").json()
    assert with_checkpoint["format"] == "v2" and with_checkpoint["checkpoint"].endswith("model.ckpt-50")
    lone = tmp_path / "export.meta"
    shutil.copy(run / "model.ckpt-50.meta", lone)
    result = run_cli("inspect", "--meta", "--json", "--all", lone)
    assert result.exit_code == 0, result.stderr
    assert "no checkpoint beside" in result.stderr
    doc = result.json()
    meta = tf.compat.v1.MetaGraphDef.FromString(lone.read_bytes())
    assert doc["format"] == "graphdef"
    assert {v["name"] for v in doc["variables"]} == set(_consts(tf, meta.graph_def))
    (graph,) = doc["meta"]["meta_graphs"]
    assert graph["op_counts"] == dict(Counter(n.op for n in meta.graph_def.node))
    assert graph["saver_def"]["restore_op_name"] == meta.saver_def.restore_op_name
    assert "no checkpoint beside" in run_cli("inspect", "--meta", lone).stderr
    graph_of_checkpoint = run_cli("inspect", "--json", "--graph", "--all", run / "model.ckpt-50").json()
    assert graph_of_checkpoint["format"] == "graphdef" and graph_of_checkpoint["checkpoint"].endswith(".meta")
    assert {v["name"] for v in graph_of_checkpoint["variables"]} == set(_consts(tf, meta.graph_def))


def test_saved_model_graph_constants(tf, fixtures_dir):
    """A SavedModel directory (and its saved_model.pb) means its variables; --graph reaches the constants
    of its graph; a saved_model.pb whose SavedModel has no variables is read as its graph's constants."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = fixtures_dir / "tf1_saved_model" / "model"
    assert run_cli("inspect", "--json", model / "saved_model.pb").json()["format"] == "v2"
    saved = saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes())
    theirs = _consts(tf, saved.meta_graphs[0].graph_def)
    doc = run_cli("inspect", "--json", "--graph", "--all", model).json()
    assert doc["format"] == "graphdef" and {v["name"] for v in doc["variables"]} == set(theirs)
    assert run_cli("verify", "--graph", model).exit_code == 0
    graph_only = fixtures_dir / "graph_only_saved_model" / "model"
    result = run_cli("inspect", "--json", "--values", graph_only / "saved_model.pb")
    assert result.exit_code == 0 and "has no variables" in result.stderr
    saved = saved_model_pb2.SavedModel.FromString((graph_only / "saved_model.pb").read_bytes())
    theirs = {n: v for n, v in _consts(tf, saved.meta_graphs[0].graph_def).items() if v.size >= 2}
    values = {v["name"]: v["value"] for v in result.json()["variables"]}
    assert set(values) == set(theirs)
    for name, value in theirs.items():
        assert np.array_equal(np.array(values[name], value.dtype), value)
    assert_one_line_error(run_cli("verify", fixtures_dir / "graph_only_saved_model" / "model"), 3)


def test_meta_summary_of_a_tf2_saved_model_counts_function_ops(tf, fixtures_dir):
    """TF2 graphs keep most ops in the function library: every op type used is counted, there too."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = fixtures_dir / "tf2_saved_model" / "model"
    saved = saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes())
    graph_def = saved.meta_graphs[0].graph_def
    expected = Counter(n.op for n in graph_def.node)
    for function in graph_def.library.function:
        expected.update(n.op for n in function.node_def)
    (graph,) = run_cli("inspect", "--meta", "--json", model).json()["meta"]["meta_graphs"]
    assert graph["op_counts"] == dict(expected)
    assert graph["num_function_nodes"] == sum(len(f.node_def) for f in graph_def.library.function)
    assert set(graph["op_counts"]) - {n.op for n in graph_def.node}  # ops only the functions use
    placeholders = {n.name: n for n in graph_def.node if n.op == "Placeholder" and n.name != "saver_filename"}
    assert {i["key"] for i in graph["inputs"]} == set(placeholders) and placeholders
    for spec in graph["inputs"]:
        node = placeholders[spec["key"]]
        assert spec["dtype"] == tf.as_dtype(node.attr["dtype"].type).name
        assert spec["shape"] == [d.size for d in node.attr["shape"].shape.dim]
    assert "serving_default" in {s["name"] for s in graph["signatures"]}


def test_meta_summary_of_a_frozen_graph(tf, frozen):  # noqa: F811
    graph_def = _graph_def(tf, frozen)
    result = run_cli("inspect", "--meta", "--json", frozen)
    (graph,) = result.json()["meta"]["meta_graphs"]
    assert result.json()["meta"]["kind"] == "graph_def"
    assert graph["op_counts"] == dict(Counter(n.op for n in graph_def.node))
    assert [(i["key"], i["dtype"], i["shape"]) for i in graph["inputs"]] == [("x", "float32", [-1, 8])]
    assert graph["likely_outputs"][0] == "out"
    text = run_cli("inspect", "--meta", frozen)
    assert "likely outputs: out" in text.stdout and "input  x: float32 [?, 8] (x:0)" in text.stdout


def test_meta_ranking_is_freezes(tf, fixtures_dir, tmp_path):
    """inspect --meta suggests the outputs freeze suggests (one TF-free ranking, graph_analysis.py)."""
    run = fixtures_dir / "ema_run"
    (graph,) = run_cli("inspect", "--meta", "--json", run).json()["meta"]["meta_graphs"]
    refused = run_cli("freeze", run, "-o", tmp_path / "x.pb")
    assert_one_line_error(refused, 2)
    assert graph["likely_outputs"] == refused.stderr.split("likely outputs: ")[1].splitlines()[0].split(", ")
    assert graph["likely_outputs"][0] == "prediction"


def test_freeze_refuses_a_lone_meta(fixtures_dir, tmp_path):
    lone = tmp_path / "export.meta"
    shutil.copy(fixtures_dir / "saver_run" / "model.ckpt-50.meta", lone)
    result = run_cli("freeze", lone, "-o", tmp_path / "x.pb", "--output-nodes", "x")
    assert_one_line_error(result, 3)
    assert "no checkpoint beside" in result.stderr


def test_graph_option_needs_a_graph(fixtures_dir):
    result = run_cli("inspect", "--graph", fixtures_dir / "tf2_manager")
    assert_one_line_error(result, 3)
    assert "no graph for" in result.stderr


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def test_a_graph_over_2_gib_is_bounded(tf, frozen, tmp_path):  # noqa: F811
    """A frozen graph followed by a node over 2 GiB (a Const with no value, and an unknown field of
    2 GiB, sparse on disk): listing, verify and --meta skip what they need not read, in a capped
    address space (before, --meta read the file whole: exit 3 at best)."""
    import json

    from tests.hostile import assert_clean_exit, run_limited

    huge = (2 << 30) + 4096
    head = b"\x0a\x03big\x12\x05Const" + b"\xfa\x06" + _varint(huge)  # field 99, length-delimited
    path = tmp_path / "huge.pb"
    data = frozen.read_bytes() + b"\x0a" + _varint(len(head) + huge) + head
    with open(path, "wb") as handle:
        handle.write(data)
        handle.truncate(len(data) + huge)
    listed = run_limited("inspect", "--json", path)
    assert_clean_exit(listed, (0,))
    theirs = {n for n, v in _consts(tf, _graph_def(tf, frozen)).items() if v.size >= 2}
    assert {v["name"] for v in json.loads(listed.stdout)["variables"]} == theirs
    assert_clean_exit(run_limited("verify", path), (0,))
    meta = run_limited("inspect", "--meta", "--json", path)
    assert_clean_exit(meta, (0,))
    (graph,) = json.loads(meta.stdout)["meta"]["meta_graphs"]
    assert graph["num_nodes"] == len(_graph_def(tf, frozen).node) + 1


def test_meta_inputs_and_outputs_leave_the_saver_out(tf, fixtures_dir):
    """A TF2 SavedModel saves and restores through functions fed `saver_filename`, a TF1 graph through
    `save/filename`: neither is an input, nor are the save/restore calls outputs. The serving signature
    (TensorFlow's own protos) is the oracle."""
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    model = fixtures_dir / "tf2_saved_model" / "model"
    saved = saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes())
    serving = saved.meta_graphs[0].signature_def["serving_default"]
    (graph,) = run_cli("inspect", "--meta", "--json", model).json()["meta"]["meta_graphs"]
    assert {i["name"] for i in graph["inputs"]} == {t.name for t in serving.inputs.values()}
    assert graph["likely_outputs"] == sorted({t.name.split(":")[0] for t in serving.outputs.values()})
    meta_path = fixtures_dir / "saver_run" / "model.ckpt-50.meta"
    meta = meta_graph_pb2.MetaGraphDef.FromString(meta_path.read_bytes())
    assert any(n.name == "save/filename" for n in meta.graph_def.node)
    (graph,) = run_cli("inspect", "--meta", "--json", meta_path).json()["meta"]["meta_graphs"]
    assert {i["key"] for i in graph["inputs"]} == {n.name for n in meta.graph_def.node if n.op == "Placeholder"}


def test_meta_summary_of_a_large_frozen_graph_costs_its_structure(tf, tmp_path):
    """inspect --meta of a 100 MB frozen graph in a 200 MB address space: nodes are parsed one at a
    time and a constant's tensor is never read (before, the file was read and parsed whole: out of
    memory). Op counts against TensorFlow's own parse."""
    from tests.hostile import assert_clean_exit, run_limited

    rng = np.random.default_rng(3)
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None, 1024], name="x")
        for i in range(25):  # 4 MiB kernels
            x = tf.nn.relu(tf.matmul(x, tf.constant(rng.standard_normal((1024, 1024), dtype=np.float32))))
        tf.identity(x, name="y")
    path = tmp_path / "big.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    assert path.stat().st_size > 100 << 20
    result = run_limited("inspect", "--meta", "--json", path, memory_mb=200)
    assert_clean_exit(result, (0,))
    import json

    (summary,) = json.loads(result.stdout)["meta"]["meta_graphs"]
    assert summary["op_counts"] == dict(Counter(n.op for n in _graph_def(tf, path).node))
    assert summary["likely_outputs"][0] == "y"
    assert [i["shape"] for i in summary["inputs"]] == [[-1, 1024]]


def test_python_api_opens_graphs(tf, frozen, fixtures_dir):  # noqa: F811
    import ckpttool

    theirs = _consts(tf, _graph_def(tf, frozen))
    with ckpttool.open(frozen, min_elements=0) as ckpt:
        assert ckpt.format == "graphdef" and set(ckpt.names()) == set(theirs)
        assert _bits(ckpt.read("dense/kernel")) == _bits(theirs["dense/kernel"])
    model = fixtures_dir / "tf1_saved_model" / "model"
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes())
    big = {n for n, v in _consts(tf, saved.meta_graphs[0].graph_def).items() if v.size >= 2}
    with ckpttool.open(model, graph=True) as ckpt:
        assert set(ckpt.names()) == big


def test_a_text_graph_is_named_as_such(tf, frozen, tmp_path):  # noqa: F811
    from google.protobuf import text_format

    path = tmp_path / "frozen.pbtxt"
    path.write_text(text_format.MessageToString(_graph_def(tf, frozen)))
    result = run_cli("inspect", path)
    assert_one_line_error(result, 3)
    assert "is a text graph" in result.stderr and "export-json" in result.stderr
