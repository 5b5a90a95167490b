"""Output people read (issue 10 items 1, 3, 4): tables that fit a terminal without
breaking a name, value summaries as numpy prints them, well-formed signature lines,
and counts in words ("1 variable", "1 problem")."""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.test_damage import _flip, _tf_damaged


def _names_json(*args) -> list[str]:
    return [v["name"] for v in run_cli(*args, "--json").json()["variables"]]


def _assert_names_whole(stdout: str, names, width: int) -> None:
    """Each name is on one line, whole; a line is wider than the terminal only to show one name whole."""
    lines = stdout.splitlines()
    for name in names:
        assert any(name in line for line in lines), (name, stdout)
    for line in lines:
        assert len(line) <= width or len(line.split()) == 1, (line, stdout)


def _differing(tf, a: str, b: str) -> list[str]:
    """Variables whose values differ, as TensorFlow reads them."""
    ra, rb = tf.train.load_checkpoint(a), tf.train.load_checkpoint(b)
    return [n for n, _ in tf.train.list_variables(a)
            if n != "_CHECKPOINTABLE_OBJECT_GRAPH" and not np.array_equal(ra.get_tensor(n), rb.get_tensor(n))]


def _tables(fixtures_dir, tmp_path, tf):
    """(command line, the names its table must show whole, by TensorFlow where it reads tensors)."""
    tf2 = fixtures_dir / "tf2_manager"
    damaged = tmp_path / "damaged"
    shutil.copytree(tf2, damaged)
    from ckpttool.formats.tf.bundle import open_bundle

    with open_bundle(str(damaged / "ckpt-3")) as bundle:
        parts = {v.name: v.parts[0] for v in bundle.variables if not v.internal}
    for name in list(parts)[:3]:
        _flip(damaged / "ckpt-3.data-00000-of-00001", parts[name].offset)
    state = tf.train.get_checkpoint_state(str(fixtures_dir / "prune_run"))
    return [
        (["ls", fixtures_dir / "prune_run"], [os.path.basename(p) for p in state.all_model_checkpoint_paths]),
        (["inspect", tf2 / "ckpt-3"], [n for n, _ in tf.train.list_variables(str(tf2 / "ckpt-3"))
                                       if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]),
        (["verify", damaged / "ckpt-3"], sorted(_tf_damaged(tf, str(damaged / "ckpt-3"), parts))),
        (["diff", tf2 / "ckpt-2", tf2 / "ckpt-3"], _differing(tf, str(tf2 / "ckpt-2"), str(tf2 / "ckpt-3"))),
        (["prune", "--dry-run", "--keep-last", "2", fixtures_dir / "prune_run"],
         [os.path.basename(p) for p in state.all_model_checkpoint_paths]),
    ]


@pytest.mark.parametrize("width", [80, 60])
def test_tables_never_break_a_name(fixtures_dir, tmp_path, tf, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    for args, names in _tables(fixtures_dir, tmp_path / str(width), tf):
        result = run_cli(*args)
        assert result.exit_code in (0, 1), result.stderr
        assert names
        _assert_names_whole(result.stdout, names, width)


def test_narrow_tables_shorten_the_time_and_drop_lesser_columns(fixtures_dir, monkeypatch):
    wide = run_cli("ls", fixtures_dir / "saver_run").stdout.splitlines()
    monkeypatch.setenv("COLUMNS", "60")
    narrow = run_cli("ls", fixtures_dir / "saver_run").stdout.splitlines()
    assert wide[0].split() == ["name", "step", "time", "size", "shards", "complete", "in", "state", "latest", "meta"]
    assert "meta" not in narrow[0] and "shards" not in narrow[0] and "complete" in narrow[0]
    assert all(len(line) <= 60 for line in narrow)
    # The time in its short form: month-day hour:minute, no seconds.
    row = next(line for line in narrow if line.startswith("model.ckpt-50"))
    assert any(len(word) == 5 and word[2] == "-" for word in row.split())


def test_tables_of_thousands_of_rows_keep_names_whole(fixtures_dir, tf, monkeypatch):
    """Over 500 rows tables are laid out in one pass: the same rules hold."""
    monkeypatch.setenv("COLUMNS", "40")
    prefix = str(fixtures_dir / "many_vars" / "many")
    names = [n for n, _ in tf.train.list_variables(prefix)]
    result = run_cli("inspect", prefix)
    assert result.exit_code == 0 and len(names) > 500
    _assert_names_whole(result.stdout, names, 40)


def test_piped_tables_are_never_wrapped(fixtures_dir, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    result = run_cli("inspect", fixtures_dir / "tf2_manager")
    rows = [line for line in result.stdout.splitlines() if ".ATTRIBUTES" in line]
    assert len(rows) == 18 and all("float32" in row or "int64" in row for row in rows)


# -- item 3: which checkpoint a directory stands for; values summarised as numpy does ----------

def test_inspect_and_diff_say_which_checkpoint_a_directory_resolved_to(fixtures_dir, tf, monkeypatch):
    monkeypatch.chdir(fixtures_dir)
    result = run_cli("inspect", "--json", "tf2_manager")
    latest = tf.train.latest_checkpoint("tf2_manager")
    assert result.stderr.splitlines()[0] == f"tf2_manager -> {latest}"
    assert result.json()["checkpoint"] == latest
    diff = run_cli("diff", "saver_run", "tf2_manager/ckpt-2")
    # Its state file holds absolute paths: shown from the directory as given all the same.
    latest = os.path.basename(tf.train.latest_checkpoint("saver_run"))
    assert diff.stderr.splitlines() == [f"saver_run -> saver_run/{latest}"]
    assert run_cli("inspect", "tf2_manager/ckpt-2").stderr == ""  # a prefix needs no header
    saved_model = run_cli("inspect", "tf2_saved_model/model")
    assert saved_model.stderr.splitlines()[0] == "tf2_saved_model/model -> tf2_saved_model/model/variables/variables"
    assert run_cli("inspect", "-q", "tf2_manager").stderr == ""  # bare names: no header


def _printed_values(stdout: str, name: str) -> str:
    block = stdout.split(f"\n{name} (", 1)[1].split("\n", 1)[1]
    return block.split("\n\n", 1)[0]


@pytest.mark.parametrize("fixture,name", [("every_dtype/dtypes", "big/matrix"), ("max_shard/sharded",
                                                                                   "module/big/.ATTRIBUTES/VARIABLE_VALUE")])
def test_values_are_summarised_as_numpy_prints_them(fixtures_dir, tf, fixture, name):
    """A large tensor (here also one stored as slices over three shards) prints as numpy
    summarises the whole array; --full prints every element."""
    prefix = str(fixtures_dir / fixture)
    expected = tf.train.load_checkpoint(prefix).get_tensor(name)
    assert expected.size > 1000
    result = run_cli("inspect", "--values", "--name", name, prefix)
    assert result.exit_code == 0, result.stderr
    assert "summarised (--full prints all)" in result.stdout
    assert _printed_values(result.stdout, name) == np.array2string(expected, threshold=1000, separator=", ")
    full = run_cli("inspect", "--values", "--full", "--name", name, prefix)
    assert _printed_values(full.stdout, name) == np.array2string(expected, threshold=sys.maxsize, separator=", ")


def test_summaries_read_in_bounded_memory(tmp_path, tf):
    """The corners of a 64 MiB tensor are found in one pass over its chunks, never holding it whole."""
    import tracemalloc

    from ckpttool.formats.reader import open_checkpoint
    from ckpttool.ops.tensors.values import format_values, read_corners

    value = np.arange(16 * 1024 * 1024, dtype=np.float32).reshape(4096, 4096)
    prefix = tf.train.Checkpoint(v=tf.Variable(value)).write(str(tmp_path / "big"))
    with open_checkpoint(prefix) as reader:
        var = reader.variable("v/.ATTRIBUTES/VARIABLE_VALUE")
        tracemalloc.start()
        corners = read_corners(reader, var)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 32 << 20, peak  # the tensor is 64 MiB
    expected = tf.train.load_checkpoint(prefix).get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")
    assert format_values(corners, True) == np.array2string(expected, threshold=1000, separator=", ")


def test_json_values_warn_past_the_threshold_and_limit_caps_them(fixtures_dir, tf, monkeypatch):
    from ckpttool.cli.hot import inspect as inspect_command
    from tests.oracle import assert_value_matches

    prefix = str(fixtures_dir / "every_dtype" / "dtypes")
    reader = tf.train.load_checkpoint(prefix)
    monkeypatch.setattr(inspect_command, "JSON_VALUES_WARNING", 1000)
    result = run_cli("inspect", "--json", "--values", "-f", "^(big|f32|i64)", prefix)
    assert "warning: --values puts" in result.stderr and "--limit BYTES" in result.stderr
    capped = run_cli("inspect", "--json", "--values", "--limit", "100", "-f", "^(big|f32|i64)", prefix)
    assert capped.exit_code == 0 and "warning" not in capped.stderr
    doc = capped.json()
    by_name = {v["name"]: v for v in doc["variables"]}
    assert by_name["big/matrix"]["value"] is None  # 234 KiB: over the limit, left out
    assert doc["values_limit_bytes"] == 100 and doc["values_omitted"] == 1
    for name in ("f32", "i64"):
        assert_value_matches(by_name[name]["value"], reader.get_tensor(name), by_name[name]["dtype"], name)
    human = run_cli("inspect", "--values", "--full", "--limit", "100", "--name", "big/matrix", prefix)
    assert "big/matrix (float32 [300, 200]): value left out (over --limit)" in human.stdout
    assert run_cli("inspect", "--limit", "1MB", prefix).exit_code == 2  # --limit goes with --values


# -- item 4: signature lines, counts in words -------------------------------------------------

def test_signature_lines_are_well_formed(fixtures_dir, tf):
    from tensorflow.python.tools import saved_model_utils

    model = fixtures_dir / "tf2_saved_model" / "model"
    out = run_cli("inspect", "--meta", model).stdout
    assert "invalid" not in out and "None" not in out and "graph(s)" not in out
    signatures = saved_model_utils.get_meta_graph_def(str(model), "serve").signature_def
    for name, signature in signatures.items():
        lines = out.split(f"  signature {name}", 1)[1].split("\n  signature", 1)[0].splitlines()
        assert lines[0] == (f" ({signature.method_name}):" if signature.method_name else ":")
        for key, info in signature.outputs.items():
            if info.dtype == 0:  # the init op's output is an operation, not a tensor
                assert f"    output {key}: op {info.name}" in lines
            else:
                dims = ", ".join("?" if d.size < 0 else str(d.size) for d in info.tensor_shape.dim)
                dtype = tf.dtypes.as_dtype(info.dtype).name
                assert f"    output {key}: {dtype} [{dims}] ({info.name})" in lines
        for key, info in signature.inputs.items():
            dims = ", ".join("?" if d.size < 0 else str(d.size) for d in info.tensor_shape.dim)
            assert f"    input  {key}: {tf.dtypes.as_dtype(info.dtype).name} [{dims}] ({info.name})" in lines


def test_counts_are_words(copy_fixture, fixtures_dir, tf):
    run = fixtures_dir / "saver_run"
    assert run_cli("inspect", "--name", "global_step", run).stdout.splitlines()[-1].startswith(
        "1 variable, 1 element, 8 B")
    diff = run_cli("diff", "-f", "^global_step$", run / "model.ckpt-40", run)
    assert diff.stdout.splitlines()[-1] == "1 difference: 1 variable compared"
    assert "1 element differs" in diff.stdout
    damaged = copy_fixture("saver_run")
    from ckpttool.formats.tf.bundle import open_bundle

    with open_bundle(str(damaged / "model.ckpt-50")) as bundle:
        offset = bundle.variable("embedding").parts[0].offset
    _flip(damaged / "model.ckpt-50.data-00000-of-00001", offset)
    readable = len(tf.train.list_variables(str(damaged / "model.ckpt-50"))) - 1
    verdict = run_cli("verify", damaged / "model.ckpt-50").stdout.splitlines()[-1]
    assert verdict.startswith("DAMAGED (1 problem): ") and f" {readable} tensors, " in verdict


# -- issue 18 item 11: every table of every command fits 60, 80 and 120 columns ---------------

def _every_table(fixtures_dir, tmp_path, tf):
    """Command lines covering each table ckpttool prints (stats, verify summaries with damage)."""
    tf2 = fixtures_dir / "tf2_manager"
    damaged = tmp_path / "damaged_run"
    shutil.copytree(tf2, damaged)
    from ckpttool.formats.tf.bundle import open_bundle

    with open_bundle(str(damaged / "ckpt-3")) as bundle:
        parts = {v.name: v.parts[0] for v in bundle.variables if not v.internal}
    for name in list(parts)[:3]:
        _flip(damaged / "ckpt-3.data-00000-of-00001", parts[name].offset)
    names = [n for n, _ in tf.train.list_variables(str(tf2 / "ckpt-3")) if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    state = tf.train.get_checkpoint_state(str(fixtures_dir / "prune_run"))
    prune_names = [os.path.basename(p) for p in state.all_model_checkpoint_paths]
    return [
        (["ls", fixtures_dir / "prune_run"], prune_names),
        (["ls", "-r", fixtures_dir], []),
        (["inspect", tf2 / "ckpt-3"], names),
        (["inspect", "--stats", tf2 / "ckpt-3"], names),
        (["inspect", "--stats", fixtures_dir / "saver_run"], []),
        (["verify", damaged / "ckpt-3"], []),
        (["verify", "--all", damaged], []),
        (["diff", tf2 / "ckpt-2", tf2 / "ckpt-3"], []),
        (["prune", "--dry-run", "--keep-last", "2", fixtures_dir / "prune_run"], prune_names),
        (["rename-vars", "--dry-run", "--add-prefix", "tower_0/", tf2 / "ckpt-3", tmp_path / "renamed" / "ckpt-3"],
         []),
        (["convert", "--dry-run", "--sep", ".", tf2 / "ckpt-3", tmp_path / "converted.safetensors"], []),
    ]


@pytest.mark.parametrize("width", [60, 80, 120])
def test_every_table_fits_the_terminal(fixtures_dir, tmp_path, tf, monkeypatch, width):
    """No line is wider than the terminal except one holding a single name; `inspect --stats`
    once took 101 columns at any width and `verify --all` 104."""
    monkeypatch.setenv("COLUMNS", str(width))
    for args, names in _every_table(fixtures_dir, tmp_path / str(width), tf):
        result = run_cli(*args)
        assert result.exit_code in (0, 1), (args, result.stderr)
        assert result.stdout.strip(), args
        _assert_names_whole(result.stdout, names, width)


def test_narrow_stats_keep_every_statistic(fixtures_dir, tf, monkeypatch):
    """At 60 columns the statistics are stacked or shortened, never dropped: each variable's
    min and max (by TensorFlow, to 4 significant digits) still show."""
    monkeypatch.setenv("COLUMNS", "60")
    prefix = str(fixtures_dir / "saver_run")
    result = run_cli("inspect", "--stats", prefix)
    assert result.exit_code == 0, result.stderr
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(prefix))
    for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(prefix)):
        value = np.asarray(reader.get_tensor(name))
        if value.dtype.kind != "f" or value.size == 0:
            continue
        assert f"{float(value.min()):.4g}" in result.stdout, (name, result.stdout)
        assert f"{float(value.max()):.4g}" in result.stdout, (name, result.stdout)
    for header in ("nan", "inf", "zeros", "mean", "std"):
        assert header in result.stdout


# -- issue 18 item 16: safetensors' float4 and E8M0 dtypes are named, not called foreign -----

@pytest.mark.parametrize("st_dtype,shape,size,named", [
    ("F4", [2, 4], 4, "float4_e2m1fn"), ("F8_E8M0", [3], 3, "float8_e8m0fnu")])
def test_safetensors_float4_and_e8m0_are_refused_by_name(tmp_path, st_dtype, shape, size, named):
    """The format defines F4 and F8_E8M0 (the safetensors library parses such a file);
    ckpttool refuses them, exit 3, naming the dtype, not 'no TensorFlow equivalent'."""
    import json
    import struct

    import safetensors

    header = json.dumps({"w": {"dtype": st_dtype, "shape": shape, "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    data = struct.pack("<Q", len(header)) + header + bytes(size)
    assert safetensors.deserialize(data)[0][1]["dtype"] == st_dtype  # the library's own parser accepts it
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    result = run_cli("inspect", path)
    assert_one_line_error(result, 3)
    assert st_dtype in result.stderr and named in result.stderr and "equivalent" not in result.stderr
    result = run_cli("verify", path)  # a damage report: the file cannot be checked
    assert result.exit_code == 1 and st_dtype in result.stdout and named in result.stdout, result.stdout


# -- issue 18 item 13: hints where they are cheap ---------------------------------------------

def test_hints_where_they_are_cheap(fixtures_dir, tmp_path, tf):
    tree = tmp_path / "tree"
    shutil.copytree(fixtures_dir / "saver_run", tree / "exp1" / "run")
    run = tree / "exp1" / "run"
    state = tf.train.get_checkpoint_state(str(run))
    # The copy's state file holds the fixture's absolute paths: name the checkpoint in the copy.
    prefix = str(run / os.path.basename(tf.train.latest_checkpoint(str(run))))
    # ls of a checkpoint: it is one, try inspect
    result = run_cli("ls", prefix)
    assert_one_line_error(result, 3)
    assert "is a checkpoint" in result.stderr and f"hint: did you mean `ckpttool inspect {prefix}`" in result.stderr
    # ls of a directory with run directories two levels below: try -r
    result = run_cli("ls", tree)
    assert result.exit_code == 0 and "no checkpoints" in result.stdout
    assert f"ckpttool ls -r {tree}" in result.stderr and str(run) in result.stderr
    # a step that does not exist: the ones that do
    missing = str(run / "model.ckpt-7")
    for command in ("inspect", "verify"):
        result = run_cli(command, missing)
        assert_one_line_error(result, 3)
        hint = next(line for line in result.stderr.splitlines() if line.startswith("hint: "))
        for path in state.all_model_checkpoint_paths:
            assert os.path.basename(path) in hint, (path, hint)
    # a corrupt index: what to run next
    index = prefix + ".index"
    data = bytearray(open(index, "rb").read())
    data[20:40] = bytes(20)
    open(index, "wb").write(bytes(data))
    with pytest.raises(Exception):
        tf.train.load_checkpoint(prefix).get_variable_to_shape_map()  # TensorFlow cannot read it either
    result = run_cli("inspect", prefix)
    assert_one_line_error(result, 3)
    assert all(step in result.stderr for step in ("ckpttool verify", "ckpttool repair", "prune --clean"))


def test_a_missing_bucket_is_not_a_missing_directory(s3_server):
    result = run_cli("ls", "s3://no-such-bucket-h18/runs/exp1")
    assert_one_line_error(result, 3)
    assert "no such bucket: s3://no-such-bucket-h18" in result.stderr
    result = run_cli("ls", s3_server.url("runs", "missing"))  # the bucket exists: a directory is missing
    assert_one_line_error(result, 3)
    assert "no such directory: s3://ckpt-bucket/runs/missing" in result.stderr


# -- issue 18 item 12: progress counts bytes as they are read; one unit system ----------------

@pytest.fixture(scope="module")
def one_big_tensor(tmp_path_factory, tf):
    """A checkpoint holding one 24 MiB tensor (and the object graph), written by TensorFlow."""
    directory = tmp_path_factory.mktemp("big")
    value = np.arange(6 << 20, dtype=np.float32)
    prefix = tf.train.Checkpoint(w=tf.Variable(value)).write(str(directory / "ckpt"))
    return prefix, value.nbytes


@pytest.fixture(scope="module")
def s3_server():
    """One S3 test server for this module's bucket tests, the backends pointed at it (and
    ckpttool's cached file systems dropped, so none points at another test's server)."""
    from ckpttool.storage import remote
    from tests.remote_servers import start_s3

    server = start_s3()
    saved = dict(os.environ)
    os.environ.update(server.env)
    remote.set_storage_options({})
    try:
        yield server
    finally:
        os.environ.clear()
        os.environ.update(saved)
        remote.set_storage_options({})
        server.stop()


def _progress_calls(function, *args, **kwargs) -> list[int]:
    calls: list[int] = []
    function(*args, on_progress=calls.append, **kwargs)
    return calls


def test_verify_progress_moves_within_one_large_tensor(one_big_tensor, s3_server):
    """Progress was counted per finished tensor: one call for a 24 MiB tensor, so a bar sat at 0
    while it was read (65 s on S3). Now it moves as pieces (local) and ranged GETs (S3) complete."""
    from ckpttool.ops.tensors.verify import total_bytes, verify_checkpoint
    from ckpttool.ops.targets import resolve_target
    from tests.remote_servers import upload_tree

    prefix, nbytes = one_big_tensor
    calls = _progress_calls(verify_checkpoint, prefix)
    assert sum(calls) == total_bytes(resolve_target(prefix)) >= nbytes
    assert sum(1 for c in calls if c < nbytes) >= 2 and max(calls) < nbytes, calls
    url = upload_tree(s3_server, os.path.dirname(prefix), "big-h18")
    remote = f"{url}/{os.path.basename(prefix)}"
    calls = _progress_calls(verify_checkpoint, remote)
    assert sum(calls) == total_bytes(resolve_target(remote)) >= nbytes
    assert max(calls) < nbytes, calls


def test_diff_reports_progress(one_big_tensor, fixtures_dir):
    from ckpttool.ops.tensors.diff import bytes_to_compare, diff_checkpoints
    from ckpttool.ops.targets import resolve_target

    prefix, nbytes = one_big_tensor
    a, b = resolve_target(prefix), resolve_target(prefix)
    calls = _progress_calls(diff_checkpoints, a, b)
    assert sum(calls) == bytes_to_compare(a, b) == 2 * nbytes
    assert len(calls) >= 2 and max(calls) < 2 * nbytes, calls


def test_bars_use_the_units_of_the_tables():
    """Bars said `0.0/1.6 GB` beside tables in GiB; now both say GiB (ckpttool.text.format_size)."""
    from ckpttool.cli.progress import bar_texts

    size = 1_610_612_736  # 1.5 GiB, 1.6 GB
    done, speed = bar_texts(0, size, 120 << 20)
    assert done.endswith("/" + render_size(size)) and "GiB" in done and "GB" not in done.replace("GiB", "")
    assert speed == render_size(120 << 20) + "/s" and "MiB" in speed


def render_size(size: int) -> str:
    from ckpttool.cli.render import human_bytes

    return human_bytes(size)


def test_rename_from_a_bucket_reports_progress(one_big_tensor, tmp_path, s3_server):
    """rename-vars from a bucket showed nothing while it streamed the data; now it reports
    bytes chunk by chunk, in all the size of the source's data shards."""
    import glob

    from ckpttool.ops.tensors.rename import apply_rename, bytes_to_copy, plan_rename
    from ckpttool.ops.tensors.rename_rules import RenameRules
    from tests.remote_servers import upload_tree

    prefix, nbytes = one_big_tensor
    shards = sum(os.path.getsize(p) for p in glob.glob(prefix + ".data-*"))
    url = upload_tree(s3_server, os.path.dirname(prefix), "rename-h18")
    plan = plan_rename(f"{url}/{os.path.basename(prefix)}", str(tmp_path / "out" / "ckpt"),
                       RenameRules.from_options(add_prefix="tower_0/"))
    assert bytes_to_copy(plan) == shards
    calls = _progress_calls(apply_rename, plan)
    assert sum(calls) == shards and len(calls) >= 2 and max(calls) < nbytes, calls
