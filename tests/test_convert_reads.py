"""The read path convert and average take for a plain bundle tensor: its bytes read into one reused
buffer (raw.iter_stored_views) and handed on as views. Against TensorFlow's values across chunk
borders and partitioned variables; a damaged byte or a file shrinking under the read is refused as
before, and nothing is written."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli


def _largest_part(prefix: str):
    from ckpttool.formats.reader import open_checkpoint

    with open_checkpoint(prefix, "v2") as reader:
        var = max((v for v in reader.variables if v.dtype.fixed_width and not v.partitioned),
                  key=lambda v: v.parts[0].size)
        return var.name, var.parts[0]


@pytest.mark.parametrize("chunk_bytes", [1, 12, 4099])
def test_views_equal_tensorflow_values_across_chunk_borders(fixtures_dir, tf, chunk_bytes):
    """Every fixed-width variable, partitioned ones too (by rows and by columns), read in pieces that
    cut rows (and, for 4099, elements: the size is rounded to whole elements), joined: TensorFlow's
    values, as little-endian C-order bytes."""
    from ckpttool.formats.raw import iter_stored_views
    from ckpttool.formats.reader import open_checkpoint

    prefix = str(fixtures_dir / "partitioned" / "model.ckpt-5")
    expected = tf.train.load_checkpoint(prefix)
    with open_checkpoint(prefix, "v2") as reader:
        names = [v.name for v in reader.variables if v.dtype.fixed_width and not v.internal]
        assert {"scope/part", "cols", "plain"} <= set(names)
        for name in names:
            var = reader.variable(name)
            got = b"".join(bytes(piece) for piece in iter_stored_views(reader, var, chunk_bytes))
            value = expected.get_tensor(name)
            assert got == np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes(), name


def test_a_damaged_tensor_is_refused_and_nothing_written(fixtures_dir, copy_fixture, tmp_path):
    """One flipped byte in the middle of a tensor: convert and average exit 3 naming the checksum,
    and leave no destination (the pieces already written went to a temp that is removed)."""
    run = copy_fixture("saver_run")
    prefix = str(run / "model.ckpt-50")
    name, part = _largest_part(prefix)
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as handle:
        handle.seek(part.offset + part.size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x40]))
    out = tmp_path / "out"
    for args in (("convert", prefix, str(out / "x.safetensors")),
                 ("convert", prefix, str(out / "ck"), "--dtype", "bfloat16"),
                 ("average", str(fixtures_dir / "saver_run" / "model.ckpt-50"), prefix, "-o", str(out / "m.npz"))):
        result = run_cli(*args)
        if args[0] == "convert":
            assert_one_line_error(result, 3)
        assert result.exit_code == 3  # average says what it averages first, then the one error
        assert f"error: checksum mismatch for tensor {name!r}" in result.stderr, result.stderr
        assert not out.exists() or os.listdir(out) == []


def test_a_file_shrinking_under_the_read_is_refused(copy_fixture):
    """The data file cut short after the checkpoint was opened (its sizes checked): Truncated from the
    read itself, not short bytes handed on."""
    from ckpttool.errors import Truncated
    from ckpttool.formats.raw import iter_stored_views
    from ckpttool.formats.reader import open_checkpoint

    run = copy_fixture("saver_run")
    prefix = str(run / "model.ckpt-50")
    name, part = _largest_part(prefix)
    with open_checkpoint(prefix, "v2") as reader:
        var = reader.variable(name)
        next(iter(reader.iter_raw(part, 1)))  # the shard opened, its size checked; now the file shrinks
        os.truncate(prefix + ".data-00000-of-00001", part.offset + part.size // 2)
        with pytest.raises(Truncated):
            for _piece in iter_stored_views(reader, var, 8):
                pass
