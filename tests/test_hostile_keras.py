"""Hostile Keras 3 files (issue 16): HDF5 bombs that declare far more than
they hold, chunked datasets read one chunk row at a time, names that are not
UTF-8, and an encrypted `.keras` member. Every file is built with h5py (or
zipfile) in the test; h5py's own reading is the oracle for the legitimate
ones. Commands run in a subprocess with their address space capped
(tests/hostile.py), so an allocation sized by what a file claims fails.
"""
from __future__ import annotations

import base64
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.hostile import assert_clean_exit, run_limited

h5py = pytest.importorskip("h5py")

HANG_GUARD = 240  # seconds; not a measurement (the unfixed reader needed ~300 s for one 248 MB chunk)


def _bad_input(proc, *words: str) -> None:
    """Exit 3, one `error:` line naming the problem, nothing from a traceback or the memory cap."""
    assert_clean_exit(proc, codes=(3,))
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and all(line.startswith(("error: ", "hint: ")) for line in lines), lines
    assert all(word in lines[0] for word in words), lines


def _refused_everywhere(path, tmp_path, *words: str) -> None:
    _bad_input(run_limited("inspect", path, timeout=HANG_GUARD), *words)
    out = tmp_path / "out.safetensors"
    _bad_input(run_limited("convert", path, out, timeout=HANG_GUARD), *words)
    assert not out.exists()
    verify = run_limited("verify", "--json", path, timeout=HANG_GUARD)  # verify reports damage: exit 1
    assert_clean_exit(verify, codes=(1,))
    assert all(word in json.loads(verify.stdout)["errors"][0]["message"] for word in words), verify.stdout


# -- bombs ---------------------------------------------------------------------

def test_never_written_datasets_are_refused(tmp_path):
    """30 KB declaring 3.2 GB: datasets created but never written (HDF5 would read their fill value)."""
    path = tmp_path / "unwritten.weights.h5"
    with h5py.File(path, "w") as handle:
        for i in range(12):
            handle.create_dataset(f"layers/dense_{i}/vars/0", shape=(255 << 18,), dtype="f4")
        handle.create_dataset("layers/vocab/vars/0", shape=(250_000_000,), dtype="S1", chunks=(1 << 20,))
    assert os.path.getsize(path) < 64 << 10
    _refused_everywhere(path, tmp_path, "never written")


def test_partly_written_chunked_dataset_is_refused(tmp_path):
    path = tmp_path / "partly.weights.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("layers/dense/vars/0", shape=(1000,), dtype="f4", chunks=(100,))
        dataset[:100] = 1.0  # one chunk of ten written
        assert dataset.id.get_num_chunks() == 1
    _refused_everywhere(path, tmp_path, "partly never written")


def test_datasets_declaring_together_far_more_than_the_file_are_refused(tmp_path):
    """Ten 64 MiB datasets of one gzip chunk each: each alone is under the 256 MiB floor,
    together they declare 640 MiB from a file of a few hundred KB."""
    path = tmp_path / "many_bombs.weights.h5"
    count = 16 << 20
    packed = zlib.compress(b"\0" * (count * 4), 1)
    with h5py.File(path, "w") as handle:
        for i in range(10):
            dataset = handle.create_dataset(f"layers/dense_{i}/vars/0", shape=(count,), dtype="f4", chunks=(count,),
                                            compression="gzip")
            dataset.id.write_direct_chunk((0,), packed)
    with h5py.File(path, "r") as handle:  # the oracle: a real, readable file
        assert not handle["layers/dense_3/vars/0"][:1000].any()
    assert os.path.getsize(path) < 10 << 20
    _refused_everywhere(path, tmp_path, "decompression bomb")


def test_one_huge_compressed_chunk_is_inflated_once(tmp_path):
    """A 100 MB gzip chunk in a ~100 KB file (under the bomb floor, so it is read): read in
    256 KiB pieces, every piece inflated the whole chunk again (296 s for 248 MB)."""
    path = tmp_path / "one_chunk.weights.h5"
    count = 25_000_000
    values = np.zeros(count, dtype="<f4")
    values[::1_000_003] = np.arange(len(values[::1_000_003]), dtype="<f4") + 1
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("layers/dense/vars/0", shape=(count,), dtype="<f4", chunks=(count,),
                                        compression="gzip")
        dataset.id.write_direct_chunk((0,), zlib.compress(values.tobytes(), 1))
    del values
    out = tmp_path / "out.safetensors"
    assert_clean_exit(run_limited("convert", path, out, timeout=HANG_GUARD), codes=(0,))
    from safetensors.numpy import load_file

    with h5py.File(path, "r") as handle:
        expected = handle["layers/dense/vars/0"][()]
    np.testing.assert_array_equal(load_file(str(out))["layers/dense/vars/0"], expected)
    assert_clean_exit(run_limited("verify", path, timeout=HANG_GUARD), codes=(0,))


def test_chunked_datasets_are_read_in_whole_chunk_rows(tmp_path, monkeypatch):
    """Each HDF5 read covers whole rows of chunks, so each chunk is inflated by exactly one read;
    the bytes equal h5py's own reading, for every dtype Keras writes."""
    from ckpttool.formats.keras.keras3 import KerasWeights

    path = tmp_path / "chunked.weights.h5"
    rng = np.random.default_rng(5)
    arrays = {"layers/dense/vars/0": rng.standard_normal((1000, 300)).astype("<f4"),
              "layers/dense/vars/1": rng.integers(-9, 9, (77, 5, 3)).astype("<i8"),
              "optimizer/vars/0": np.array(3, dtype="<i8")}
    chunks = {"layers/dense/vars/0": (250, 300), "layers/dense/vars/1": (10, 5, 2)}
    with h5py.File(path, "w") as handle:
        for name, value in arrays.items():
            handle.create_dataset(name, data=value, chunks=chunks.get(name), compression="gzip" if name in chunks
                                  else None)
    reads = []
    original = h5py.Dataset.__getitem__

    def recording(self, selection):
        reads.append((self.name, selection))
        return original(self, selection)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording)
    with KerasWeights(str(path)) as reader:
        for var in reader.variables:
            reads.clear()
            got = b"".join(reader.iter_stored_bytes(var, 4096))  # 4 KiB pieces: 3 rows of the first
            assert got == arrays[var.name].tobytes(), var.name
            if var.name in chunks:
                rows = chunks[var.name][0]
                starts = [selection.start for _name, selection in reads]
                assert all(start % rows == 0 for start in starts), (var.name, starts)
                assert starts == sorted(set(starts)) and len(starts) <= -(-var.shape[0] // rows), (var.name, starts)
                assert all(s.stop - s.start >= rows for _n, s in reads[:-1]), reads


def test_datasets_are_not_kept_open(tmp_path):
    """100k datasets made `inspect` use 1.9 GB: every h5py Dataset stayed open."""
    from ckpttool.formats.keras.keras3 import KerasWeights

    path = tmp_path / "many.weights.h5"
    with h5py.File(path, "w") as handle:
        for i in range(200):
            handle[f"layers/dense_{i}/vars/0"] = np.arange(4, dtype="<f4") + i
    with KerasWeights(str(path)) as reader:
        assert len(reader.variables) == 200
        assert h5py.h5f.get_obj_count(reader._file.id, h5py.h5f.OBJ_DATASET) == 0
        var = reader.variable("layers/dense_7/vars/0")
        assert reader.read(var).tolist() == [7, 8, 9, 10]
        assert h5py.h5f.get_obj_count(reader._file.id, h5py.h5f.OBJ_DATASET) == 0


def test_a_large_compressed_string_dataset_is_checked_in_bands(tmp_path):
    """100M one-byte strings in a ~100 KB file: verify held them all as Python objects (gigabytes)."""
    path = tmp_path / "strings.weights.h5"
    count = 100_000_000
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("layers/vocab/vars/0", shape=(count,), dtype="S1", chunks=(1 << 22,),
                                        compression="gzip")
        packed = zlib.compress(b"a" * (1 << 22), 1)
        for i in range(-(-count // (1 << 22))):
            dataset.id.write_direct_chunk((i << 22,), packed)
    verify = run_limited("verify", "--json", path, timeout=HANG_GUARD)
    assert_clean_exit(verify, codes=(0,))
    assert json.loads(verify.stdout)["checked_bytes"] == count
    inspect = run_limited("inspect", "--values", path, timeout=HANG_GUARD)  # numpy's summary: corners only
    assert_clean_exit(inspect, codes=(0,))
    assert "[b'a', b'a', b'a', ..., b'a', b'a', b'a']" in inspect.stdout


# -- names and archives -----------------------------------------------------------

@pytest.mark.parametrize("raw", [b"layer\xff\xfe", "lone\udcff".encode("utf-8", "surrogatepass")],
                         ids=["not-utf8", "lone-surrogate"])
def test_dataset_names_that_are_not_utf8(tmp_path, raw):
    """The name is kept as bytes (shown escaped, exact in JSON's base64), not a crash (exit 70)."""
    path = tmp_path / "names.weights.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset(raw, data=np.arange(3, dtype="<f4"))  # top level: h5py's groups need text
        handle["layers/dense/vars/0"] = np.ones(2, dtype="<f4")
    with h5py.File(path, "r") as handle:
        expected = handle[raw][()]
    inspect = run_limited("inspect", "--json", "--values", path, timeout=HANG_GUARD)
    assert_clean_exit(inspect, codes=(0,))
    variables = json.loads(inspect.stdout)["variables"]
    odd = [v for v in variables if v["name"] != "layers/dense/vars/0"]
    assert len(odd) == 1 and base64.b64decode(odd[0]["name_base64"]) == raw, variables
    assert odd[0]["value"] == expected.tolist()
    assert_clean_exit(run_limited("verify", path, timeout=HANG_GUARD), codes=(0,))
    people = run_limited("inspect", path, timeout=HANG_GUARD)
    assert_clean_exit(people, codes=(0,))
    assert "\\x" in people.stdout


def test_encrypted_keras_member_is_bad_input(tmp_path):
    inner = tmp_path / "model.weights.h5"
    with h5py.File(inner, "w") as handle:
        handle["layers/dense/vars/0"] = np.ones(2, dtype="<f4")
    path = tmp_path / "locked.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.write(inner, "model.weights.h5")
    data = bytearray(path.read_bytes())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local header, central directory
        at = data.find(signature)
        while at != -1:
            flags = struct.unpack_from("<H", data, at + flag_at)[0]
            struct.pack_into("<H", data, at + flag_at, flags | 0x1)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    result = run_cli("inspect", path)
    assert_one_line_error(result, 3)
    assert "encrypted" in result.stderr
