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

from tests.conftest import force_scan_helper

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
    v1 = damaged("v1beside.ckpt-50", "a table file named as the prefix (V1's shape) beside it")
    Path(v1).write_bytes(index)
    made[os.path.basename(v1)] = made["v1beside.ckpt-50"]
    shard = damaged("v1shard.ckpt-51", "a V1 shard file of the prefix's stem beside it")
    Path(shard + "-00000-of-00001").write_bytes(index)
    return made


def _forced(monkeypatch, scan, send=None):
    forks = force_scan_helper(monkeypatch)
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


def _remaining(run: Path) -> list[bytes]:
    return sorted(os.listdir(os.fsencode(run)))


@pytest.mark.parametrize("helper", ["works", "all None", "killed mid-write"])
def test_prune_with_the_helper_deletes_what_prune_without_it_deletes(saved_prefix, tmp_path, monkeypatch, tf, helper):
    """prune --keep-last 3 --clean of the hostile directory, the helper forced on (its scan and the
    scan again under the lock) and off: the same exit code, the same files left."""
    from ckpttool.ops.runs import scan
    from tests.conftest import run_cli

    _hostile_run(saved_prefix, tmp_path / "plain")
    _hostile_run(saved_prefix, tmp_path / "forked")
    for run in ("plain", "forked"):  # every file as old: --clean's age and the order by time alike
        for name in os.listdir(os.fsencode(tmp_path / run)):
            os.utime(os.path.join(os.fsencode(tmp_path / run), name), (1e9, 1e9), follow_symlinks=False)
    monkeypatch.setattr(scan, "processor_free", lambda: False)
    plain = run_cli("prune", "--keep-last", "3", "--clean", "--yes", "--json", str(tmp_path / "plain"))
    forks = _forced(monkeypatch, scan, _HELPERS[helper])
    forked = run_cli("prune", "--keep-last", "3", "--clean", "--yes", "--json", str(tmp_path / "forked"))
    assert forks, "the helper was not forked"
    assert "Traceback" not in forked.stderr
    assert forked.exit_code == plain.exit_code
    assert _remaining(tmp_path / "forked") == _remaining(tmp_path / "plain")
    assert forked.stdout.replace("forked", "plain") == plain.stdout
    for name in ("cut-7.ckpt-20", "huge.ckpt-24"):  # incomplete: never the newest kept on the helper's word
        assert (tmp_path / "forked" / (name + _SHARD)).exists() or not (tmp_path / "plain" / (name + _SHARD)).exists()


_LS_FORMS = [["ls", "{run}"], ["ls", "--json", "{run}"], ["ls", "-q", "{run}"], ["ls", "--quiet", "--json", "{run}"],
             ["ls", "-r", "{tmp}"], ["ls", "--json", "-r", "{tmp}"], ["ls", "--json", "{run}/model.ckpt-1.index"],
             ["ls", "{run}/fifo.ckpt-42.index"], ["ls", "--json", "{run}/dir.ckpt-44.index"], ["ls", "{tmp}/link"],
             ["ls", "--json", "{tmp}/dangling"], ["ls", "{tmp}/odd\nname"], ["ls", "--json", "{tmp}/odd\nname"],
             ["ls", "-q", "{tmp}/nope\n"], ["ls", "--json", "-q", "-r", "{tmp}/nope"],
             ["ls", "--json", "{run}/model.ckpt-1.index/sub"], ["ls", "{tmp}/" + "x" * 300], ["ls", "--json", "{tmp}/loop"],
             ["ls", "-r", "{tmp}/loop"], ["ls", "--json", "-r", "{run}/model.ckpt-1.index"], ["ls", "-q", "-r", "{tmp}/odd\nname"]]


@pytest.mark.parametrize("helper", [False, True], ids=["plain", "quick path's scan with the helper forced"])
def test_ls_quick_path_on_a_hostile_directory_answers_as_typer_does(saved_prefix, tmp_path, monkeypatch, helper):
    """ls (table, --json, -q, -r) of the hostile directory, of files, FIFOs, links and odd names given
    as DIR: the quick path's stdout, stderr and exit code are Typer's (Typer's scanning without the
    helper, the quick path's with it or without)."""
    from ckpttool.ops.runs import scan
    from tests.conftest import run_cli
    from tests.test_quick_path import _quick

    _hostile_run(saved_prefix, tmp_path / "run")
    (tmp_path / "odd\nname").mkdir()
    _copy(saved_prefix, tmp_path / "odd\nname", "m\x1b[31m.ckpt-1")
    os.symlink(tmp_path / "run", tmp_path / "link")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    for form in _LS_FORMS:
        argv = [arg.format(run=str(tmp_path / "run"), tmp=str(tmp_path)) for arg in form]
        monkeypatch.setattr(scan, "processor_free", lambda: False)
        typer = run_cli(*argv)
        assert "Traceback" not in typer.stderr
        if helper:
            _forced(monkeypatch, scan)
        assert _quick(argv) == (typer.exit_code, typer.stdout, typer.stderr), form


@pytest.mark.parametrize("source", ["many_vars/many", "classic/model.ckpt-1"])
def test_an_index_grown_while_the_helper_reads_it_is_not_whole(fixtures_dir, tmp_path, monkeypatch, tf, source):
    """test_scan_races' index grown in place between its fstat and its reads, read by the forked
    helper (the fstat replaced before the fork, so the helper's reads are the ones raced): the scan
    calls it incomplete and the newest complete is the one before, as TensorFlow reads them."""
    from ckpttool.ops.runs import scan
    from tests.test_scan_races import _garbage_after, _grow_after_fstat, _two_steps

    index = _two_steps(fixtures_dir, source, tmp_path / "run")
    for step in range(3, 9):  # more prefixes, so that model.ckpt-2's half may be the helper's or not
        for suffix in (".index", _SHARD):
            shutil.copyfile(str(tmp_path / "run" / "model.ckpt-1") + suffix, tmp_path / "run" / f"old.ckpt-{step}{suffix}")
            os.utime(tmp_path / "run" / f"old.ckpt-{step}{suffix}", (1e9, 1e9))
    forks = _forced(monkeypatch, scan)
    _grow_after_fstat(monkeypatch, index, _garbage_after)
    found = scan.scan_directory(str(tmp_path / "run"), helper=True)
    monkeypatch.undo()
    assert forks == [1]
    with pytest.raises(Exception):
        tf.train.load_checkpoint(str(tmp_path / "run" / "model.ckpt-2")).get_variable_to_shape_map()
    assert {c.name: c.complete for c in found.checkpoints}["model.ckpt-2"] is False
    assert found.latest.name != "model.ckpt-2"


_ML = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32", "float64": "float64"}


def _hostile_floats(count: int, dtype: str, seed: int):
    """`count` values of `dtype` from every class of float32 bit pattern: random bits, every exponent,
    subnormals, bfloat16's and float16's ties and their neighbours, NaNs (quiet, signalling, with
    payloads, both signs), infinities, -0.0, values that overflow bfloat16 and float16."""
    import ml_dtypes
    import numpy as np

    rng = np.random.default_rng(seed)
    exponents = np.arange(256, dtype=np.uint32) << 23
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFBFFFFF, 0x7FA00000,
                        0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x477FF000, 0x477FEFFF, 0x477FE000, 0x38800000,
                        0x387FFFFF, 0x33800000, 0x33000000, 0x33000001, 1, 0x807FFFFF], np.uint32)
    parts = [special, exponents, exponents | 0x80000000, exponents | 1, exponents | 0x7FFFFF,
             rng.integers(0, 2 ** 32, count, dtype=np.uint64).astype(np.uint32),
             rng.integers(0, 2 ** 32, count, dtype=np.uint64).astype(np.uint32) & 0xFFFF0000 | 0x8000,
             rng.integers(0, 2 ** 32, count, dtype=np.uint64).astype(np.uint32) & 0xFFFFE000 | 0x1000,
             rng.integers(0x30000000, 0x47800000, count, dtype=np.uint64).astype(np.uint32)]
    bits = rng.permutation(np.concatenate(parts))[:count]
    if bits.size < count:
        bits = np.resize(bits, count)
    values = bits.view(np.float32)
    with np.errstate(all="ignore"):
        if dtype == "float64":
            wide = rng.integers(0, 2 ** 64, count, dtype=np.uint64).view(np.float64)
            return np.where(rng.integers(0, 2, count).astype(bool), values.astype(np.float64), wide)
        if dtype == "bfloat16":
            return bits.astype(np.uint16).view(ml_dtypes.bfloat16)  # the low halves: every bfloat16 pattern class
        if dtype == "float16":
            return bits.astype(np.uint16).view(np.float16)
        return values


# Element counts around 512 KiB and 256 KiB pieces of each width, and small ones
_SIZES = [131071, 131072, 131073, 65535, 65537, 262143, 262145, 7]


@pytest.mark.parametrize("source", ["float32", "float64", "bfloat16", "float16"])
def test_convert_dtype_of_every_float_class_is_numpys_and_ml_dtypes_cast(tmp_path, tf, source):
    """convert --dtype of TensorFlow checkpoints holding every class of float bit pattern, in sizes
    around the 512 KiB and 256 KiB pieces: each written tensor (read back by TensorFlow) is, bit for
    bit, ml_dtypes' / numpy's astype of the source as TensorFlow reads it; NaNs as NaNs of the sign
    (bfloat16 involved: the quiet NaN of the sign, as ml_dtypes gives it); the overflows counted."""
    import ml_dtypes
    import numpy as np

    from tests.conftest import run_cli

    src = tmp_path / "src" / "model.ckpt"
    variables = {f"v{n}": tf.Variable(tf.constant(_hostile_floats(n, source, n))) for n in _SIZES}
    tf.train.Checkpoint(**variables).write(str(src))
    reader = tf.train.load_checkpoint(str(src))
    stored = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("v")}
    assert len(stored) == len(_SIZES)
    for target in ("bfloat16", "float16", "float32", "float64"):
        if target == source:
            continue
        out = tmp_path / target / "model.ckpt"
        result = run_cli("convert", "--json", str(src), str(out), "--dtype", target, "--no-update-state")
        assert result.exit_code == 0, result.stderr
        written = tf.train.load_checkpoint(str(out))
        counted = {row["name"]: row["count"] for row in result.json().get("overflowed", [])}
        for name, values in stored.items():
            got = np.asarray(written.get_tensor(name))
            with np.errstate(all="ignore"):
                want = values.astype(getattr(ml_dtypes, target) if target == "bfloat16" else target)
                finite = np.isfinite(values.astype(np.float64))
                overflowed = int(np.count_nonzero(np.isinf(want.astype(np.float64)) & finite))
            assert got.dtype == want.dtype, name
            width = f"u{want.dtype.itemsize}"
            nan = np.isnan(want.astype(np.float64))
            assert np.array_equal(np.isnan(got.astype(np.float64)), nan), (source, target, name)
            assert np.array_equal(got.view(width)[~nan], want.view(width)[~nan]), (source, target, name)
            if "bfloat16" in (source, target):  # the quiet NaN of the sign
                assert np.array_equal(got.view(width)[nan], want.view(width)[nan]), (source, target, name)
            assert counted.get(name, 0) == overflowed, (source, target, name)


def _averaged(tf, tmp_path, n, values_of):
    """n TF2 checkpoints, the i-th holding values_of(i) (name -> array) as variables, averaged by
    `ckpttool average`: TensorFlow's readers of the result and of the sources."""
    from tests.conftest import run_cli

    sources = []
    for i in range(n):
        prefix = tmp_path / f"src{i}" / f"model.ckpt-{i + 1}"
        tf.train.Checkpoint(**{k: tf.Variable(tf.constant(v)) for k, v in values_of(i).items()}).write(str(prefix))
        sources.append(str(prefix))
    out = tmp_path / "avg" / "model.ckpt-0"
    result = run_cli("average", *sources, "-o", str(out))
    assert result.exit_code == 0, result.stderr
    return tf.train.load_checkpoint(str(out)), [tf.train.load_checkpoint(s) for s in sources]


def _finite_hostile(count: int, dtype: str, seed: int, large: bool):
    """Finite `dtype` values of every magnitude class (subnormals, ties, near the top of the range),
    some infinities and NaNs unless only finite ones are asked for: average's inputs."""
    import numpy as np

    values = _hostile_floats(count, dtype, seed).copy()
    with np.errstate(all="ignore"):
        wide = values.astype(np.float64)
    if not large:  # no inf/NaN, so the bound applies to every element
        rng = np.random.default_rng(seed + 1)
        bad = ~np.isfinite(wide)
        values[bad] = rng.standard_normal(int(bad.sum())).astype(values.dtype)
    return values


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_average_of_hostile_sources_keeps_the_documented_bound(tmp_path, tf, dtype, n):
    """average of n TensorFlow checkpoints of hostile values (sizes around the 512 KiB chunk): each
    finite mean is within the documented bound of numpy's float64 mean (gamma_n * mean|x| + 2**-150,
    plus half a unit in the last place of float16/bfloat16); two float32 sources give the correctly
    rounded mean; where an inf or NaN is among the values, the result is numpy's mean's inf or NaN."""
    import ml_dtypes
    import numpy as np

    sizes = [131071, 131073, 262145, 5]

    def values(i):
        made = {f"v{s}": _finite_hostile(s, dtype, 10 * s + i, large=False) for s in sizes}
        return {**made, "odd": _finite_hostile(70001, dtype, 7 + i, large=True)}

    written, readers = _averaged(tf, tmp_path, n, values)
    u, target = 2.0 ** -24, getattr(ml_dtypes, dtype) if dtype == "bfloat16" else np.dtype(dtype)
    for name in [f"v{s}" for s in sizes] + ["odd"]:
        key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
        stack = np.stack([np.asarray(r.get_tensor(key)).astype(np.float64) for r in readers])
        with np.errstate(all="ignore"):
            exact = stack.mean(axis=0)
        got = np.asarray(written.get_tensor(key))
        assert got.dtype == target, name
        got64 = got.astype(np.float64)
        finite = np.isfinite(stack).all(axis=0)
        assert np.array_equal(np.isnan(got64[~finite]), np.isnan(exact[~finite])), name
        inf = ~finite & ~np.isnan(exact)
        assert np.array_equal(got64[inf], exact[inf]), name
        gamma = n * u / (1 - n * u)
        half_ulp = 0.0 if dtype == "float32" else np.spacing(np.abs(got[finite])).astype(np.float64) / 2
        bound = gamma * np.abs(stack[:, finite]).sum(axis=0) / n + 2.0 ** -150 + half_ulp
        off = np.abs(got64[finite] - exact[finite])
        worst = np.flatnonzero(off > bound)
        assert not worst.size, (name, exact[finite][worst[:3]], got64[finite][worst[:3]])
        if dtype == "float32" and n == 2:
            assert np.array_equal(got[finite], exact[finite].astype(np.float32)), name


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c

    value = int.from_bytes(google_crc32c.Checksum(data).digest(), "big")
    return (((value >> 15) | (value << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _big_endian_copy(prefix: str, out: str) -> None:
    """The TensorFlow bundle `prefix` as a big-endian machine writes it: the header's endianness
    BIG, each tensor's elements byte-swapped in the data file, their checksums those of the new
    bytes (TensorFlow's own protos; the table written by ckpttool's table builder)."""
    import numpy as np
    from tensorflow.core.protobuf import tensor_bundle_pb2

    from ckpttool.formats.tf.table import build_table, read_table_file

    items = read_table_file(prefix + ".index")
    data = bytearray(Path(prefix + _SHARD).read_bytes())
    rewritten = []
    for key, value in items:
        if key == b"":
            header = tensor_bundle_pb2.BundleHeaderProto.FromString(value)
            header.endianness = tensor_bundle_pb2.BundleHeaderProto.BIG
            rewritten.append((key, header.SerializeToString()))
            continue
        entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
        width = {1: 4, 2: 8, 19: 2, 14: 2, 9: 8, 3: 4}.get(entry.dtype)  # float, double, half, bfloat16, int64, int32
        if width and entry.size:
            stored = np.frombuffer(bytes(data[entry.offset:entry.offset + entry.size]), f"<u{width}")
            data[entry.offset:entry.offset + entry.size] = stored.astype(f">u{width}").tobytes()
            entry.crc32c = _masked_crc32c(bytes(data[entry.offset:entry.offset + entry.size]))
        rewritten.append((key, entry.SerializeToString()))
    Path(out + ".index").write_bytes(build_table(rewritten))
    Path(out + _SHARD).write_bytes(bytes(data))


@pytest.mark.parametrize("source", ["float32", "float64", "bfloat16", "float16"])
def test_convert_dtype_of_a_big_endian_bundle_is_the_cast_of_its_values(tmp_path, tf, source):
    """A big-endian bundle (its values TensorFlow wrote, swapped) converted with --dtype: each tensor
    is ml_dtypes' / numpy's astype of the values, as for the little-endian original."""
    import ml_dtypes
    import numpy as np

    from tests.conftest import run_cli

    (tmp_path / "le").mkdir()
    (tmp_path / "be").mkdir()
    little, big = str(tmp_path / "le" / "model.ckpt"), str(tmp_path / "be" / "model.ckpt")
    variables = {f"v{n}": tf.Variable(tf.constant(_hostile_floats(n, source, n))) for n in (131073, 65537, 7)}
    tf.train.Checkpoint(**variables).write(little)
    _big_endian_copy(little, big)
    reader = tf.train.load_checkpoint(little)
    for target in ("bfloat16", "float16", "float32", "float64"):
        if target == source:
            continue
        out = tmp_path / target / "model.ckpt"
        result = run_cli("convert", "--json", big, str(out), "--dtype", target, "--no-update-state")
        assert result.exit_code == 0, result.stderr
        written = tf.train.load_checkpoint(str(out))
        for name in variables:
            key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
            values = np.asarray(reader.get_tensor(key))
            with np.errstate(all="ignore"):
                want = values.astype(getattr(ml_dtypes, target) if target == "bfloat16" else target)
            got = np.asarray(written.get_tensor(key))
            width = f"u{want.dtype.itemsize}"
            nan = np.isnan(want.astype(np.float64))
            assert np.array_equal(np.isnan(got.astype(np.float64)), nan), (target, name)
            assert np.array_equal(got.view(width)[~nan], want.view(width)[~nan]), (target, name)


@pytest.mark.parametrize("error", [BlockingIOError(11, "Resource temporarily unavailable"),
                                   OSError(12, "Cannot allocate memory"), OSError(24, "Too many open files")],
                         ids=["fork EAGAIN", "fork ENOMEM", "pipe EMFILE"])
def test_a_helper_that_cannot_be_forked_leaves_the_scan_to_this_process(saved_prefix, tmp_path, monkeypatch, tf,
                                                                         error):
    """fork refused (a process limit, a memory limit), or no descriptors for its pipe: the scan is the in-process scan, no error,
    and no descriptor left open; ls --json and prune answer as without the helper."""
    from ckpttool.ops.runs import scan
    from tests.conftest import run_cli

    _hostile_run(saved_prefix, tmp_path / "run")
    alone = scan.scan_directory(str(tmp_path / "run"))
    plain = run_cli("ls", "--json", str(tmp_path / "run"))
    _forced(monkeypatch, scan)

    def refused():
        raise error

    monkeypatch.setattr(os, "pipe" if error.errno == 24 else "fork", refused)
    before = set(os.listdir("/proc/self/fd"))
    assert scan.scan_directory(str(tmp_path / "run"), helper=True) == alone
    assert set(os.listdir("/proc/self/fd")) == before
    forked = run_cli("ls", "--json", str(tmp_path / "run"))
    assert (forked.exit_code, forked.stdout, forked.stderr) == (plain.exit_code, plain.stdout, plain.stderr)


def test_the_helper_with_sigchld_ignored_leaves_the_scan_as_it_is(saved_prefix, tmp_path, monkeypatch, tf):
    """A process started with SIGCHLD ignored (inherited through exec from a supervisor that ignores
    it): its children are reaped by the system and waitpid fails with ECHILD. The scan with the
    helper forced on is still the in-process scan, and ls --json answers as without the helper."""
    import signal

    from ckpttool.ops.runs import scan
    from tests.conftest import run_cli

    _hostile_run(saved_prefix, tmp_path / "run")
    alone = scan.scan_directory(str(tmp_path / "run"))
    plain = run_cli("ls", "--json", str(tmp_path / "run"))
    forks = _forced(monkeypatch, scan)
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        found = scan.scan_directory(str(tmp_path / "run"), helper=True)
        forked = run_cli("ls", "--json", str(tmp_path / "run"))
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert forks
    assert found == alone
    assert (forked.exit_code, forked.stdout, forked.stderr) == (plain.exit_code, plain.stdout, plain.stderr)


@pytest.mark.parametrize("target", ["bfloat16", "float16", "float64"])
def test_convert_dtype_of_partitioned_and_transposed_variables_is_the_cast(tmp_path, tf, target):
    """A TF1 variable saved in 3 partitions of rows (pieces meeting inside the 512 KiB chunks) and a
    transposed one, hostile values, converted with --dtype: the cast of what TensorFlow reads."""
    import ml_dtypes
    import numpy as np

    from tests.conftest import run_cli

    rows, cols = 1025, 129  # 132225 float32 elements: a partition's end falls inside a chunk
    values = _hostile_floats(rows * cols, "float32", 5).reshape(rows, cols)
    kernel = _hostile_floats(300 * 437, "float32", 6).reshape(300, 437)
    prefix = str(tmp_path / "src" / "model.ckpt")
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.get_variable("part", initializer=tf.constant(values),
                                  partitioner=tf.compat.v1.fixed_size_partitioner(3))
        tf.compat.v1.get_variable("dense/kernel", initializer=tf.constant(kernel))
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, prefix, write_meta_graph=False, write_state=False)
    reader = tf.train.load_checkpoint(prefix)
    dtype = getattr(ml_dtypes, target) if target == "bfloat16" else np.dtype(target)
    for extra, name, want_of in (((), "part", lambda: reader.get_tensor("part")),
                                 (("--transpose", "kernel=1,0"), "dense/kernel",
                                  lambda: reader.get_tensor("dense/kernel").T)):
        out = tmp_path / f"{target}-{len(extra)}" / "model.ckpt"
        result = run_cli("convert", prefix, str(out), "--dtype", target, "--no-update-state", *extra)
        assert result.exit_code == 0, result.stderr
        got = np.asarray(tf.train.load_checkpoint(str(out)).get_tensor(name))
        with np.errstate(all="ignore"):
            want = np.ascontiguousarray(want_of()).astype(dtype)
        assert got.shape == want.shape
        width = f"u{want.dtype.itemsize}"
        nan = np.isnan(want.astype(np.float64))
        assert np.array_equal(np.isnan(got.astype(np.float64)), nan), name
        assert np.array_equal(got.view(width)[~nan], want.view(width)[~nan]), name


@pytest.mark.parametrize("source", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_convert_dtype_into_other_formats_is_the_cast_their_libraries_read(tmp_path, tf, source, suffix):
    """convert --dtype of multi-chunk tensors into safetensors and npz (writers that must be done with
    each reused piece before the next): what the safetensors library and numpy read is the cast."""
    import ml_dtypes
    import numpy as np

    from tests.conftest import run_cli

    prefix = str(tmp_path / "src" / "model.ckpt")
    variables = {f"v{n}": tf.Variable(tf.constant(_hostile_floats(n, source, n))) for n in (262145, 131071, 3)}
    tf.train.Checkpoint(**variables).write(prefix)
    reader = tf.train.load_checkpoint(prefix)
    for target in ("bfloat16", "float16", "float32"):
        if target == source or (suffix == ".npz" and target == "bfloat16"):
            continue
        out = tmp_path / f"{target}{suffix}"
        result = run_cli("convert", prefix, str(out), "--dtype", target)
        assert result.exit_code == 0, result.stderr
        if suffix == ".safetensors":
            from safetensors import deserialize

            stored = {name: info for name, info in deserialize(out.read_bytes())}
            read = {name: np.frombuffer(bytes(info["data"]), f"<u{2 if '16' in target else 4}")
                    for name, info in stored.items()}
        else:
            with np.load(out) as npz:
                read = {name: npz[name].view(f"<u{npz[name].dtype.itemsize}").ravel() for name in npz.files}
        dtype = getattr(ml_dtypes, target) if target == "bfloat16" else np.dtype(target)
        for name in variables:
            key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
            got = next(v for k, v in read.items() if k.split("/")[0] == name or k == key)
            with np.errstate(all="ignore"):
                want = np.asarray(reader.get_tensor(key)).astype(dtype)
            width = f"u{want.dtype.itemsize}"
            nan = np.isnan(want.astype(np.float64))
            assert np.array_equal(got[~nan], want.view(width)[~nan]), (target, name)


@pytest.mark.parametrize("n", [2, 3])
def test_average_of_float64_sources_is_numpys_mean_bit_for_bit(tmp_path, tf, n):
    """average of float64 checkpoints of hostile values (sizes around the chunk): numpy's float64 mean
    of the stacked values, bit for bit, wherever that mean is finite; where numpy's sum overflows,
    a finite mean within the documented bound, never inf."""
    import numpy as np

    written, readers = _averaged(tf, tmp_path, n, lambda i: {
        f"v{s}": _finite_hostile(s, "float64", 3 * s + i, large=False) for s in (65535, 65537, 131073)})
    for size in (65535, 65537, 131073):
        key = f"v{size}/.ATTRIBUTES/VARIABLE_VALUE"
        stack = np.stack([np.asarray(r.get_tensor(key)) for r in readers])
        with np.errstate(all="ignore"):
            mean = stack.mean(axis=0)
        got = np.asarray(written.get_tensor(key))
        finite = np.isfinite(mean)
        assert np.array_equal(got[finite].view("<u8"), mean[finite].view("<u8")), key
        assert np.isfinite(got).all(), key
        exact = (stack / 8).sum(axis=0) / n * 8  # no overflow: scaled by a power of two
        off = np.abs(got[~finite] - exact[~finite])
        assert (off <= n * 2.0 ** -52 * np.abs(stack[:, ~finite]).sum(axis=0) / n).all(), key
