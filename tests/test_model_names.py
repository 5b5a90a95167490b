"""`--names model` and `inspect --tree`'s every path, on Keras 3 models (Sequential, functional,
subclassed) saved with tf.train.Checkpoint(model=..., optimizer=...) by a CheckpointManager
(tests/keras_checkpoints.py). Oracles: Keras (model.weights, get_weights(), the optimizer's
momentums), TensorFlow's tf.train.TrackableView for each weight's path through the model,
safetensors' loader and tf.train.load_checkpoint."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ckpttool.formats.dtypes import dtype_from_name
from ckpttool.formats.tf.bundle_writer import BundleWriter
from ckpttool.formats.tf.protos import checkpoint_pb2 as pb
from tests.conftest import assert_one_line_error, run_cli
from tests.hostile import assert_clean_exit, run_limited

KINDS = ("sequential", "functional", "subclassed")


def _model(keras_checkpoints: Path, kind: str) -> tuple[Path, dict, list[np.ndarray]]:
    root = keras_checkpoints / "models" / kind
    with np.load(root / "weights.npz") as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    return root, json.loads((root / "manifest.json").read_text()), weights


def _names(target) -> dict[str, str]:
    """checkpoint key -> model name, as `inspect --names model --json` lists them."""
    doc = run_cli("inspect", "--json", "--names", "model", target).json()
    return {v["checkpoint_key"]: v["name"] for v in doc["variables"]}


@pytest.mark.parametrize("kind", KINDS)
def test_convert_by_model_name_gives_one_tensor_per_model_weight(keras_checkpoints, tmp_path, kind):
    """convert --names model --drop-optimizer: exactly model.weights, each under its path through the
    model and equal to get_weights(); --drop matches the model names (save_counter is no weight)."""
    from safetensors.numpy import load_file

    root, manifest, weights = _model(keras_checkpoints, kind)
    out = tmp_path / "w.safetensors"
    result = run_cli("convert", "--json", "--names", "model", "--drop-optimizer", "--drop", "^save_counter$",
                     root / "run", out)
    assert result.exit_code == 0, result.stderr
    loaded = load_file(out)
    assert sorted(loaded) == sorted(manifest["paths"])
    for path, want in zip(manifest["paths"], weights):
        assert loaded[path].dtype == want.dtype
        np.testing.assert_array_equal(loaded[path], want)


@pytest.mark.parametrize("kind", KINDS)
def test_optimizer_state_is_named_after_its_variable(keras_checkpoints, tmp_path, kind):
    """Adam's m of trainable variable i is `<its model path>/m`, equal to Keras' optimizer momentum;
    the rename rules then apply to the model names (here --regex and --sep)."""
    root, manifest, _weights = _model(keras_checkpoints, kind)
    with np.load(root / "momentums.npz") as saved:
        momentums = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    out = tmp_path / "all.npz"
    result = run_cli("convert", "--names", "model", "--regex", "^model/=net/", "--sep", ".", root / "run", out)
    assert result.exit_code == 0, result.stderr
    with np.load(out) as loaded:
        for index, momentum in zip(manifest["trainable"], momentums):
            name = re.sub("^model/", "net/", manifest["paths"][index]).replace("/", ".") + ".m"
            np.testing.assert_array_equal(loaded[name], momentum)
            assert name[:-2] + ".v" in loaded.files


@pytest.mark.parametrize("kind", KINDS)
def test_model_names_are_stable_across_steps_of_a_run(keras_checkpoints, tf, kind):
    root, manifest, _weights = _model(keras_checkpoints, kind)
    first, second = _names(root / "run" / "ckpt-1"), _names(root / "run" / "ckpt-2")
    assert first == second
    assert set(manifest["paths"]) <= set(first.values())
    assert len(set(first.values())) == len(first)  # unique
    # Two different steps: the values moved, the names did not.
    key = next(k for k, v in first.items() if v == manifest["paths"][manifest["trainable"][0]])
    a, b = (tf.train.load_checkpoint(str(root / "run" / f"ckpt-{n}")).get_tensor(key) for n in (1, 2))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_diff_by_model_name_across_checkpoint_layouts(keras_checkpoints, kind):
    """Checkpoint(model=, optimizer=) and Checkpoint(model=) of the same state store every weight under
    different keys: by key nothing of the model compares; by model name every weight compares equal."""
    root, manifest, _weights = _model(keras_checkpoints, kind)
    only_weights = "^(" + "|".join(re.escape(p) for p in manifest["paths"]) + ")$"
    both, model_only = root / "run" / "ckpt-2", root / "model_only"
    by_key = run_cli("diff", "--json", both, model_only)
    assert by_key.exit_code == 1 and not {d["name"] for d in by_key.json()["differences"]} & set(manifest["paths"])
    by_model = run_cli("diff", "--json", "--names", "model", "--filter", only_weights, both, model_only)
    assert by_model.exit_code == 0, by_model.stdout
    assert by_model.json()["compared"] == len(manifest["paths"])
    # The slots compare too, under their variables' names; only the optimizer's own state moved, and
    # the checkpoints' own counters differ (two saves of the run, one of the other).
    everything = run_cli("diff", "--json", "--names", "model", both, model_only).json()
    moved = [d for d in everything["differences"] if d["change"] != "value"]
    assert {d["change"] for d in moved} == {"added", "removed"} and all("optimizer/" in d["name"] for d in moved)
    assert [d["name"] for d in everything["differences"] if d["change"] == "value"] == ["save_counter"]
    # An earlier step differs by value, reported by model name.
    earlier = run_cli("diff", "--json", "--names", "model", "--filter", only_weights, root / "run" / "ckpt-1",
                      model_only)
    assert earlier.exit_code == 1
    changed = {d["name"] for d in earlier.json()["differences"]}
    assert changed and changed <= set(manifest["paths"])
    assert {d["change"] for d in earlier.json()["differences"]} == {"value"}


def test_tree_shows_every_path_to_a_variable(keras_checkpoints):
    """A Keras 3 weight is reached through the model and through the optimizer's list of what it trains
    (at the root and under model/optimizer): --tree lists every one of those paths."""
    root, manifest, _weights = _model(keras_checkpoints, "subclassed")
    doc = run_cli("inspect", "--json", "--tree", "--names", "model", root / "run").json()
    by_name = {v["name"]: v for v in doc["variables"]}
    for position, index in enumerate(manifest["trainable"]):
        var = by_name[manifest["paths"][index]]
        stored = var["checkpoint_key"].removesuffix("/.ATTRIBUTES/VARIABLE_VALUE")
        assert var["name"] in var["object_paths"] and stored in var["object_paths"]
        assert f"model/optimizer/_trainable_variables/{position}" in var["object_paths"]
    human = run_cli("inspect", "--tree", root / "run")
    assert human.exit_code == 0
    assert "_trainable_variables/" in human.stdout and "encoder/" in human.stdout


def test_model_names_ignore_node_ids(keras_checkpoints):
    """The same objects under other node ids and with their children listed in another order get the
    same names: names come from the structure and local names only."""
    from ckpttool.formats.reader import open_checkpoint
    from ckpttool.formats.tf.object_graph import _swap_node_ids, model_names, parse_object_graph

    with open_checkpoint(str(keras_checkpoints / "models" / "functional" / "run" / "ckpt-2")) as reader:
        graph = parse_object_graph(reader.object_graph_bytes())
    want = model_names(graph)
    for a, b in ((1, 2), (3, len(graph.nodes) - 1), (5, 9)):
        _swap_node_ids(graph, a, b)
    for node in graph.nodes:
        children = list(node.children)
        del node.children[:]
        node.children.extend(reversed(children))
    assert model_names(graph) == want


def _graph_bundle(prefix: Path, graph: pb.TrackableObjectGraph, keys) -> None:
    writer = BundleWriter(str(prefix))
    for key in sorted(keys):
        writer.add(key, dtype_from_name("float32"), np.ones(2, np.float32))
    writer.add("_CHECKPOINTABLE_OBJECT_GRAPH", dtype_from_name("string"),
               np.array(graph.SerializeToString(), dtype=object))
    writer.finish()


def test_clashing_model_names_are_refused(tmp_path):
    """w's slot m and an object that is w's child named m would both be `net/w/m`: refused (exit 4),
    naming both keys; nothing written."""
    graph = pb.TrackableObjectGraph()
    root, net, w, child, opt, slot = (graph.nodes.add() for _ in range(6))
    root.children.add(node_id=1, local_name="net")
    root.children.add(node_id=4, local_name="optimizer")
    net.children.add(node_id=2, local_name="w")
    w.children.add(node_id=3, local_name="m")
    w.attributes.add(name="VARIABLE_VALUE", checkpoint_key="net/w/.ATTRIBUTES/VARIABLE_VALUE")
    child.attributes.add(name="VARIABLE_VALUE", checkpoint_key="net/w/m/.ATTRIBUTES/VARIABLE_VALUE")
    opt.slot_variables.add(original_variable_node_id=2, slot_name="m", slot_variable_node_id=5)
    slot.attributes.add(name="VARIABLE_VALUE", checkpoint_key="net/w/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/"
                                                              "VARIABLE_VALUE")
    keys = [a.checkpoint_key for n in graph.nodes for a in n.attributes]
    _graph_bundle(tmp_path / "ckpt-1", graph, keys)
    for args in (("inspect", "--names", "model"), ("diff", "--names", "model", tmp_path / "ckpt-1"),
                 ("convert", "--names", "model")):
        extra = (tmp_path / "out.npz",) if args[0] == "convert" else ()
        result = run_cli(*args[:1], *args[1:], tmp_path / "ckpt-1", *extra)
        assert_one_line_error(result, 4)
        assert "net/w/m/.ATTRIBUTES" in result.stderr and ".OPTIMIZER_SLOT" in result.stderr
    assert not (tmp_path / "out.npz").exists()
    assert run_cli("inspect", "--names", "key", tmp_path / "ckpt-1").exit_code == 0
    # --drop-optimizer leaves the slot out: the names no longer clash.
    converted = run_cli("convert", "--names", "model", "--drop-optimizer", tmp_path / "ckpt-1", tmp_path / "w.npz")
    assert converted.exit_code == 0, converted.stderr
    with np.load(tmp_path / "w.npz") as out:
        assert sorted(out.files) == ["net/w", "net/w/m"]


def test_hostile_graphs_for_names_and_paths(tmp_path):
    """A 30,000-deep chain cannot name a variable (exit 3); a graph of 20 stacked diamonds (2**20 paths)
    lists a bounded number of them."""
    from ckpttool.formats.tf.object_graph import MAX_PATHS

    chain = pb.TrackableObjectGraph()
    for i in range(30_000):
        chain.nodes.add().children.add(node_id=i + 1, local_name="n")
    chain.nodes.add().attributes.add(name="VARIABLE_VALUE", checkpoint_key="v")
    _graph_bundle(tmp_path / "chain", chain, ["v"])
    deep = run_limited("inspect", "--names", "model", tmp_path / "chain")
    assert_clean_exit(deep, (3,))
    assert deep.stderr.count("\n") <= 2 and "deeper" in deep.stderr

    diamonds = pb.TrackableObjectGraph()
    levels = 20
    for level in range(levels):  # node 3k is the top of diamond k, 3k+1 and 3k+2 its sides
        top, left, right = (diamonds.nodes.add() for _ in range(3))
        top.children.add(node_id=3 * level + 1, local_name="a")
        top.children.add(node_id=3 * level + 2, local_name="b")
        left.children.add(node_id=3 * level + 3, local_name="x")
        right.children.add(node_id=3 * level + 3, local_name="x")
    diamonds.nodes.add().attributes.add(name="VARIABLE_VALUE", checkpoint_key="v")
    _graph_bundle(tmp_path / "diamonds", diamonds, ["v"])
    result = run_limited("inspect", "--json", "--tree", "--names", "model", tmp_path / "diamonds")
    assert_clean_exit(result, (0,))
    (var,) = json.loads(result.stdout)["variables"]
    assert var["name"] == "/".join(["a", "x"] * levels)  # the least of the shortest paths
    assert var["object_paths"][0] == var["name"] and len(var["object_paths"]) == MAX_PATHS
    assert len(set(var["object_paths"])) == MAX_PATHS


def test_sources_without_an_object_graph_keep_their_names(fixtures_dir, tmp_path):
    """A TF1 checkpoint keeps its names; a file converted with --names model compares by model name
    with the checkpoint it came from."""
    src = fixtures_dir / "tf2_manager" / "ckpt-3"
    tf1 = run_cli("inspect", "--json", "--names", "model", fixtures_dir / "saver_run").json()
    assert all("checkpoint_key" in v and v["checkpoint_key"] == v["name"] for v in tf1["variables"])
    assert run_cli("convert", "--names", "model", src, tmp_path / "w.npz").exit_code == 0
    assert run_cli("diff", "--names", "model", src, tmp_path / "w.npz").exit_code == 0
    assert run_cli("diff", src, tmp_path / "w.npz").exit_code == 1
    bad = run_cli("inspect", "--names", "scope", src)
    assert bad.exit_code == 2


def test_tree_paths_of_many_variables_under_cyclic_diamonds(tmp_path):
    """2,000 variables below 20 diamonds whose sides also lead back up (dead ends for simple paths):
    the search for more paths is bounded per variable and per graph; each variable keeps its shortest."""
    from ckpttool.formats.tf.object_graph import MAX_PATHS

    graph = pb.TrackableObjectGraph()
    levels = 20
    for level in range(levels):
        top, left, right = (graph.nodes.add() for _ in range(3))
        top.children.add(node_id=3 * level + 1, local_name="a")
        top.children.add(node_id=3 * level + 2, local_name="b")
        left.children.add(node_id=3 * level + 3, local_name="x")
        left.children.add(node_id=max(0, 3 * level - 3), local_name="up")
        right.children.add(node_id=3 * level + 3, local_name="x")
    hub = graph.nodes.add()
    keys = []
    for i in range(2000):
        hub.children.add(node_id=len(graph.nodes), local_name=f"v{i}")
        keys.append(f"v{i}")
        graph.nodes.add().attributes.add(name="VARIABLE_VALUE", checkpoint_key=keys[-1])
    _graph_bundle(tmp_path / "ckpt", graph, keys)
    result = run_limited("inspect", "--json", "--tree", tmp_path / "ckpt")
    assert_clean_exit(result, (0,))
    variables = json.loads(result.stdout)["variables"]
    assert len(variables) == len(keys)
    for var in variables:
        assert var["object_paths"][0] == "/".join(["a", "x"] * levels + [var["name"]])
        assert 1 <= len(var["object_paths"]) <= MAX_PATHS
