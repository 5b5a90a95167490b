"""Snappy-compressed table blocks (issue 9), as TensorFlow builds compiled with
Snappy write them: read everywhere a table is read (V2 indexes, V1 files),
checked by verify, carried through rename-vars and diff, with TensorFlow's
reader as the oracle. Our writers keep writing plain blocks."""
from __future__ import annotations

import shutil

import cramjam
import pytest

from ckpttool.formats.tf.table import BlockHandle, read_table, table_layout
from ckpttool.formats.tf.wire import decode_varint, encode_varint
from tests.conftest import assert_one_line_error, run_cli
from tests.hostile import assert_clean_exit, block_bytes, run_limited, snappy_table
from tests.oracle import assert_inspect_matches_tf


def block_types(data: bytes) -> set[int]:
    layout = table_layout(data)
    handles = [handle for _sep, handle in layout.data_blocks] + [layout.index]
    return {data[handle.offset + handle.size] for handle in handles}


def _compress_index(path) -> None:
    data = path.read_bytes()
    compressed = snappy_table(data)
    assert block_types(compressed) == {1} and read_table(compressed) == read_table(data)
    path.write_bytes(compressed)


V2_CASES = [("saver_run", "model.ckpt-50"), ("many_vars", "many"), ("partitioned", "model.ckpt-5"),
            ("every_dtype", "dtypes"), ("tf2_manager", "ckpt-3"), ("sharded", "model.ckpt-1"),
            ("tf2_saved_model", "model/variables/variables")]


@pytest.mark.parametrize("fixture,prefix", V2_CASES, ids=[c[0] for c in V2_CASES])
def test_snappy_index_reads_as_tensorflow_reads_it(copy_fixture, fixtures_dir, tmp_path, tf, fixture, prefix):
    run = copy_fixture(fixture)
    target = run / prefix
    _compress_index(target.parent / (target.name + ".index"))
    doc = run_cli("inspect", "--json", "--all", "--values", target).json()
    assert_inspect_matches_tf(doc, tf.train.load_checkpoint(str(target)))
    assert run_cli("verify", target).exit_code == 0
    assert run_cli("diff", fixtures_dir / fixture / prefix, target).exit_code == 0
    if fixture in ("saver_run", "tf2_manager", "sharded"):
        listed = run_cli("ls", "--json", run).json()
        mine = next(c for c in listed["checkpoints"] if c["name"] == target.name)
        assert mine["complete"] and mine["num_shards"] == len(list(run.glob(target.name + ".data-*")))
    # rename-vars reads Snappy and writes plain blocks, which TensorFlow reads the same.
    dst = tmp_path / "renamed" / "ckpt"
    dst.parent.mkdir()
    assert run_cli("rename-vars", target, dst).exit_code == 0
    assert block_types((dst.parent / "ckpt.index").read_bytes()) == {0}
    renamed, original = tf.train.load_checkpoint(str(dst)), tf.train.load_checkpoint(str(target))
    assert renamed.get_variable_to_shape_map() == original.get_variable_to_shape_map()


def test_snappy_v1_file_reads_as_tensorflow_reads_it(copy_fixture, tf):
    run = copy_fixture("v1_format")
    prefix = run / "model.ckpt-3"
    _compress_index(prefix)
    reader = tf.train.load_checkpoint(str(prefix))
    doc = run_cli("inspect", "--json", "--values", "--filter", "^(plain|ints|scalar)$", prefix).json()
    assert len(doc["variables"]) == 3
    for var in doc["variables"]:
        assert var["value"] == reader.get_tensor(var["name"]).tolist()
    assert run_cli("verify", prefix).exit_code == 0
    listed = run_cli("ls", "--json", run).json()["checkpoints"]
    assert [(c["name"], c["format"], c["complete"]) for c in listed] == [("model.ckpt-3", "v1", True)]


def _first_block(data: bytes) -> BlockHandle:
    return table_layout(data).data_blocks[0][1]


def _damaged_snappy(case: str, plain: bytes) -> bytes:
    """`plain` Snappy-compressed with its first block damaged: a flipped byte (the
    CRC catches it), or, behind a valid CRC, a copy from before the start of the
    output, or a stated length far beyond what the block can expand to."""
    blocks = []

    def compress(raw: bytes) -> bytes:
        block = bytes(cramjam.snappy.compress_raw(raw))
        blocks.append(block)
        if len(blocks) > 1 or case == "flipped":
            return block
        _length, start = decode_varint(block, 0)
        if case == "bad_stream":
            return block[:start] + b"\xfe\xff\xff" + block[start:]
        return encode_varint(1 << 40) + block[start:]

    data = bytearray(snappy_table(plain, compress))
    if case == "flipped":
        first = _first_block(bytes(data))
        data[first.offset + first.size // 2] ^= 0x40
    return bytes(data)


@pytest.mark.parametrize("case", ["flipped", "bad_stream", "absurd_length"])
def test_damaged_snappy_block(copy_fixture, tf, case):
    run = copy_fixture("saver_run")
    index = run / "model.ckpt-50.index"
    index.write_bytes(_damaged_snappy(case, index.read_bytes()))
    with pytest.raises(Exception):
        tf.train.load_checkpoint(str(run / "model.ckpt-50")).get_variable_to_shape_map()
    result = run_limited("inspect", run / "model.ckpt-50")
    assert_clean_exit(result, (3,))
    assert_one_line_error(result, 3)
    assert "Snappy" in result.stderr or "checksum" in result.stderr
    doc = run_cli("verify", "--json", run / "model.ckpt-50")
    assert doc.exit_code == 1 and doc.json()["errors"][0]["problem"] == "corrupt_index"
    listed = run_cli("ls", "--json", run).json()
    assert next(c for c in listed["checkpoints"] if c["name"] == "model.ckpt-50")["complete"] is False


def test_plain_block_marked_snappy_is_corrupt_not_unsupported(copy_fixture):
    run = copy_fixture("saver_run")
    index = run / "model.ckpt-50.index"
    data = bytearray(index.read_bytes())
    first = _first_block(bytes(data))
    data[first.offset: first.offset + first.size + 5] = block_bytes(bytes(data[first.offset: first.offset + first.size]), 1)
    index.write_bytes(bytes(data))
    result = run_cli("inspect", run / "model.ckpt-50")
    assert_one_line_error(result, 3)
    assert "Snappy-compressed block" in result.stderr and "corrupt" in result.stderr


def test_snappy_directory_listing_matches_plain(copy_fixture, tmp_path):
    """`ls` reads a Snappy index's header from its first block like a plain one's."""
    plain = copy_fixture("tf2_manager")
    compressed = tmp_path / "compressed"
    shutil.copytree(plain, compressed)
    for index in compressed.glob("*.index"):
        _compress_index(index)

    def summary(directory):
        doc = run_cli("ls", "--json", directory).json()
        return [(c["name"], c["num_shards"], c["complete"]) for c in doc["checkpoints"]], doc["problems"]

    assert summary(compressed) == summary(plain)
