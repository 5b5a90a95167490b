"""formats/keras/probe.py: a Keras file's kind and wholeness from a few of its bytes, without h5py,
checked against h5py (keras_legacy.hdf5_kind, HDF5's own refusal of a truncated file) and Python's
zipfile on files Keras, h5py and zipfile write: every superblock version, symbol tables and link
messages, roots of thousands of links, zip64 records, every cut of a file, a file still open."""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ckpttool.formats.keras import probe as keras_probe
from ckpttool.formats.keras.legacy import hdf5_kind
from ckpttool.formats.keras.probe import probe_keras_file

h5py = pytest.importorskip("h5py")


def _h5(path: Path, links: int, extra: str, libver: str | None, attributes: int) -> Path:
    with h5py.File(path, "w", libver=libver) as f:
        for i in range(links):
            f.create_dataset(f"ds{i:05d}", data=[i])
        if extra in ("layers", "vars"):
            f.create_group(extra)
        elif extra == "model_weights":
            f.create_group("model_weights").attrs["layer_names"] = [b"dense", b"dense_1"]
        elif extra == "bare_model_weights":
            f.create_group("model_weights")
        elif extra == "soft_model_weights":
            f["ds_target"] = [1]
            f["model_weights"] = h5py.SoftLink("/ds_target")
        elif extra == "root_layer_names":
            f.attrs["layer_names0"] = [b"dense"]
        for i in range(attributes):
            f.attrs[f"a{i}"] = np.arange(50)
    return path


@pytest.mark.parametrize("libver", [None, "v108", "v110", "latest"])
def test_the_kind_is_h5pys(tmp_path, libver):
    """The kind hdf5_kind finds with h5py, for every layout h5py writes; a root whose links or
    attributes lie in a fractal heap (never in h5py's default format, which Keras writes) is
    another kind."""
    extras = ["", "layers", "vars", "model_weights", "bare_model_weights", "soft_model_weights", "root_layer_names"]
    # 600 links already fill a symbol table's B-tree of two levels (8 links a node, 32 nodes a
    # parent), as 3000 do; two files of thousands of links check the larger root itself
    for links, extra, attributes in [*itertools.product([0, 5, 600], extras, [0, 12]),
                                     (3000, "model_weights", 12), (3000, "vars", 0)]:
        path = _h5(tmp_path / "f.h5", links, extra, libver, attributes)
        probe = probe_keras_file(str(path))
        assert probe.problem is None, (links, extra, attributes, probe)
        with h5py.File(path, "r") as f:  # more than 8 go to a fractal heap (HDF5's default threshold)
            dense = libver is not None and (len(f) > 8 or len(f.attrs) > 8)
        assert probe.kind == ("other" if dense else hdf5_kind(str(path))), (links, extra, attributes, probe)


def _keras_files(series_dir: Path) -> list[Path]:
    kinds = series_dir / "kinds"
    return [min((series_dir / "keras" / "ckpt").iterdir()), kinds / "models" / "m-1.keras",
            kinds / "legacy" / "legacy-1.h5"]


def test_keras_files_are_whole_and_of_their_kind(series_dir):
    weights, archive, legacy = _keras_files(series_dir)
    assert probe_keras_file(str(weights)) == keras_probe.Probe("keras3", None)
    assert probe_keras_file(str(archive)) == keras_probe.Probe("keras3", None)
    assert probe_keras_file(str(legacy)) == keras_probe.Probe("legacy", None)
    for path in (series_dir / "kinds" / "data").iterdir():  # h5py's plain data files
        assert probe_keras_file(str(path)) == keras_probe.Probe("other", None)


def test_no_cut_of_a_keras_file_is_whole(series_dir, tmp_path):
    """Lengths short of the whole (each of the first 512 bytes, then every 29th to 4 KiB, every 61st
    after): never whole,
    cut short, and never of another kind than the whole file's; h5py refuses each one too."""
    for source in _keras_files(series_dir):
        data = source.read_bytes()
        whole = probe_keras_file(str(source))
        cut = tmp_path / source.name
        for length in itertools.chain(range(0, 512), range(512, 4096, 29), range(4096, len(data), 61)):
            cut.write_bytes(data[:length])
            probe = probe_keras_file(str(cut))
            assert probe.problem is not None and probe.cut_short, (source.name, length, probe)
            assert probe.kind in (None, whole.kind), (source.name, length, probe)
        for length in (100, len(data) // 2, len(data) - 1):
            cut.write_bytes(data[:length])
            if source.suffix == ".h5":
                with pytest.raises(OSError):
                    h5py.File(cut, "r")
            else:
                with pytest.raises(zipfile.BadZipFile):
                    zipfile.ZipFile(cut)


def test_a_save_killed_before_hdf5_closed_the_file(series_dir):
    probe = probe_keras_file(str(series_dir / "kinds" / "unclosed" / "w.05.weights.h5"))
    assert probe.kind is None and not probe.cut_short and "not closed by its writer" in probe.problem
    with pytest.raises(OSError):
        h5py.File(series_dir / "kinds" / "unclosed" / "w.05.weights.h5", "r")


def test_bytes_added_after_the_end_are_not_whole(series_dir, tmp_path):
    for source in _keras_files(series_dir):
        longer = tmp_path / source.name
        longer.write_bytes(source.read_bytes() + b"\0" * 64)
        probe = probe_keras_file(str(longer))
        assert probe.problem is not None and not probe.cut_short


def test_a_file_open_for_writing(tmp_path):
    """Superblock version 3 carries the flag HDF5 sets while a writer has the file open."""
    path = tmp_path / "w-1.weights.h5"
    f = h5py.File(path, "w", libver="latest")
    f.create_group("layers")
    f.flush()
    assert "open for writing" in probe_keras_file(str(path)).problem
    f.close()
    assert probe_keras_file(str(path)) == keras_probe.Probe("keras3", None)


def test_a_damaged_superblock(tmp_path):
    path = _h5(tmp_path / "w-1.weights.h5", 0, "layers", "latest", 0)
    data = bytearray(path.read_bytes())
    data[13] ^= 0x01  # the base address: its checksum no longer matches
    path.write_bytes(bytes(data))
    probe = probe_keras_file(str(path))
    assert probe.kind is None and "checksum" in probe.problem and not probe.cut_short
    with pytest.raises(OSError):
        h5py.File(path, "r")


def test_zip64_records(series_dir, tmp_path, monkeypatch):
    """An archive with zip64 end records (what zipfile writes past 4 GiB or 65535 members, forced
    here by lowering its limits), read by zipfile and by the probe alike, whole and cut."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 64)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)
    path = tmp_path / "m-1.keras"
    with zipfile.ZipFile(series_dir / "kinds" / "models" / "m-1.keras") as source, zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info), zipfile.ZIP_STORED)
    monkeypatch.undo()
    data = path.read_bytes()
    assert b"PK\x06\x06" in data[-200:]  # the zip64 end record
    assert zipfile.ZipFile(path).testzip() is None
    assert probe_keras_file(str(path)) == keras_probe.Probe("keras3", None)
    path.write_bytes(data[:-30])
    assert probe_keras_file(str(path)).cut_short


def test_hostile_structures_are_read_within_bounds(series_dir, tmp_path, monkeypatch):
    """A B-tree node that points at itself, a name heap declaring a terabyte: the kind is left
    undecided after a bounded number of small reads."""
    from ckpttool.storage import fs

    reads = []
    original = fs.LocalInput.read_at
    monkeypatch.setattr(fs.LocalInput, "read_at", lambda self, offset, length: reads.append(length) or
                        original(self, offset, length))
    source = min((series_dir / "keras" / "ckpt").iterdir()).read_bytes()
    btree = source.index(b"TREE")
    looping = bytearray(source)
    looping[btree + 5] = 1  # level 1: its child (itself, below) is another node
    child = btree + 8 + 2 * 8 + 8
    looping[child:child + 8] = btree.to_bytes(8, "little")
    heap = source.index(b"HEAP")
    huge = bytearray(source)
    huge[heap + 8:heap + 16] = (1 << 40).to_bytes(8, "little")
    for name, data in (("loop-1.weights.h5", looping), ("heap-1.weights.h5", huge)):
        path = tmp_path / name
        path.write_bytes(bytes(data))
        reads.clear()
        probe = probe_keras_file(str(path))
        assert probe.kind is None and probe.undecided, (name, probe)
        assert len(reads) <= 1 + keras_probe._MAX_READS and sum(reads) <= 1 << 21, (name, reads)


def test_ls_latest_and_prune_never_import_h5py(series_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(series_dir / "kinds" / "legacy", run)
    for path in (series_dir / "kinds" / "models").iterdir():
        shutil.copy(path, run / path.name)
    probe = ("import sys\nfrom ckpttool.cli.app import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('H5PY' if 'h5py' in sys.modules else 'NO_H5PY', file=sys.stderr)\n")
    for args in (["ls", str(run)], ["latest", "--complete", str(run)],
                 ["prune", "--dry-run", "--keep-last", "1", "--clean", str(run)]):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        assert "NO_H5PY" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
