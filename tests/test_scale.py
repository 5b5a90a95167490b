"""The short cuts that make 100,000 checkpoints list in seconds (issue 21) give what the plain
ways give: times formatted as datetime formats them, checkpoints described as the files on disk
say, and the garbage collector left as it was found."""
from __future__ import annotations

import gc
import os
from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from tests.conftest import force_scan_helper, run_cli


def _datetime_iso(timestamp: float) -> str | None:
    try:
        return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return None


EDGES = [0.0, 1e-7, 0.4999999, 0.9999994, 0.99999949, 0.9999995, 0.9999999, 1796103584.0098, 1796103584.9999996,
         253402300799.0, 253402300799.9999, 253402300800.0, -0.5, -1e-7, -86400.25, 1e15]


@pytest.mark.parametrize("timestamp", EDGES)
def test_iso_utc_is_datetimes_at_the_edges(timestamp):
    from ckpttool.cli.render import iso_utc

    assert iso_utc(timestamp) == _datetime_iso(timestamp)


@given(st.one_of(st.floats(-1e12, 3e11, allow_nan=False),
                 st.integers(0, 253402300799).map(lambda s: s + 0.9999995),
                 st.integers(0, 253402300799).map(float)))
def test_iso_utc_is_datetimes(timestamp):
    from ckpttool.cli.render import iso_utc

    assert iso_utc(timestamp) == _datetime_iso(timestamp)


def test_checkpoints_are_described_as_their_files_say(tmp_path, tf):
    """The common shape (an index and one data shard, a .meta or not) takes a short path in the
    scan: every field as the files on disk and TensorFlow have it."""
    from ckpttool.ops.runs.scan import CheckpointInfo, scan_directory

    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])), str(tmp_path), max_to_keep=3)
    saved = [manager.save() for _ in range(3)]
    with open(saved[0] + ".meta", "wb") as meta:  # a graph beside the first one
        meta.write(b"\x00" * 7)
    os.utime(saved[0] + ".meta", (1.0, 1.0))  # older than its checkpoint: not the save's time
    scan = scan_directory(str(tmp_path))
    assert [c.prefix for c in scan.checkpoints] == saved
    for prefix, info in zip(saved, scan.checkpoints):
        names = sorted(n for n in os.listdir(tmp_path) if n.startswith(os.path.basename(prefix) + "."))
        files = tuple(os.path.join(tmp_path, n) for n in names)
        data = [f for f in files if ".data-" in f]
        reader = tf.train.load_checkpoint(prefix)  # TensorFlow reads it: complete
        assert reader.get_variable_to_shape_map()
        assert info == CheckpointInfo(
            name=os.path.basename(prefix), prefix=prefix, family="ckpt", step=int(prefix.rsplit("-", 1)[1]),
            format="v2", size_bytes=sum(os.path.getsize(f) for f in files), num_shards=len(data), complete=True,
            has_meta=os.path.exists(prefix + ".meta"), in_state=True, is_latest=prefix == manager.latest_checkpoint,
            mtime=max(os.path.getmtime(f) for f in files if not f.endswith(".meta")),
            timestamp=info.timestamp, files=files)
        assert info.timestamp is not None
        assert hash(info) == hash(CheckpointInfo(**{f: getattr(info, f) for f in info.__dataclass_fields__}))
        assert type(info) is CheckpointInfo  # made through a plain class (scan._CommonInfo), it is one
        with pytest.raises(AttributeError):
            info.name = "other"  # still frozen


def test_a_header_decoded_inline_is_the_header_decoded_plainly(tmp_path, tf):
    """shard_count_of_head_and_tail decodes the header TensorFlow writes inline: the same count as the
    table's first entry decoded plainly, for the index TensorFlow wrote and for each of its first
    bytes changed (the key's and value's lengths, the value), and for its footer's magic changed."""
    from ckpttool.formats.tf.shards import _shard_count_of_first_entry, shard_count_of_head_and_tail
    from ckpttool.formats.tf.table import FOOTER_SIZE, HEAD_BYTES, first_entry_of_head_and_tail

    prefix = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])).write(str(tmp_path / "ckpt"))
    written = open(prefix + ".index", "rb").read()
    tf.train.load_checkpoint(prefix)  # TensorFlow reads it
    variants = [written]
    for at in range(min(24, len(written))):
        for byte in (0, 1, 2, 0x7F, 0x80, 0xFF):
            changed = bytearray(written)
            changed[at] = byte
            variants.append(bytes(changed))
    variants.append(written[:-1] + b"\0")  # the magic number's last byte
    path = str(tmp_path / "ckpt.index")
    counts = set()
    for data in variants:
        head, tail, size = data[:HEAD_BYTES], data[-FOOTER_SIZE:], len(data)
        plain = _shard_count_of_first_entry(first_entry_of_head_and_tail(path, head, tail, size, "checkpoint index"))
        assert shard_count_of_head_and_tail(path, head, tail, size) == plain
        counts.add(plain)
    assert {1, None} <= counts


@pytest.mark.parametrize("enabled", [True, False])
def test_listing_leaves_the_garbage_collector_as_it_was(copy_fixture, enabled):
    """ls and prune pause the cyclic collector while they work (the objects of 100,000 checkpoints
    would be walked at every collection), and restore it."""
    run = copy_fixture("tf2_many")
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        assert run_cli("ls", "--json", run).exit_code == 0
        assert gc.isenabled() is enabled
        assert run_cli("prune", "--dry-run", "--keep-last", "1", run).exit_code == 0
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_ls_json_rows_are_what_json_writes(tmp_path, tf):
    """`ls --json` writes the rows of TF prefixes from a template (issue 29): the text is exactly
    what Python's json module writes of the same document, and a name that is not UTF-8 still
    takes the exact-bytes fields."""
    import base64
    import json
    import shutil

    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])), str(tmp_path), max_to_keep=3)
    saved = [manager.save() for _ in range(3)]
    odd = os.fsencode(str(tmp_path)) + b"/odd\xff-7"
    for suffix in (b".index", b".data-00000-of-00001"):
        shutil.copyfile(os.fsencode(saved[0]) + suffix, odd + suffix)
    shutil.copyfile(saved[1] + ".data-00000-of-00001", str(tmp_path / "cut-9.data-00000-of-00001"))  # no index
    out = run_cli("ls", "--json", tmp_path).stdout
    assert out == json.dumps(json.loads(out), ensure_ascii=False, allow_nan=False) + "\n"
    rows = {row["name"]: row for row in json.loads(out)["checkpoints"]}
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [rows[os.path.basename(p)]["timestamp_epoch"] for p in saved] == list(state.all_model_checkpoint_timestamps)
    assert rows["cut-9"]["complete"] is False and rows["cut-9"]["prefix"] == str(tmp_path / "cut-9")
    (bad,) = [row for row in rows.values() if "name_base64" in row]
    assert base64.b64decode(bad["name_base64"]) == b"odd\xff-7"
    assert bad["complete"] is True and bad["mtime"] is not None


def test_a_v1_file_beside_a_common_prefix_is_one_of_its_files(tmp_path, tf):
    """The scan's short path for the common prefix looks again, file by file, at a prefix that a V1
    file of the same name joins (the V1 file is found after the indexes are read)."""
    from ckpttool.ops.runs.scan import scan_directory

    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])), str(tmp_path / "run"),
                                         max_to_keep=2)
    saved = [manager.save() for _ in range(2)]
    (tmp_path / "v1").mkdir()
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.get_variable("w", initializer=[3.0])
        session.run(tf.compat.v1.global_variables_initializer())
        v1 = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1).save(
            session, str(tmp_path / "v1" / "model"), write_meta_graph=False)
    os.rename(v1, saved[0])  # a V1 file named as the first prefix
    scan = scan_directory(str(tmp_path / "run"))
    first, second = scan.checkpoints
    names = sorted(n for n in os.listdir(tmp_path / "run") if n.startswith(os.path.basename(saved[0])))
    assert first.files == tuple(str(tmp_path / "run" / n) for n in names) and len(names) == 3
    assert first.size_bytes == sum(os.path.getsize(tmp_path / "run" / n) for n in names)
    assert first.format == "v2" and first.complete
    assert second.files == tuple(sorted(str(tmp_path / "run" / n) for n in os.listdir(tmp_path / "run")
                                        if n.startswith(os.path.basename(saved[1]) + ".")))


def test_ls_json_template_rows_are_the_rows_of_the_plain_path(tmp_path, tf):
    """The template `ls --json` writes a TF prefix's row from (in a pipe) and the dict it writes at a
    terminal (RawJSON.plain) are one row: the same keys in the same order, the same values, for
    TF1 and TF2 prefixes, a prefix with a .meta, and one whose index is missing."""
    import json

    from ckpttool.cli.hot.ls import scan_document
    from ckpttool.cli.render import RawJSON, jsonable
    from ckpttool.ops.runs.scan import scan_directory

    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])), str(tmp_path), max_to_keep=3)
    saved = [manager.save() for _ in range(2)]
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.get_variable("w", initializer=[3.0])
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, str(tmp_path / "model.ckpt"), global_step=5, write_state=False)
    os.remove(saved[0] + ".index")  # data without its index: not complete
    rows = scan_document(scan_directory(str(tmp_path)), str(tmp_path))["checkpoints"]
    assert isinstance(rows, RawJSON)
    templated, plain = json.loads(rows.text), jsonable(rows.plain())
    assert len(templated) == 3
    assert [list(row.items()) for row in templated] == [list(row.items()) for row in plain]


def _damaged_run(tmp_path, tf, count: int = 12):
    """`count` checkpoints TensorFlow wrote, some of them damaged as interrupted saves leave them."""
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])), str(tmp_path),
                                         max_to_keep=None)
    saved = [manager.save() for _ in range(count)]
    os.truncate(saved[1] + ".index", os.path.getsize(saved[1] + ".index") - 7)  # its footer cut off
    os.unlink(saved[2] + ".data-00000-of-00001")
    os.rename(saved[3] + ".index", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", saved[3] + ".index")  # a link: never a checkpoint file
    with open(saved[4] + ".meta", "wb") as meta:
        meta.write(b"\x0a\x00")
    os.symlink(tmp_path / "elsewhere", saved[5] + ".meta")
    return saved


@pytest.mark.parametrize("helper_fails", [False, True])
def test_a_scan_in_two_processes_is_the_scan_in_one(tmp_path, tf, monkeypatch, helper_fails):
    """The forked helper that looks at half of a big directory's checkpoints changes nothing the
    scan finds (damaged checkpoints included), and when it fails this process looks at them all."""
    from ckpttool.ops.runs import scan

    saved = _damaged_run(tmp_path, tf)
    with pytest.raises(Exception):
        tf.train.load_checkpoint(saved[1])  # TensorFlow cannot read the cut index either
    alone = scan.scan_directory(str(tmp_path))
    forks = force_scan_helper(monkeypatch)
    if helper_fails:
        monkeypatch.setattr(scan, "_send_common", lambda *a: 1 / 0)
    assert scan.scan_directory(str(tmp_path), helper=True) == alone
    assert forks == [1]
    assert [c.complete for c in alone.checkpoints] == [
        i not in (1, 2, 3) for i in range(len(saved))]
