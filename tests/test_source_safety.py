"""Safe as root, everywhere (issue 16): a command never writes over a file it reads, whatever
name reaches it (a symlink, a file:// URL, a protocol alias such as s3a:// or gcs://); freeze
never runs code a graph brings; reserved names are refused as new names. TensorFlow-written
fixtures throughout, and TensorFlow the oracle of what survives. Each test fails on the code
before its fix."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.test_remote import servers, store, upload  # noqa: F401 - the moto S3 server and the GCS emulator
from tests.test_rename_diff import assert_same_tensors


# -- 13. the reserved name _CHECKPOINTABLE_OBJECT_GRAPH ------------------------------------------

@pytest.mark.parametrize("command", [["rename-vars"], ["convert", "--to", "tf"]])
def test_reserved_object_graph_name_is_refused_as_a_new_name(fixtures_dir, tmp_path, tf, command):
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    result = run_cli(*command, "--map", "dense/kernel=_CHECKPOINTABLE_OBJECT_GRAPH", src, tmp_path / "out")
    assert_one_line_error(result, 3)
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in result.stderr and "reserved" in result.stderr
    assert not list(tmp_path.iterdir())
    # The same map to any other name is fine, and TensorFlow restores the result.
    assert run_cli(*command, "--map", "dense/kernel=k", src, tmp_path / "ok").exit_code == 0
    assert_same_tensors(tf, src, tmp_path / "ok", {"dense/kernel": "k"})


# -- 3. aliases of SRC: file:// URLs, fsspec's protocol aliases ------------------------------------

def _saver_run(fixtures_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fixtures_dir / "saver_run", run)
    return run


def _files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("command", [["rename-vars", "--add-prefix", "x/"], ["convert", "--to", "tf"],
                                     ["convert", "--to", "safetensors"]])
@pytest.mark.parametrize("scheme", ["file://", "local://"])
def test_a_file_url_naming_the_source_is_refused(fixtures_dir, tmp_path, tf, command, scheme):
    run = _saver_run(fixtures_dir, tmp_path)
    before = _files(run)
    destination = f"{scheme}{run / 'model.ckpt-50'}"
    if command[-1] == "safetensors":
        destination += ".index"  # a file the source reads, named through the alias
    result = run_cli(*command, "--overwrite", run / "model.ckpt-50", destination)
    assert_one_line_error(result, 4)
    assert "never modifies SRC" in result.stderr
    assert _files(run) == before
    assert_same_tensors(tf, fixtures_dir / "saver_run" / "model.ckpt-50", run / "model.ckpt-50")


ALIASES = {"s3": "s3a", "gs": "gcs"}


def _bucket_files(store, url: str) -> dict[str, bytes]:
    from ckpttool.storage import remote

    bucket = remote.filesystem(store.protocol)
    bucket.invalidate_cache()
    root = url.partition("://")[2]
    return {path[len(root):]: bucket.cat_file(path) for path in sorted(bucket.find(root))}


def test_fsspec_registers_the_aliases_the_tests_use():
    """The aliases come from fsspec's registry, not from a list of ours: check it holds them."""
    from fsspec.registry import known_implementations

    for protocol, alias in ALIASES.items():
        assert known_implementations[protocol]["class"] == known_implementations[alias]["class"]


@pytest.mark.parametrize("command", [["rename-vars", "--add-prefix", "x/"], ["convert", "--to", "tf"],
                                     ["convert", "--to", "safetensors"]])
def test_a_protocol_alias_naming_the_source_is_refused(store, fixtures_dir, tf, command):
    _local, url = upload(store, fixtures_dir, "saver_run")
    before = _bucket_files(store, url)
    alias = ALIASES[store.protocol] + url[len(store.protocol):]
    destination = f"{alias}/model.ckpt-50" + (".index" if command[-1] == "safetensors" else "")
    result = run_cli(*command, "--overwrite", f"{url}/model.ckpt-50", destination)
    assert_one_line_error(result, 4)
    assert "never modifies SRC" in result.stderr
    assert _bucket_files(store, url) == before
    # The alias is a working name for the same store: a new destination through it is written.
    fresh = run_cli(*command, f"{url}/model.ckpt-50", f"{alias}/other")
    assert fresh.exit_code == 0, fresh.stderr


# -- 4. every file convert reads is protected, its index and .meta too -------------------------------

@pytest.mark.parametrize("suffix", [".index", ".meta", ".data-00000-of-00001"])
@pytest.mark.parametrize("to", ["safetensors", "npz"])
def test_convert_onto_any_file_of_its_source_is_refused(fixtures_dir, tmp_path, tf, suffix, to):
    run = _saver_run(fixtures_dir, tmp_path)
    before = _files(run)
    result = run_cli("convert", "--to", to, "--overwrite", run / "model.ckpt-50", run / f"model.ckpt-50{suffix}")
    assert_one_line_error(result, 4)
    assert _files(run) == before
    assert_same_tensors(tf, fixtures_dir / "saver_run" / "model.ckpt-50", run / "model.ckpt-50")


def test_convert_of_a_run_directory_never_replaces_its_state_file(fixtures_dir, tmp_path, tf):
    run = _saver_run(fixtures_dir, tmp_path)
    before = _files(run)
    result = run_cli("convert", "--to", "safetensors", "--overwrite", run, run / "checkpoint")
    assert_one_line_error(result, 4)
    assert _files(run) == before
    assert tf.train.latest_checkpoint(str(run)).endswith("model.ckpt-50")


# -- 5. freeze / export-json -o onto their own source ------------------------------------------------

def _classic(fixtures_dir, tmp_path):
    run = tmp_path / "classic"
    shutil.copytree(fixtures_dir / "classic", run)
    return run


@pytest.mark.parametrize("name", ["model.ckpt-1.meta", "model.ckpt-1.index", "model.ckpt-1.data-00000-of-00001"])
@pytest.mark.parametrize("how", ["direct", "symlink", "file-url"])
def test_freeze_onto_its_own_checkpoint_is_refused(fixtures_dir, tmp_path, tf, name, how):
    import os

    run = _classic(fixtures_dir, tmp_path)
    before = _files(run)
    output = str(run / name)
    if how == "symlink":
        os.symlink(run, tmp_path / "alias")
        output = str(tmp_path / "alias" / name)
    elif how == "file-url":
        output = f"file://{output}"
    result = run_cli("freeze", run / "model.ckpt-1", "-o", output, "--output-nodes", "op", "--overwrite")
    assert_one_line_error(result, 4)
    assert _files(run) == before
    assert_same_tensors(tf, fixtures_dir / "classic" / "model.ckpt-1", run / "model.ckpt-1")


@pytest.mark.parametrize("name", ["saved_model.pb", "variables/variables.index"])
def test_freeze_onto_its_own_saved_model_is_refused(fixtures_dir, tmp_path, tf, name):
    model = tmp_path / "model"
    shutil.copytree(fixtures_dir / "tf1_saved_model" / "model", model)
    before = {p: p.read_bytes() for p in model.rglob("*") if p.is_file()}
    result = run_cli("freeze", model, "-o", model / name, "--overwrite")
    assert_one_line_error(result, 4)
    assert {p: p.read_bytes() for p in model.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("source,name", [("prefix", "model.ckpt-1.meta"), ("meta", "model.ckpt-1.meta"),
                                         ("saved_model", "saved_model.pb")])
@pytest.mark.parametrize("how", ["direct", "symlink"])
def test_export_json_onto_its_own_source_is_refused(fixtures_dir, tmp_path, source, name, how):
    import os

    if source == "saved_model":
        run = tmp_path / "model"
        shutil.copytree(fixtures_dir / "tf1_saved_model" / "model", run)
        given = run
    else:
        run = _classic(fixtures_dir, tmp_path)
        given = run / ("model.ckpt-1" if source == "prefix" else "model.ckpt-1.meta")
    before = _files(run)
    output = run / name
    if how == "symlink":
        os.symlink(run, tmp_path / "alias")
        output = tmp_path / "alias" / name
    result = run_cli("export-json", given, "-o", output, "--overwrite")
    assert_one_line_error(result, 4)
    assert _files(run) == before


# -- 6. freeze runs no code the graph brings ---------------------------------------------------------

X = [[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]]


def _crafted_classic(fixtures_dir, tmp_path, tf, edit):
    """classic's checkpoint with its .meta edited by `edit(meta, write_file_node_names)`: a WriteFile
    node (writing `marker`) is added to the graph, for `edit` to hang it where it would run."""
    from tensorflow.core.protobuf import meta_graph_pb2

    from tests.test_graph_savedmodels import _edit_proto

    run = _classic(fixtures_dir, tmp_path)
    marker = tmp_path / "written-by-the-graph"
    with tf.Graph().as_default() as graph:
        tf.io.write_file(tf.constant(str(marker), name="evil/name"), tf.constant("owned", name="evil/contents"),
                         name="evil/write")
    nodes = graph.as_graph_def().node

    def add_and_edit(meta):
        meta.graph_def.node.extend(nodes)
        edit(meta)
    _edit_proto(run / "model.ckpt-1.meta", meta_graph_pb2.MetaGraphDef, add_and_edit)
    return run, marker


def _node(meta, name):
    return next(n for n in meta.graph_def.node if n.name == name.split(":")[0])


def _original_output(tf, fixtures_dir):
    """What TensorFlow computes for classic's `op` with the untouched .meta and its own Saver."""
    import numpy as np

    prefix = fixtures_dir / "classic" / "model.ckpt-1"
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as sess:
        v1.train.import_meta_graph(f"{prefix}.meta").restore(sess, str(prefix))
        return sess.run("op:0", {"x:0": np.array(X, np.float32)})


@pytest.mark.parametrize("check", [False, True])
def test_freeze_never_runs_the_restore_op_of_the_meta_graph(fixtures_dir, tmp_path, tf, check):
    import numpy as np

    from tests.graph_helpers import run_frozen_in_fresh_process

    run, marker = _crafted_classic(fixtures_dir, tmp_path, tf,
                                   lambda meta: _node(meta, meta.saver_def.restore_op_name).input.append("^evil/write"))
    out = tmp_path / "frozen.pb"
    result = run_cli("freeze", run / "model.ckpt-1", "-o", out, "--output-nodes", "op", *(["--check"] if check else []))
    assert result.exit_code == 0, result.stderr
    assert not marker.exists()
    frozen = run_frozen_in_fresh_process(out, "op:0", {"x:0": np.array(X, np.float32)})
    np.testing.assert_array_equal(frozen, _original_output(tf, fixtures_dir))
    assert not marker.exists()


def test_freeze_never_runs_what_a_variable_read_depends_on(fixtures_dir, tmp_path, tf):
    """convert_variables_to_constants reads a resource variable through the graph's own
    `<var>/Read/ReadVariableOp` node: ckpttool reads it with an op of its own instead."""
    import numpy as np

    from tests.graph_helpers import run_frozen_in_fresh_process

    def edit(meta):
        reads = [n for n in meta.graph_def.node if n.op == "ReadVariableOp" and n.name.endswith("/Read/ReadVariableOp")]
        assert reads, "classic has resource variables"
        for node in reads:
            node.input.append("^evil/write")
    run, marker = _crafted_classic(fixtures_dir, tmp_path, tf, edit)
    out = tmp_path / "frozen.pb"
    result = run_cli("freeze", run / "model.ckpt-1", "-o", out, "--output-nodes", "op")
    assert result.exit_code == 0, result.stderr
    assert not marker.exists()
    frozen = run_frozen_in_fresh_process(out, "op:0", {"x:0": np.array(X, np.float32)})
    np.testing.assert_array_equal(frozen, _original_output(tf, fixtures_dir))


def test_freeze_refuses_a_variable_that_depends_on_other_nodes(fixtures_dir, tmp_path, tf):
    """A variable node takes no input: one with a control input would run it whenever it is read."""
    run, marker = _crafted_classic(fixtures_dir, tmp_path, tf,
                                   lambda meta: _node(meta, "v1").input.append("^evil/write"))
    result = run_cli("freeze", run / "model.ckpt-1", "-o", tmp_path / "frozen.pb", "--output-nodes", "op")
    assert_one_line_error(result, 3)
    assert "v1" in result.stderr
    assert not marker.exists() and not (tmp_path / "frozen.pb").exists()


def test_freeze_refuses_a_recursive_function_library(fixtures_dir, tmp_path, tf):
    """A function that calls itself crashed TensorFlow (SIGSEGV, exit 139, no message)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    from tests.conftest import run_subprocess
    from tests.test_graph_savedmodels import _edit_proto

    run = _classic(fixtures_dir, tmp_path)

    def edit(meta):
        function = meta.graph_def.library.function.add()
        function.signature.name = "loop"
        function.signature.input_arg.add(name="x", type=1)
        function.signature.output_arg.add(name="y", type=1)
        function.node_def.add(name="again", op="loop", input=["x"])
        function.ret["y"] = "again:y:0"
        meta.graph_def.node.add(name="calls_loop", op="loop", input=["x"])
    _edit_proto(run / "model.ckpt-1.meta", meta_graph_pb2.MetaGraphDef, edit)
    result = run_subprocess("freeze", run / "model.ckpt-1", "-o", tmp_path / "frozen.pb", "--output-nodes", "op",
                            timeout=300)
    assert_one_line_error(result, 3)
    assert "loop" in result.stderr and "recursi" in result.stderr
    assert not (tmp_path / "frozen.pb").exists()


def test_freeze_restores_variables_saved_under_other_names(tmp_path, tf):
    """Without the file's restore op, the names a Saver stored variables under (Saver({"renamed/w": w}))
    are read from its restore subgraph, never run: the frozen graph computes what TensorFlow's own
    restore gives."""
    import numpy as np

    from tests.graph_helpers import run_frozen_in_fresh_process

    v1 = tf.compat.v1
    prefix = str(tmp_path / "model.ckpt")
    feeds = {"x:0": np.array([[1.0, 2.0], [-3.0, 0.5]], np.float32)}
    with tf.Graph().as_default(), v1.Session() as sess:
        x = v1.placeholder(tf.float32, [None, 2], name="x")
        w = v1.get_variable("w", initializer=np.array([1.5, -2.0], np.float32))
        u = v1.get_variable("u", initializer=np.array([3.0, 4.0], np.float32))
        tf.multiply(x + u, w, name="y")
        sess.run(v1.global_variables_initializer())
        v1.train.Saver({"renamed/w": w, "u": u}).save(sess, prefix)
    assert set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map()) == {"renamed/w", "u"}
    with tf.Graph().as_default(), v1.Session() as sess:
        v1.train.import_meta_graph(prefix + ".meta").restore(sess, prefix)
        expected = sess.run("y:0", feeds)
    out = tmp_path / "frozen.pb"
    result = run_cli("freeze", prefix, "-o", out, "--output-nodes", "y")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(run_frozen_in_fresh_process(out, "y:0", feeds), expected)


def test_freeze_never_runs_the_restore_op_of_a_tf1_saved_model(fixtures_dir, tmp_path, tf):
    """A TF1 SavedModel is restored as a checkpoint is; only --check hands it to TensorFlow's loader."""
    import numpy as np
    from tensorflow.core.protobuf import saved_model_pb2

    from tests.graph_helpers import run_frozen
    from tests.test_graph_savedmodels import _edit_proto, _tf1_loader_run

    model = tmp_path / "model"
    shutil.copytree(fixtures_dir / "tf1_saved_model" / "model", model)
    marker = tmp_path / "written-by-the-graph"
    with tf.Graph().as_default() as graph:
        tf.io.write_file(tf.constant(str(marker), name="evil/name"), tf.constant("owned", name="evil/contents"),
                         name="evil/write")

    def edit(saved):
        meta = saved.meta_graphs[0]
        meta.graph_def.node.extend(graph.as_graph_def().node)
        _node(meta, meta.saver_def.restore_op_name).input.append("^evil/write")
    _edit_proto(model / "saved_model.pb", saved_model_pb2.SavedModel, edit)
    out = tmp_path / "frozen.pb"
    result = run_cli("freeze", model, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert not marker.exists()
    x = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.5]], np.float32)
    expected = _tf1_loader_run(tf, fixtures_dir / "tf1_saved_model" / "model", "y:0", {"x:0": x}, tags=["custom_tag"])
    np.testing.assert_array_equal(run_frozen(tf, out, "y:0", {"x:0": x}), expected)
