"""Hostile input (issue 8 items 7, 8, 10, 11): whatever a file claims, ckpttool
allocates what the files hold, never opens a FIFO or a device, shows names that
are not UTF-8, and says "out of memory" when that is what happened. Commands
that could blow up run in a subprocess with their address space capped."""
from __future__ import annotations

import base64
import json
import os
import shutil
import sys

import numpy as np
import pytest

from ckpttool.formats.tf.bundle import open_bundle
from ckpttool.formats.tf.bundle_writer import BundleWriter, make_entry, write_index
from ckpttool.formats.dtypes import dtype_from_name
from ckpttool.formats.tf.object_graph import ELLIPSIS, MAX_SHOWN_DEPTH, KeyObjectPaths
from ckpttool.formats.tf.ordered_code import encode_slice_key
from ckpttool.formats.tf.protos import checkpoint_pb2 as pb
from ckpttool.formats.tf.table import build_table
from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.hostile import assert_clean_exit, float_entry, run_limited, slice_proto, write_bundle

# -- item 7: sizes a file declares are checked against the file ------------


def test_header_claiming_2_31_shards_allocates_nothing(tmp_path):
    """A 100-byte index whose header claims 2^31-1 shards: listed, verified, never enumerated."""
    write_bundle(tmp_path / "x", {}, {}, num_shards=2**31 - 1)
    assert os.path.getsize(tmp_path / "x.index") < 200
    ls = run_limited("ls", "--json", tmp_path)
    assert_clean_exit(ls, (0,))
    (problem,) = [p for p in json.loads(ls.stdout)["problems"] if p["kind"] == "missing_shards"]
    assert "and 2147483637 more" in problem["message"]
    verify = run_limited("verify", "--json", tmp_path / "x")
    assert_clean_exit(verify, (1,))
    errors = json.loads(verify.stdout)["errors"]
    assert len(errors) == 21 and "2147483627 more" in errors[-1]["message"]
    assert_clean_exit(run_limited("inspect", "--stats", tmp_path / "x"), (0,))


def test_data_shard_cut_inside_an_element(copy_fixture, fixtures_dir, tf):
    """A shard truncated mid-float: the tensors TensorFlow cannot read are exit 3 / verify's
    `truncated`, the others still read."""
    prefix = copy_fixture("every_dtype") / "dtypes"
    with open_bundle(str(prefix)) as bundle:
        big = bundle.variable("big/matrix").parts[0]
    os.truncate(str(prefix) + ".data-00000-of-00001", big.offset + 4 * 1000 + 3)
    reader = tf.train.load_checkpoint(str(prefix))
    unreadable = set()
    for name in reader.get_variable_to_shape_map():
        try:
            reader.get_tensor(name)
        except Exception:  # TensorFlow's OutOfRangeError / DataLossError
            unreadable.add(name)
    assert "big/matrix" in unreadable
    intact = fixtures_dir / "every_dtype" / "dtypes"
    for result in (run_cli("inspect", "--values", prefix), run_cli("inspect", "--stats", prefix),
                   run_cli("diff", intact, prefix)):
        assert_one_line_error(result, 3)
        assert "truncated" in result.stderr
    doc = run_cli("verify", "--json", prefix).json()
    truncated = [e for e in doc["errors"] if e["problem"] == "truncated"]  # one problem for the one cause
    assert [e["name"] for e in truncated] == ["dtypes.data-00000-of-00001"]
    assert set(truncated[0]["tensors"]) == unreadable


def _repartition(run, slices) -> str:
    """The partitioned fixture with `scope/part` (7x2, stored as rows 0-3, 3-5, 5-7)
    claiming `slices`; a new extent reuses the stored bytes of the first slice."""
    prefix = str(run / "model.ckpt-5")
    with open_bundle(prefix) as bundle:
        entries = bundle.raw_entries()
        num_shards = bundle.header.num_shards
    first = entries[encode_slice_key(b"scope/part", [(0, 3), (0, 2)])]
    full = entries[b"scope/part"]
    del full.slices[:]
    for extents in slices:
        full.slices.append(slice_proto(extents))
        entries.setdefault(encode_slice_key(b"scope/part", extents), first)
    write_index(prefix, num_shards, entries)
    return prefix


@pytest.mark.parametrize("case,slices", [
    ("uncovered", [((0, 3), (0, 2)), ((3, 2), (0, 2))]),
    ("overlapping", [((0, 3), (0, 2)), ((2, 3), (0, 2)), ((5, 2), (0, 2))]),
    ("outside", [((0, 3), (0, 2)), ((3, 2), (0, 2)), ((5, 3), (0, 2))]),
])
def test_partitioned_slices_that_do_not_tile(copy_fixture, tf, case, slices):
    prefix = _repartition(copy_fixture("partitioned"), slices)
    with pytest.raises(Exception):  # TensorFlow refuses to assemble them too
        tf.train.load_checkpoint(prefix).get_tensor("scope/part")
    assert run_cli("inspect", prefix).exit_code == 0  # listing needs no values
    for flags in (["--values"], ["--stats"]):
        result = run_cli("inspect", *flags, "--filter", "^scope/part$", prefix)
        assert_one_line_error(result, 3)
        assert "scope/part" in result.stderr
    doc = run_cli("verify", "--json", prefix).json()
    assert doc["ok"] is False
    problems = {(e["name"], e["problem"]) for e in doc["errors"]}
    assert ("scope/part", "bad_slices") in problems
    # A slice left out of the variable leaves bytes in the shard that nothing accounts for.
    assert problems - {("scope/part", "bad_slices"), ("model.ckpt-5.data-00000-of-00001", "size_mismatch")} == set()


def test_claimed_sizes_far_beyond_the_files(tmp_path):
    """10^12-element shapes, in a plain and a partitioned tensor, next to 16 real bytes."""
    data = np.arange(4, dtype=np.float32).tobytes()
    huge = (10**6, 10**6)
    half = [((0, 500000), (0, -1)), ((500000, 500000), (0, -1))]
    full = make_entry(dtype_from_name("float32"), huge, 0, 0, 0, 0)
    for extents in half:
        full.slices.append(slice_proto(extents))
    entries = {b"plain": float_entry(huge, 0, 0, data=data), b"parted": full, b"small": float_entry((4,), 0, 0, data=data)}
    for extents in half:
        entries[encode_slice_key(b"parted", extents)] = float_entry((500000, 10**6), 0, 0, data=data)
    write_bundle(tmp_path / "x", entries, {0: data})
    for name in ("plain", "parted"):
        for flags in (["--values"], ["--stats"]):
            result = run_limited("inspect", *flags, "--filter", f"^{name}$", tmp_path / "x")
            assert_clean_exit(result, (3,))
            assert "truncated" in result.stderr
    verify = run_limited("verify", "--json", tmp_path / "x")
    assert_clean_exit(verify, (1,))
    problems = [(e["name"], e["problem"], sorted(e["tensors"])) for e in json.loads(verify.stdout)["errors"]]
    assert problems == [("x.data-00000-of-00001", "truncated", ["parted", "plain"])]
    strings = make_entry(dtype_from_name("string"), (10**12,), 0, 0, 10, 0)
    write_bundle(tmp_path / "s", {b"s": strings}, {0: b"\0" * 10})
    result = run_limited("inspect", "--values", tmp_path / "s")
    assert_clean_exit(result, (3,))
    assert "cannot hold" in result.stderr


def test_empty_tensor_of_a_shape_no_array_can_have(tmp_path):
    """[0, 3, 2^62] holds no element, yet numpy cannot shape it (found by the fuzz test)."""
    write_bundle(tmp_path / "x", {b"e": float_entry((0, 3, 2**62), 0, 0, size=0)}, {0: b""})
    result = run_cli("inspect", "--values", tmp_path / "x")
    assert_one_line_error(result, 3)
    assert "too large for any tensor" in result.stderr


def test_tensors_claiming_the_same_bytes_are_refused(tmp_path):
    """Two slices of one variable pointing at one stored range (no writer does
    that): refused, so assembling never needs more than the shard holds."""
    data = np.arange(3, dtype=np.float32).tobytes()
    full = make_entry(dtype_from_name("float32"), (2, 3), 0, 0, 0, 0)
    entries = {b"v": full}
    for extents in ([(0, 1), (0, -1)], [(1, 1), (0, -1)]):
        full.slices.append(slice_proto(extents))
        entries[encode_slice_key(b"v", extents)] = float_entry((1, 3), 0, 0, data=data)
    write_bundle(tmp_path / "x", entries, {0: data})
    result = run_cli("inspect", "--values", tmp_path / "x")
    assert_one_line_error(result, 3)
    assert "claim the same bytes" in result.stderr


def _v1_file(path, shape, float_values, dtype: int = 1, field: str = "float_val") -> bytes:
    """A one-tensor V1 checkpoint whose TensorProto stores `float_values` (in `field`, of DataType
    `dtype`) for `shape`."""
    header = pb.SavedTensorSlices()
    meta = header.meta.tensor.add(name="x", type=dtype)
    for dim in shape:
        meta.shape.dim.add(size=dim)
    meta.slice.add().extent.add()
    header.meta.versions.producer = 1
    value = pb.SavedTensorSlices()
    value.data.name = "x"
    value.data.slice.extent.add()
    tensor = value.data.data
    tensor.dtype = dtype
    for dim in shape:
        tensor.tensor_shape.dim.add(size=dim)
    getattr(tensor, field).extend(float_values)
    with open(path, "wb") as handle:
        handle.write(build_table([(b"", header.SerializeToString()),
                                  (encode_slice_key(b"x", [(0, -1)] * len(shape)), value.SerializeToString())]))
    return tensor.SerializeToString()


def test_v1_short_tensor_proto_is_expanded_only_within_bounds(tmp_path, tf):
    from tensorflow.core.framework import tensor_pb2

    # A few values for a small shape: the last one repeats, as TensorFlow's make_ndarray reads it.
    proto = _v1_file(tmp_path / "small", (2, 3), [1.5, -2.0])
    expected = tf.make_ndarray(tensor_pb2.TensorProto.FromString(proto))
    doc = run_cli("inspect", "--json", "--values", tmp_path / "small").json()
    np.testing.assert_array_equal(np.array(doc["variables"][0]["value"]), expected)
    # One value claiming 3e8 elements, in a file of a few hundred bytes: refused, not expanded.
    _v1_file(tmp_path / "bomb", (300_000_000,), [1.0])
    assert os.path.getsize(tmp_path / "bomb") < 300
    listing = run_limited("inspect", "--json", tmp_path / "bomb")
    assert_clean_exit(listing, (0,))
    assert json.loads(listing.stdout)["variables"][0]["shape"] == [300_000_000]
    for args in (["inspect", "--values"], ["inspect", "--stats"], ["verify"]):
        result = run_limited(*args, tmp_path / "bomb")
        assert_clean_exit(result, (1, 3))
        assert "expanding" in result.stderr + result.stdout


def test_v1_repeated_string_is_bounded_by_its_bytes(tmp_path, tf):
    """One 4,000-byte string_val for 400,000 elements in a V1 file of a few KB (TensorFlow's rule:
    the value fills the shape, as make_ndarray shows on a small one): 1.6 GB once expanded, though
    the elements (pointers to one value) counted 3 MB. Refused (exit 3) under a memory cap, nothing
    written."""
    from tensorflow.core.framework import tensor_pb2

    proto = _v1_file(tmp_path / "small", (3,), [b"ab"], dtype=7, field="string_val")
    assert tf.make_ndarray(tensor_pb2.TensorProto.FromString(proto)).tolist() == [b"ab"] * 3
    assert run_cli("inspect", "--json", "--values", tmp_path / "small").json()["variables"][0]["value"] == ["ab"] * 3
    _v1_file(tmp_path / "bomb", (400_000,), [b"x" * 4000], dtype=7, field="string_val")
    assert os.path.getsize(tmp_path / "bomb") < 5000
    result = run_limited("convert", tmp_path / "bomb", tmp_path / "out" / "ckpt-1")
    assert_clean_exit(result, (3,))
    assert_one_line_error(result, 3)
    assert "expanding" in result.stderr and not (tmp_path / "out").exists()


def _object_graph_bundle(prefix, graph: pb.TrackableObjectGraph, keys) -> None:
    writer = BundleWriter(str(prefix))
    for key in keys:
        writer.add(key, dtype_from_name("float32"), np.ones(2, np.float32))
    writer.add("_CHECKPOINTABLE_OBJECT_GRAPH", dtype_from_name("string"), np.array(graph.SerializeToString(),
                                                                                 dtype=object))
    writer.finish()


def test_object_graph_chain_of_30000_nodes(tmp_path):
    """Paths are parent links, spelled out once per attribute and cut to MAX_SHOWN_DEPTH."""
    graph = pb.TrackableObjectGraph()
    depth = 30_000
    for i in range(depth):
        node = graph.nodes.add()
        node.children.add(node_id=i + 1, local_name="n")
    graph.nodes.add().attributes.add(name="VARIABLE_VALUE", full_name="v", checkpoint_key="v")
    _object_graph_bundle(tmp_path / "ckpt", graph, ["v"])
    result = run_limited("inspect", "--json", "--tree", tmp_path / "ckpt")
    assert_clean_exit(result, (0,))
    (var,) = json.loads(result.stdout)["variables"]
    assert var["object_path"] == "/".join([ELLIPSIS] + ["n"] * (MAX_SHOWN_DEPTH - 1))
    human = run_limited("inspect", "--tree", tmp_path / "ckpt")
    assert_clean_exit(human, (0,))
    assert max(len(line) for line in human.stdout.splitlines()) < 1000


def test_object_graph_with_20000_attributes(tmp_path):
    """Stored keys that an attribute key only prefixes (multi-tensor saveables) are
    found by bisection, each the longest prefix, as a scan of every key would."""
    graph = pb.TrackableObjectGraph()
    root = graph.nodes.add()
    count = 20_000
    for i in range(count):
        root.children.add(node_id=i + 1, local_name=f"obj{i}")
    for i in range(count):
        graph.nodes.add().attributes.add(name="STATE", checkpoint_key=f"obj{i}/.ATTRIBUTES/STATE")
    keys = [f"obj{i}/.ATTRIBUTES/STATE_{part}" for i in range(count) for part in ("a",)]
    _object_graph_bundle(tmp_path / "ckpt", graph, keys)
    doc = run_cli("inspect", "--json", "--tree", tmp_path / "ckpt").json()
    paths = {v["name"]: v["object_path"] for v in doc["variables"]}
    assert len(paths) == count
    assert all(paths[f"obj{i}/.ATTRIBUTES/STATE_a"] == f"obj{i}/STATE" for i in range(count))


def test_longest_prefix_lookup_matches_a_scan():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    words = st.text(alphabet="ab/", max_size=6)

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(words, st.text(max_size=3), max_size=12), words)
    def check(paths, key):
        # The scan this replaced: the exact key, else the longest non-empty key that prefixes it.
        scanned = key if key in paths else max((k for k in paths if key.startswith(k)), key=len, default=None)
        assert KeyObjectPaths(paths).of(key) == (paths[scanned] if scanned is not None and (scanned or key in paths)
                                                 else None)

    check()


# -- item 8: special and unbounded files ------------------------------------


def _make_special(path, kind: str) -> None:
    os.remove(path)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/zero", path)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
@pytest.mark.parametrize("where", ["checkpoint", "model.ckpt-50.index", "model.ckpt-50.data-00000-of-00001"])
def test_special_files_are_never_opened(copy_fixture, where, kind):
    run = copy_fixture("saver_run")
    _make_special(run / where, kind)
    prefix = run / "model.ckpt-50"
    results = {args: run_limited(*args, timeout=120) for args in [
        ("ls", "--json", run), ("latest", run), ("inspect", run), ("inspect", "--values", prefix),
        ("verify", "--json", prefix)]}
    for proc in results.values():
        assert_clean_exit(proc)
    if where == "checkpoint":
        (problem,) = json.loads(results[("ls", "--json", run)].stdout)["problems"]
        # A link to /dev/zero leaves the directory: refused before anything looks at what it is.
        assert problem["kind"] == "bad_state_file" and ("not a regular file" in problem["message"]
                                                        or "outside its directory" in problem["message"])
        latest = results[("latest", run)]
        assert latest.returncode == 0 and latest.stdout.strip() == str(prefix) and "warning:" in latest.stderr
    elif where.endswith(".index"):
        assert results[("inspect", "--values", prefix)].returncode == 3
    else:
        assert results[("inspect", "--values", prefix)].returncode == 3
        stderr = results[("inspect", "--values", prefix)].stderr
        assert "not a regular file" in stderr or "outside its directory" in stderr
        assert results[("verify", "--json", prefix)].returncode == 1
        ls = json.loads(results[("ls", "--json", run)].stdout)
        assert next(c for c in ls["checkpoints"] if c["name"] == "model.ckpt-50")["complete"] is False


def test_recursive_ls_never_follows_symlinked_directories(copy_fixture, tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    shutil.move(str(copy_fixture("saver_run")), root / "run")
    os.symlink("/", root / "everything")
    os.symlink("/dev", root / "devices")
    os.symlink("..", root / "run" / "up")
    proc = run_limited("ls", "--json", "--recursive", root, timeout=120)
    assert_clean_exit(proc, (0,))
    assert [d["directory"] for d in json.loads(proc.stdout)["directories"]] == [str(root / "run")]


def test_state_file_beyond_the_cap_is_refused_and_never_echoed(copy_fixture):
    run = copy_fixture("saver_run")
    with open(run / "checkpoint", "wb") as handle:
        handle.truncate(65 << 20)  # sparse: 65 MiB that cost no disk
    latest = run_limited("latest", run)
    assert_clean_exit(latest, (0,))
    assert latest.stdout.strip() == str(run / "model.ckpt-50")
    assert "64 MiB" in latest.stderr and len(latest.stderr) < 500
    (run / "checkpoint").write_text('model_checkpoint_path: "' + "x" * 5_000_000 + '\n')
    for args in (("latest", run), ("ls", run)):
        proc = run_limited(*args)
        assert_clean_exit(proc, (0,))
        assert "unparseable state file" in proc.stderr + proc.stdout
        assert len(proc.stderr) < 1000 and len(proc.stdout) < 5000


def test_state_file_times_that_are_not_times(copy_fixture):
    """A save time that is not a number orders nothing (the files' time is used); one
    beyond what a date holds is shown as unknown."""
    run = copy_fixture("tf2_manager")
    state = (run / "checkpoint").read_text().splitlines()
    stamps = iter(["nan", "-1e300"])
    state = [f"all_model_checkpoint_timestamps: {next(stamps)}" if line.startswith("all_model_checkpoint_t")
             else line for line in state]
    (run / "checkpoint").write_text("\n".join(state) + "\n")
    doc = run_cli("ls", "--json", run).json()
    assert doc["problems"] == []  # the state file itself parses
    assert [c["timestamp_epoch"] for c in doc["checkpoints"]] == [None, -1e300]
    assert [c["timestamp"] for c in doc["checkpoints"]] == [None, None]  # no date that far back
    assert all(c["mtime"] for c in doc["checkpoints"])
    human = run_cli("ls", run)
    assert human.exit_code == 0 and "ckpt-3" in human.stdout
    assert run_cli("latest", run).stdout.strip() == str(run / "ckpt-3")


def test_state_file_entry_with_a_nul_byte(copy_fixture):
    """No file can have such a name (found by the fuzz test: the OS refuses to look it up)."""
    run = copy_fixture("tf2_manager")
    state = (run / "checkpoint").read_text().replace('model_checkpoint_path: "ckpt-3"',
                                                      'model_checkpoint_path: "ckpt-3\\000"')
    (run / "checkpoint").write_text(state)
    doc = run_cli("ls", "--json", run).json()
    assert [p["kind"] for p in doc["problems"]] == ["bad_entry"]
    latest = run_cli("latest", run)
    assert latest.exit_code == 0 and latest.stdout.strip() == str(run / "ckpt-3") and "warning:" in latest.stderr
    assert run_cli("inspect", run).exit_code == 0


# -- item 10: names that are not valid UTF-8 --------------------------------

NAMES = [b"ok", "caf\u00e9".encode(), b"bad\xff\xfename", b"scope/\xff/w"]


def _save_v2(tf, prefix, offset: float = 0.0) -> str:
    """A checkpoint of NAMES written by TensorFlow's SaveV2, which stores any bytes as a name."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    values = [tf.constant(np.arange(3, dtype=np.float32) + i + offset) for i in range(len(NAMES))]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=NAMES, shape_and_slices=[""] * len(NAMES), tensors=values)
    return prefix


@pytest.fixture
def non_utf8_checkpoint(tmp_path, tf):
    return _save_v2(tf, str(tmp_path / "src" / "ckpt"))


def _utf8(*args):
    proc = run_limited(*args, env={"PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"})
    assert_clean_exit(proc, (0, 1))
    return proc


def _json_names(items, field="name") -> list[bytes]:
    return [base64.b64decode(i[field + "_base64"]) if field + "_base64" in i else i[field].encode() for i in items]


def test_non_utf8_names_are_shown_escaped_and_exact_in_json(non_utf8_checkpoint, tf):
    prefix = non_utf8_checkpoint
    doc = json.loads(_utf8("inspect", "--json", "--tree", prefix).stdout)
    assert sorted(_json_names(doc["variables"])) == sorted(NAMES)
    bad = next(v for v in doc["variables"] if v.get("name_base64") == base64.b64encode(b"bad\xff\xfename").decode())
    assert bad["name"] == "bad\ufffd\ufffdname"
    for args in (("inspect",), ("inspect", "-q"), ("inspect", "--tree"), ("inspect", "--values")):
        out = _utf8(*args, prefix).stdout
        assert "bad\\xff\\xfename" in out and "caf\u00e9" in out
    damaged = prefix + "-damaged"
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(prefix + suffix, damaged + suffix)
    with open(damaged + ".data-00000-of-00001", "r+b") as handle:
        handle.write(b"\xff" * 48)  # every tensor's bytes
    verify = _utf8("verify", "--json", damaged)
    assert verify.returncode == 1
    assert sorted(_json_names(json.loads(verify.stdout)["errors"])) == sorted(NAMES)
    assert "bad\\xff\\xfename" in _utf8("verify", damaged).stdout
    other = _save_v2(tf, prefix + "-other/ckpt", offset=10)
    diff = _utf8("diff", "--json", prefix, other)
    assert sorted(_json_names(json.loads(diff.stdout)["differences"])) == sorted(NAMES)
    assert "scope/\\xff/w" in _utf8("diff", "-q", prefix, other).stdout


SPLITTING = [b"forged\nline", b"tab\tbed", b"plain"]


def test_a_name_with_a_newline_or_tab_never_splits_a_line_or_row(tmp_path, tf):
    """-q prints one line per name and tables one row per item, whatever bytes the names hold
    (TensorFlow's SaveV2 stores a newline or a tab as it is): a script reading the lines, or a person
    reading the table, is never shown a name or a row the file does not hold."""
    prefix = str(tmp_path / "run" / "ckpt-1")
    os.makedirs(os.path.dirname(prefix))
    values = [tf.constant(np.arange(3, dtype=np.float32) + i) for i in range(len(SPLITTING))]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=SPLITTING, shape_and_slices=[""] * len(SPLITTING), tensors=values)
    stored = sorted(name.encode() for name, _shape in tf.train.list_variables(prefix))
    assert stored == sorted(SPLITTING)  # TensorFlow keeps them as they are
    escaped = sorted(n.decode().replace("\n", "\\x0a").replace("\t", "\\x09") for n in stored)
    assert sorted(_utf8("inspect", "-q", prefix).stdout.splitlines()) == escaped
    table = _utf8("inspect", prefix).stdout
    for name in escaped:
        assert sum(name in line for line in table.splitlines()) == 1
    assert "forged\nline" not in table and "tab\tbed" not in table
    other = str(tmp_path / "other" / "ckpt-1")
    os.makedirs(os.path.dirname(other))
    tf.raw_ops.SaveV2(prefix=other, tensor_names=SPLITTING, shape_and_slices=[""] * len(SPLITTING),
                      tensors=[v + 1 for v in values])
    assert sorted(_utf8("diff", "-q", prefix, other).stdout.splitlines()) == escaped
    renamed = _utf8("rename-vars", "-q", "--dry-run", "--regex", "^=p/", prefix, str(tmp_path / "dst" / "ckpt-1")).stdout
    rows = [line.split("\t") for line in renamed.splitlines() if "\t" in line]
    assert sorted(old for old, _new in rows) == escaped and all(new == "p/" + old for old, new in rows)


def test_rename_keeps_non_utf8_names_byte_exact(non_utf8_checkpoint, tmp_path, tf):
    dst = tmp_path / "dst" / "ckpt"
    dst.parent.mkdir()
    proc = _utf8("rename-vars", "--json", "--regex", "^bad=good", "--add-prefix", "p/", non_utf8_checkpoint, dst)
    renamed = json.loads(proc.stdout)["renamed"]
    assert dict(zip(_json_names(renamed, "from"), _json_names(renamed, "to"))) == {n: b"p/" + n.replace(b"bad", b"good")
                                                                                for n in NAMES}
    assert "p/good\\xff\\xfename" in _utf8("rename-vars", "--overwrite", "--regex", "^bad=good", "--add-prefix",
                                           "p/", non_utf8_checkpoint, dst).stdout
    for i, name in enumerate(NAMES):
        new = b"p/" + name.replace(b"bad", b"good")
        (value,) = tf.raw_ops.RestoreV2(prefix=str(dst), tensor_names=[new], shape_and_slices=[""],
                                        dtypes=[tf.float32])
        np.testing.assert_array_equal(value.numpy(), np.arange(3, dtype=np.float32) + i)


# -- item 11: memory exhaustion is said as such ------------------------------

_PARSE_UNDER_A_CAP = """
import resource, sys
import numpy, google.protobuf.text_format
import ckpttool.formats.tf.graphs.meta, ckpttool.ops.tensors.inspect
from ckpttool.cli.app import main
from ckpttool.formats.tf.protos import checkpoint_pb2, graph_pb2
used = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1]) * 1024
cap = used + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
main(sys.argv[2:])
"""


def test_graph_too_large_for_memory_is_not_called_corrupt(copy_fixture):
    """A 12 MB .meta with room to read it but not to parse it: "not enough memory", not "unparseable"."""
    import subprocess

    from ckpttool.formats.tf.protos import graph_pb2

    run = copy_fixture("classic")
    meta = graph_pb2.MetaGraphDef()
    for i in range(300_000):
        meta.graph_def.node.add(name=f"node_{i}_" * 3, op="Const")
    (run / "model.ckpt-1.meta").write_bytes(meta.SerializeToString())
    proc = subprocess.run([sys.executable, "-c", _PARSE_UNDER_A_CAP, str(40 << 20), "inspect", "--meta",
                           run / "model.ckpt-1"], capture_output=True, text=True, cwd=ROOT)
    assert_one_line_error(proc, 3)
    # Where the allocation fails (parsing a node, or summarising 300,000 of them) varies with the
    # process's memory layout: either way it is named as memory, never as a damaged file.
    assert "memory" in proc.stderr and "unparseable" not in proc.stderr and "corrupt" not in proc.stderr
    assert run_cli("inspect", "--meta", run / "model.ckpt-1").exit_code == 0  # with memory, it parses


# Python's str.splitlines (and so a script's `output.splitlines()`) ends a line at these too, and
# U+0085 and U+009B are C1 controls (NEL, CSI) that a terminal may act on.
LINE_ENDS = ["next\x85line", "line\u2028sep", "para\u2029sep", "csi\x9b31m"]


def test_a_unicode_line_separator_never_splits_a_line(tmp_path, tf):
    """A name holding U+2028, U+2029 or a C1 control (TensorFlow stores it as given) is one line of
    inspect -q and one item of ls -q, as Python's splitlines reads them; the JSON keeps it exact."""
    prefix = str(tmp_path / "run" / "ckpt-1")
    os.makedirs(os.path.dirname(prefix))
    names = [name.encode() for name in LINE_ENDS]
    values = [tf.constant(np.arange(3, dtype=np.float32) + i) for i in range(len(names))]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=values)
    stored = sorted(name.encode() for name, _shape in tf.train.list_variables(prefix))
    assert stored == sorted(names)  # TensorFlow keeps them as they are
    lines = _utf8("inspect", "-q", prefix).stdout.splitlines()
    assert len(lines) == len(names) and not any(c in "".join(lines) for c in "\x85\u2028\u2029\x9b")
    table = _utf8("inspect", prefix).stdout
    assert not any(c in table for c in "\x85\u2028\u2029\x9b")
    assert sorted(v["name"] for v in json.loads(_utf8("inspect", "--json", prefix).stdout)["variables"]) \
        == sorted(LINE_ENDS)
    # a checkpoint whose prefix holds one: one line of ls -q
    run = tmp_path / "run2"
    ckpt = tf.train.Checkpoint(v=tf.Variable([1.0]))
    written = [ckpt.write(str(run / f"a{end}b-{i}")) for i, end in enumerate(["\u2028", "\x85", "\u2029"])]
    assert sorted(os.path.basename(p) for p in written) == sorted(
        e["name"] for e in json.loads(_utf8("ls", "--json", run).stdout)["checkpoints"])
    assert len(_utf8("ls", "-q", run).stdout.splitlines()) == len(written)


def test_names_said_on_stderr_never_drive_the_terminal(tmp_path, tf):
    """average's list of sources and latest --best's line name checkpoints from a listing: a name
    holding an escape sequence (clear the screen, set the title) or a newline is shown escaped, one
    line each, as TensorFlow wrote it (the JSON names it exactly)."""
    run = tmp_path / "run"
    ckpt = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0]))
    written = [ckpt.write(str(run / name)) for name in ["a\x1b[2J\nforged-1", "b\x1b]0;x\x07-2"]]
    log = tmp_path / "log.csv"
    log.write_text("step,val_loss\n1,0.5\n2,0.1\n")
    averaged = _utf8("average", "--last", "2", run, "-o", tmp_path / "avg" / "ck")
    best = _utf8("latest", "--best", "--metric", "val_loss", "--metrics", log, run)
    for said in (averaged.stderr, best.stderr):
        assert "\x1b" not in said and "\x07" not in said and "forged-1" not in said.splitlines()
    assert sum("\\x1b[2J\\x0aforged-1" in line for line in averaged.stderr.splitlines()) == 1
    assert len(best.stdout.splitlines()) == 1 and "\x1b" not in best.stdout and best.stdout.endswith("-2\n")
    doc = json.loads(_utf8("average", "--last", "2", run, "-o", tmp_path / "avg2" / "ck", "--json").stdout)
    assert sorted(s["prefix"] for s in doc["sources"]) == sorted(written)


def test_repair_shows_the_state_file_it_writes_line_for_line(tmp_path, tf):
    """repair prints the state file's text as it writes it: a checkpoint name holding U+2028 (which
    the file holds as it is, inside a quoted string TensorFlow reads back) is shown as it is, each
    of the file's lines one line of the output (the name's tab is the file's own escape)."""
    run = tmp_path / "run"
    prefix = tf.train.Checkpoint(v=tf.Variable([1.0])).write(str(run / "a\u2028b\tc-9"))
    result = _utf8("repair", run)
    written = (run / "checkpoint").read_text(encoding="utf-8")
    assert tf.train.latest_checkpoint(str(run)) == prefix  # TensorFlow reads the file back
    shown = result.stdout.split("\n\n", 1)[1]
    assert shown == written


def test_inspect_tree_keeps_each_name_on_its_own_line(tmp_path, tf):
    """inspect --tree: a scope or a variable name holding a newline or a tab (TensorFlow's SaveV2
    stores it as given) is one line of the tree, escaped; no line of it shows a name the file does
    not hold."""
    prefix = str(tmp_path / "run" / "ckpt-1")
    os.makedirs(os.path.dirname(prefix))
    names = [b"scope/forged\nother/w", b"scope/tab\tbed", b"plain/v"]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(np.arange(3, dtype=np.float32))] * len(names))
    assert sorted(name.encode() for name, _shape in tf.train.list_variables(prefix)) == sorted(names)
    tree = _utf8("inspect", "--tree", prefix).stdout
    assert "\t" not in tree
    lines = tree.splitlines()
    assert sum("forged\\x0aother" in line for line in lines) == 1
    assert not any(line.strip(" │├└─").startswith("other") for line in lines)
    assert sum("tab\\x09bed" in line for line in lines) == 1


def test_watch_says_a_hostile_name_escaped(tmp_path, tf):
    """watch --exec says `watch: NAME (step N): done` on stderr for each checkpoint it handled: a
    name holding an escape sequence or a newline (TensorFlow writes it as given) is escaped there,
    one line; the command still gets the exact path."""
    run = tmp_path / "run"
    prefix = tf.train.Checkpoint(v=tf.Variable([1.0])).write(str(run / "a\x1b[2J\nforged-1"))
    seen = tmp_path / "seen"
    show = f"{sys.executable} -c 'import sys; open(sys.argv[2], \"w\").write(sys.argv[1])' {{path}} {seen}"
    result = run_cli("watch", run, "--once", "--state", tmp_path / "w.json", "--exec", show)
    assert result.exit_code == 0, result.stderr
    assert seen.read_text() == prefix
    assert "\x1b" not in result.stderr
    done = [line for line in result.stderr.splitlines() if line.startswith("watch:")]
    assert len(done) == 1 and done[0].endswith("(step 1): done") and "forged-1" in done[0]


def test_a_run_directory_named_with_a_newline_is_one_title_line(tmp_path, tf):
    """ls -r and prune -r print each run directory as the title of its table: a directory name
    from the tree's listing holding a newline (here forging a table's header) is escaped, one line."""
    root = tmp_path / "tree"
    hostile = root / "run\nname  step  action"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable([1.0])), str(hostile), max_to_keep=None)
    for _ in range(3):
        manager.save()
    assert tf.train.latest_checkpoint(str(hostile)).startswith(str(hostile))
    for args in (("ls", "-r"), ("prune", "-r", "--dry-run", "--keep-last", "1")):
        lines = _utf8(*args, root).stdout.splitlines()
        assert sum(line.endswith("run\\x0aname  step  action") for line in lines) == 1, lines
        assert not any(line.startswith("name  step  action") for line in lines)


def test_a_directory_named_to_forge_a_warning_stays_in_its_line(tmp_path, tf):
    """Warnings, the `DIR -> prefix` line, errors and hints go to stderr, which cron jobs log line
    by line: a run directory whose name holds a newline and a forged `warning:` line (or an escape
    sequence) is shown escaped inside the one line that names it. The state file here names a
    checkpoint whose index is gone, so latest, verify and inspect warn naming the directory."""
    run = tmp_path / "run\nwarning: every checkpoint was deleted\x1b[2J"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable([1.0])), str(run), max_to_keep=None)
    saved = [manager.save() for _ in range(2)]
    os.remove(saved[-1] + ".index")
    assert tf.train.latest_checkpoint(str(run)) is None  # TensorFlow: the state file's latest is gone
    for args in (("latest", run), ("verify", run), ("inspect", run), ("prune", "--dry-run", "--keep-last", "1", run),
                 ("verify", run / "missing-7")):
        proc = run_limited(*args, env={"PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"})
        assert_clean_exit(proc)
        said = proc.stderr
        lines = said.splitlines()
        assert lines and "\x1b" not in said, (args, said)
        assert not any(line.startswith("warning: every checkpoint") for line in lines), (args, said)
        assert all(line.startswith(("warning: ", "error: ", "hint: ", str(tmp_path))) for line in lines), (args, said)
    assert _utf8("latest", run).stdout.rstrip("\n").endswith(os.path.basename(saved[0]))
