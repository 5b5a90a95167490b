"""A checkpoint index that changes while the scan reads it (storage/fs.read_ends_at: its size taken
by fstat, then its head and tail read) is judged by what it holds at its end, as TensorFlow reads it:
one that grew in place since the fstat (garbage after a footer, or a copy of the footer where the
old end was) is not whole, so `latest --complete`, `ls` and prune's newest complete checkpoint are
the one before it. The oracle: TensorFlow loads the checkpoint before it and refuses the grown one."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ckpttool.formats.tf.table import FOOTER_SIZE, HEAD_BYTES
from ckpttool.ops.runs.scan import newest_complete_prefix, scan_directory

_SHARD = ".data-00000-of-00001"


def _two_steps(fixtures_dir: Path, source: str, directory: Path) -> Path:
    """model.ckpt-1 and model.ckpt-2, each a copy of the TensorFlow-written prefix `source`."""
    directory.mkdir()
    for step in (1, 2):
        for suffix in (".index", _SHARD):
            shutil.copyfile(fixtures_dir / (source + suffix), directory / f"model.ckpt-{step}{suffix}")
    return directory / "model.ckpt-2.index"


def _garbage_after(index: Path) -> bytes:
    return b"\0" * 100


def _footer_copy_at_head_bytes(index: Path) -> bytes:
    """Bytes that end at HEAD_BYTES with a copy of the footer (what a scan reading the old size's
    end within its first HEAD_BYTES would take for the footer), then garbage."""
    data = index.read_bytes()
    pad = HEAD_BYTES - len(data) - FOOTER_SIZE
    return b"\0" * pad + data[-FOOTER_SIZE:] + b"\0" * 100


def _grow_after_fstat(monkeypatch, index: Path, grow) -> list:
    """The first fstat of `index` (by inode) returns its size, then `grow`'s bytes are appended to it
    before the scan reads anything: as a writer appending to it in place at that moment would."""
    inode, real_fstat, grown = os.stat(index).st_ino, os.fstat, []
    extra = grow(index)

    def fstat(fd):
        st = real_fstat(fd)
        if st.st_ino == inode and not grown:
            grown.append(True)
            with open(index, "ab") as f:
                f.write(extra)
        return st

    monkeypatch.setattr(os, "fstat", fstat)
    return grown


@pytest.mark.parametrize("source, grow", [("many_vars/many", _garbage_after), ("classic/model.ckpt-1", _garbage_after),
                                          ("classic/model.ckpt-1", _footer_copy_at_head_bytes)],
                         ids=["large index, garbage after", "small index, garbage after",
                              "small index, a footer copy at HEAD_BYTES"])
@pytest.mark.parametrize("entry", ["scan", "newest_complete_prefix"])
def test_an_index_grown_while_it_is_read_is_not_whole(fixtures_dir, tmp_path, monkeypatch, tf, source, grow, entry):
    index = _two_steps(fixtures_dir, source, tmp_path / "run")
    grown = _grow_after_fstat(monkeypatch, index, grow)
    if entry == "scan":
        scan = scan_directory(str(tmp_path / "run"))
        complete = {c.name: c.complete for c in scan.checkpoints}
        newest = scan.latest.name
    else:
        found = newest_complete_prefix(str(tmp_path / "run"))
        complete, newest = {}, found.name if found is not None else None
    monkeypatch.undo()
    assert grown, "the index was not read"
    tf.train.load_checkpoint(str(tmp_path / "run" / "model.ckpt-1"))
    with pytest.raises(Exception):
        tf.train.load_checkpoint(str(tmp_path / "run" / "model.ckpt-2")).get_variable_to_shape_map()
    assert newest == "model.ckpt-1"
    assert complete.get("model.ckpt-2") in (None, False)
