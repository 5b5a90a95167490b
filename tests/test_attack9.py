"""Attack tests of the scan's forked helper, the ls quick path and the casts on the bits (attack9).

The oracle of a scan with the helper forced on is the plain in-process scan of the same directory,
and TensorFlow itself for which prefixes are whole; the oracle of the casts is ml_dtypes' and
numpy's astype (and TensorFlow's reader for the written checkpoints)."""
from __future__ import annotations

import marshal
import os
import shutil
from pathlib import Path

import pytest

_SHARD = ".data-00000-of-00001"


@pytest.fixture(scope="module")
def saved_prefix(tmp_path_factory, tf) -> Path:
    """One prefix TensorFlow wrote (an index naming one data shard), to copy under many names."""
    root = tmp_path_factory.mktemp("a9src")
    checkpoint = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0, 3.0]), w=tf.Variable([[4.0]]))
    return Path(checkpoint.write(str(root / "model.ckpt")))


def _copy(src: Path, run: Path, name: str) -> str:
    for suffix in (".index", _SHARD):
        shutil.copyfile(str(src) + suffix, os.path.join(os.fsencode(run), os.fsencode(name + suffix)))
    return os.path.join(str(run), name)


def _hostile_run(src: Path, run: Path) -> dict[str, str]:
    """A directory of copies of `src`, many of them damaged: what each is, by prefix name."""
    run.mkdir()
    index = Path(str(src) + ".index").read_bytes()
    made = {}
    for step in range(1, 13):
        made[f"model.ckpt-{step}"] = "whole"
        _copy(src, run, f"model.ckpt-{step}")

    def damaged(name, what, data=None):
        prefix = _copy(src, run, name)
        made[name] = what
        if data is not None:
            Path(prefix + ".index").write_bytes(data)
        return prefix

    damaged("cut-7.ckpt-20", "footer cut", index[:-7])
    damaged("cut-10.ckpt-21", "first bytes only", index[:10])
    damaged("empty.ckpt-22", "zero length", b"")
    damaged("garbage.ckpt-23", "garbage", bytes((i * 37 + 11) % 256 for i in range(len(index))))
    huge = damaged("huge.ckpt-24", "huge sparse")
    os.truncate(huge + ".index", 3 << 30)  # its footer is now zeros far away
    for at in range(min(8, len(index) - 48)):
        for flip in (0x01, 0x80, 0xFF):
            data = bytearray(index)
            data[at] ^= flip
            damaged(f"byte{at}x{flip:02x}.ckpt-{30 + at}", "header byte changed", bytes(data))
    link = damaged("indexlink.ckpt-40", "index a symlink")
    os.unlink(link + ".index")
    os.symlink(str(src) + ".index", link + ".index")
    link = damaged("datalink.ckpt-41", "data a symlink")
    os.unlink(link + _SHARD)
    os.symlink(str(src) + _SHARD, link + _SHARD)
    fifo = damaged("fifo.ckpt-42", "index a FIFO")
    os.unlink(fifo + ".index")
    os.mkfifo(fifo + ".index")
    fifo = damaged("datafifo.ckpt-43", "data a FIFO")
    os.unlink(fifo + _SHARD)
    os.mkfifo(fifo + _SHARD)
    folder = damaged("dir.ckpt-44", "index a directory")
    os.unlink(folder + ".index")
    os.mkdir(folder + ".index")
    missing = damaged("nodata.ckpt-45", "data missing")
    os.unlink(missing + _SHARD)
    damaged("new\nline.ckpt-46", "newline in name")
    damaged(os.fsdecode(b"bad\xff\xfe.ckpt-47"), "non-UTF-8 name")
    meta = damaged("meta.ckpt-48", "with a .meta")
    Path(meta + ".meta").write_bytes(b"\x0a\x00")
    meta = damaged("metalink.ckpt-49", "with a .meta link")
    os.symlink(str(src) + ".index", meta + ".meta")
    return made


def _forced(monkeypatch, scan, send=None):
    monkeypatch.setattr(scan, "HELPER_MIN_PREFIXES", 1)
    monkeypatch.setattr(scan, "processor_free", lambda: True)
    forks = []
    real_fork = os.fork

    def fork():
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    if send is not None:
        monkeypatch.setattr(scan, "_send_common", send)
    return forks


def _send_marshalled(value_of):
    def send(listed, base, names, writing):
        with os.fdopen(writing, "wb") as pipe:
            pipe.write(value_of(names))
    return send


def _killed(listed, base, names, writing):
    os.write(writing, marshal.dumps([None] * len(names))[:5])
    os.kill(os.getpid(), 9)


_HELPERS = {
    "works": None,
    "raises": lambda *a: 1 / 0,
    "killed mid-write": _killed,
    "garbage": _send_marshalled(lambda names: b"\x00garbage\xff" * 50),
    "EOF early": _send_marshalled(lambda names: marshal.dumps([None] * len(names))[:-3]),
    "too short a list": _send_marshalled(lambda names: marshal.dumps([None] * (len(names) - 1))),
    "a dict": _send_marshalled(lambda names: marshal.dumps({1: 2})),
    "all None": _send_marshalled(lambda names: marshal.dumps([None] * len(names))),
    "wrong items": _send_marshalled(lambda names: marshal.dumps(["x"] * len(names))),
    "short tuples": _send_marshalled(lambda names: marshal.dumps([(1,)] * len(names))),
    "strings in tuples": _send_marshalled(lambda names: marshal.dumps([("a", "b")] * len(names))),
}


@pytest.mark.parametrize("helper", list(_HELPERS))
def test_the_helper_on_a_hostile_directory_is_the_scan_in_one(saved_prefix, tmp_path, monkeypatch, tf, helper):
    """Damaged indexes, links, FIFOs, a directory, a missing shard, odd names: the scan with the
    forked helper forced on (working, or failing every way) is the plain scan, and the prefixes
    it calls complete are those TensorFlow reads."""
    from ckpttool.ops.runs import scan

    made = _hostile_run(saved_prefix, tmp_path / "run")
    alone = scan.scan_directory(str(tmp_path / "run"))
    forks = _forced(monkeypatch, scan, _HELPERS[helper])
    assert scan.scan_directory(str(tmp_path / "run"), helper=True) == alone
    assert forks == [1]
    monkeypatch.undo()
    for checkpoint in alone.checkpoints:
        if checkpoint.complete and checkpoint.name.isprintable():  # TensorFlow takes UTF-8 names only
            reader = tf.train.load_checkpoint(os.path.join(str(tmp_path / "run"), checkpoint.name))
            assert sorted(reader.get_variable_to_shape_map())
    complete = {c.name for c in alone.checkpoints if c.complete}
    assert {f"model.ckpt-{s}" for s in range(1, 13)} <= complete
    for name in ("cut-7.ckpt-20", "cut-10.ckpt-21", "empty.ckpt-22", "garbage.ckpt-23", "huge.ckpt-24",
                 "indexlink.ckpt-40", "fifo.ckpt-42", "dir.ckpt-44", "nodata.ckpt-45", "datalink.ckpt-41",
                 "datafifo.ckpt-43"):
        assert name not in complete, (name, made[name])
