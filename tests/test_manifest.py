"""`manifest`, `verify --manifest`, `diff --by-hash`, `inspect --hash` (issue 27 items 5-8).

The oracle: each tensor's digest is computed here, with hashlib, from the values TensorFlow reads
(tf.train.load_checkpoint) encoded as docs/reference/manifest.md defines; the copies are written by
each format's own library (tests/manifest_fixtures.py) and by ckpttool's convert."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_one_line_error, build_fixtures, run_cli
from tests.test_remote import servers  # noqa: F401 - a fixture

SCHEMA = ROOT / "docs" / "reference" / "manifest.schema.json"


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    return build_fixtures(tmp_path_factory, "manifest_fixtures.py", "manifest_fixtures")


def canonical_elements(value) -> bytes:
    """The elements part of the canonical encoding (docs/reference/manifest.md) of a value TensorFlow read."""
    assert sys.byteorder == "little"  # numpy's native bytes are the encoding's little-endian ones
    if isinstance(value, bytes):  # a scalar string, as TensorFlow hands it out
        return len(value).to_bytes(8, "little") + value
    value = np.asarray(value)
    if value.dtype == object:
        return b"".join(len(item).to_bytes(8, "little") + item for item in value.reshape(-1))
    return np.ascontiguousarray(value).tobytes()


def canonical_digest(value, dtype: str) -> str:
    """SHA-256 of the canonical encoding, from a value TensorFlow read."""
    shape = ",".join(map(str, np.shape(value)))
    return hashlib.sha256(f"ckpttool-tensor-v1\0{dtype}\0{shape}\0".encode() + canonical_elements(value)).hexdigest()


def canonical_crc(value) -> str:
    """CRC-32C (version 2) of the elements alone, by google-crc32c, as 8 hex digits."""
    import google_crc32c

    return f"{google_crc32c.value(canonical_elements(value)):08x}"


def tensorflow_values(tf, prefix: Path) -> dict:
    """name -> (dtype, value) of every variable TensorFlow reads from the checkpoint."""
    reader = tf.train.load_checkpoint(str(prefix))
    dtypes = reader.get_variable_to_dtype_map()
    return {name: (dtypes[name].name, reader.get_tensor(name))
            for name in reader.get_variable_to_shape_map() if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def tensorflow_digests(tf, prefix: Path) -> dict[str, tuple[str, list[int], str]]:
    """name -> (dtype, shape, digest) of every variable TensorFlow reads from the checkpoint."""
    return {name: (dtype, list(np.shape(value)), canonical_digest(value, dtype))
            for name, (dtype, value) in tensorflow_values(tf, prefix).items()}


def tensorflow_crcs(tf, prefix: Path) -> dict[str, str]:
    return {name: canonical_crc(value) for name, (_dtype, value) in tensorflow_values(tf, prefix).items()}


def manifest_of(target) -> dict:
    result = run_cli("manifest", target)
    assert result.exit_code == 0, result.stderr
    return result.json()


def digests(doc: dict, kind: str = "sha256") -> dict[str, str]:
    return {t["name"]: t[kind] for t in doc["tensors"]}


def verify(manifest: Path, target, *extra: str):
    return run_cli("verify", "--json", "--manifest", manifest, target, *extra)


def write_manifest(target, out: Path) -> Path:
    result = run_cli("manifest", target, "-o", out)
    assert result.exit_code == 0, result.stderr
    return out


# -- item 5: digests that do not depend on the format -------------------------------------------------

@pytest.mark.parametrize("checkpoint", ["tf/weights", "tf_sharded/weights", "keras/ckpt"])
def test_tensor_digests_are_tensorflows_values_canonically_encoded(weights, tf, checkpoint):
    doc = manifest_of(weights / checkpoint)
    expected = tensorflow_digests(tf, weights / checkpoint)
    assert {t["name"]: (t["dtype"], t["shape"], t["sha256"]) for t in doc["tensors"]} == expected
    assert digests(doc, "crc32c") == tensorflow_crcs(tf, weights / checkpoint)
    assert {"bf16", "flags", "half", "empty", "step"} <= set(expected) or checkpoint == "keras/ckpt"


def test_files_are_listed_with_their_sha256(weights):
    doc = manifest_of(weights / "tf_sharded" / "weights")
    on_disk = {p.name: p for p in (weights / "tf_sharded").iterdir()}
    assert {f["path"] for f in doc["files"]} == set(on_disk)
    import google_crc32c

    for f in doc["files"]:
        data = on_disk[f["path"]].read_bytes()
        assert (f["size"], f["sha256"], f["crc32c"]) == (len(data), hashlib.sha256(data).hexdigest(),
                                                         f"{google_crc32c.value(data):08x}")
    assert (doc["format"], doc["version"], doc["checkpoint"]["format"]) == ("ckpttool-manifest", 2, "v2")


def test_every_copy_agrees_tensor_by_tensor(weights, tf, tmp_path):
    """Written by each format's library and converted by ckpttool, from TF and back to TF."""
    expected = {name: digest for name, (_dtype, _shape, digest) in tensorflow_digests(tf, weights / "tf/weights").items()}
    expected_crcs = tensorflow_crcs(tf, weights / "tf/weights")
    for args in (["tf/weights", "c.safetensors"], ["tf/weights", "c.npz", "--drop", "bf16"],
                 ["lib.safetensors", "back/weights"], ["lib.npz", "back_npz/weights"]):
        result = run_cli("convert", weights / args[0], tmp_path / args[1], *args[2:])
        assert result.exit_code == 0, result.stderr
    copies = {"lib.safetensors": weights / "lib.safetensors", "lib.npz": weights / "lib.npz",
              "c.safetensors": tmp_path / "c.safetensors", "c.npz": tmp_path / "c.npz",
              "back": tmp_path / "back/weights", "back_npz": tmp_path / "back_npz/weights"}
    manifest = write_manifest(weights / "tf/weights", tmp_path / "tf.json")
    for name, copy in copies.items():
        copy_doc = manifest_of(copy)
        without_bf16 = "npz" in name  # numpy has no bfloat16: the .npz copies lack it
        assert digests(copy_doc) == {k: v for k, v in expected.items() if not (without_bf16 and k == "bf16")}, name
        assert digests(copy_doc, "crc32c") == {k: v for k, v in expected_crcs.items()
                                               if not (without_bf16 and k == "bf16")}, name
        for quick in ((), ("--quick",)):
            result = verify(manifest, copy, *quick)
            doc = result.json()
            assert [(t["name"], t["change"]) for t in doc["tensors"]] == ([("bf16", "missing")] if without_bf16 else [])
            assert result.exit_code == (1 if without_bf16 else 0), name
            assert doc["digest"] == ("crc32c" if quick else "sha256")
    # the TF bundle ckpttool wrote from the library's safetensors has the same name and is byte-identical
    doc = verify(manifest, tmp_path / "back/weights").json()
    assert doc["mode"] == "files" and doc["ok"] and doc["checked_files"] == 2


def test_a_keras_file_and_the_tf_checkpoint_of_its_model_hold_the_same_tensors(weights, tf, tmp_path):
    """Keras' save_weights and tf.train.Checkpoint name the weights differently: matched by digest."""
    keras_doc = manifest_of(weights / "keras/model.weights.h5")
    tf_values = tensorflow_digests(tf, weights / "keras/ckpt")
    assert sorted(digests(keras_doc).values()) == sorted(digest for _d, _s, digest in tf_values.values())
    assert sorted(digests(keras_doc, "crc32c").values()) == sorted(tensorflow_crcs(tf, weights / "keras/ckpt").values())
    manifest = write_manifest(weights / "keras/ckpt", tmp_path / "ckpt.json")
    renamed = verify(manifest, weights / "keras/model.weights.h5")
    assert renamed.exit_code == 1
    changes = renamed.json()["tensors"]
    assert {c["change"] for c in changes} == {"renamed"} and {c["name"] for c in changes} == set(tf_values)
    assert {c["renamed_to"] for c in changes} == set(digests(keras_doc))
    assert verify(manifest, weights / "keras/model.weights.h5", "--ignore-names").exit_code == 0
    quick = verify(manifest, weights / "keras/model.weights.h5", "--quick").json()  # renamed, by CRC-32C too
    assert [(c["name"], c["change"], c["renamed_to"]) for c in quick["tensors"]] == \
        [(c["name"], c["change"], c["renamed_to"]) for c in changes]
    # ckpttool's conversions of the Keras file agree with it, and with TensorFlow's checkpoint by digest
    for out in ("k.safetensors", "k.npz", "k/weights"):
        assert run_cli("convert", weights / "keras/model.weights.h5", tmp_path / out).exit_code == 0
        assert digests(manifest_of(tmp_path / out)) == digests(keras_doc), out
    # a Keras file written by ckpttool from TensorFlow's checkpoint (Keras' names mapped as Keras saves
    # Dense and BatchNormalization variables) has the tensors of the one Keras wrote
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    names = {"1/_kernel": "dense/vars/0", "1/bias": "dense/vars/1", "2/gamma": "batch_normalization/vars/0",
             "2/beta": "batch_normalization/vars/1", "2/moving_mean": "batch_normalization/vars/2",
             "2/moving_variance": "batch_normalization/vars/3", "3/_kernel": "dense_1/vars/0",
             "3/bias": "dense_1/vars/1"}
    maps = [a for tf_name, keras_name in names.items()
            for a in ("--map", f"model/_operations/{tf_name}{suffix}=layers/{keras_name}")]
    written = run_cli("convert", weights / "keras/ckpt", tmp_path / "ours.weights.h5", "--like",
                      weights / "keras/model.weights.h5", *maps)
    assert written.exit_code == 0, written.stderr
    keras_manifest = write_manifest(weights / "keras/model.weights.h5", tmp_path / "keras.json")
    assert verify(keras_manifest, tmp_path / "ours.weights.h5").json()["ok"]


# -- item 6: every difference named -----------------------------------------------------------------

def _flip_inside(path: Path, needle: bytes) -> int:
    """Flip one byte in the middle of `needle`'s only occurrence in the file; its offset."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, path
    data[at + len(needle) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    return at + len(needle) // 2


@pytest.mark.parametrize("quick", [(), ("--quick",)], ids=["sha256", "crc32c"])
@pytest.mark.parametrize("copy,shard", [("tf/weights", "tf/weights.data-00000-of-00001"),
                                        ("lib.safetensors", "lib.safetensors"), ("lib.npz", "lib.npz")])
def test_one_flipped_byte_is_found_and_named(weights, tmp_path, monkeypatch, copy, shard, quick):
    from ckpttool.ops.tensors import manifest as manifest_module

    monkeypatch.setattr(manifest_module, "PIECE_BYTES", 1 << 20)  # the 2.4 MB files are checked in pieces
    shutil.copytree(weights, tmp_path / "w")
    manifest = write_manifest(tmp_path / "w" / copy, tmp_path / "m.json")
    listed = {f["path"]: f for f in json.loads(manifest.read_text())["files"]}
    size = (tmp_path / "w" / shard).stat().st_size
    assert len(listed[Path(shard).name]["pieces"]) == -(-size // (1 << 20)) >= 2
    original = np.load(weights / "lib.npz")
    flipped = _flip_inside(tmp_path / "w" / shard, original["dense/kernel"].tobytes()[-4096:])
    doc = verify(manifest, tmp_path / "w" / copy, *quick).json()
    assert doc.get("mode") == "files" and not doc["ok"], doc
    assert [(f["name"], f["change"]) for f in doc["files"]] == [(Path(shard).name, "changed")]
    if not quick:  # SHA-256s of pieces are listed; a CRC-32C is the whole file's
        assert f"from byte {flipped >> 20 << 20}" in doc["files"][0]["message"]  # the piece that holds it
    # named by tensor too: changed (no checksum in safetensors) or unreadable (a CRC that fails)
    assert [t["name"] for t in doc["tensors"]] == ["dense/kernel"]
    assert doc["tensors"][0]["change"] in ("changed", "unreadable")
    # and compared by tensor against the TF checkpoint's manifest: the same tensor, the only one
    tf_manifest = write_manifest(weights / "tf/weights", tmp_path / "tf.json")
    by_tensor = verify(tf_manifest, tmp_path / "w" / copy, "--tensors", *quick).json()
    named = [t for t in by_tensor["tensors"] if not (copy == "lib.npz" and t["name"] == "bf16")]
    assert by_tensor["mode"] == "tensors" and [t["name"] for t in named] == ["dense/kernel"]


def test_a_flipped_byte_in_an_h5_dataset_is_found_and_named(weights, tmp_path):
    import h5py

    copy = tmp_path / "model.weights.h5"
    shutil.copy(weights / "keras/model.weights.h5", copy)
    manifest = write_manifest(copy, tmp_path / "m.json")
    with h5py.File(copy, "r") as h5:
        kernel = h5["layers/dense_1/vars/0"][()]
    _flip_inside(copy, kernel.tobytes())
    doc = verify(manifest, copy).json()
    assert [(f["name"], f["change"]) for f in doc["files"]] == [("model.weights.h5", "changed")]
    assert [(t["name"], t["change"]) for t in doc["tensors"]] == [("layers/dense_1/vars/0", "changed")]


def test_missing_and_extra_files_are_named(weights, tmp_path):
    shutil.copytree(weights / "tf_sharded", tmp_path / "s")
    manifest = write_manifest(tmp_path / "s" / "weights", tmp_path / "m.json")
    (tmp_path / "s" / "weights.data-00001-of-00002").unlink()
    (tmp_path / "s" / "weights.meta").write_bytes(b"a graph saved later")
    result = verify(manifest, tmp_path / "s" / "weights")
    doc = result.json()
    assert result.exit_code == 1
    assert sorted((f["name"], f["change"]) for f in doc["files"]) == [
        ("weights.data-00001-of-00002", "missing"), ("weights.meta", "extra")]
    unreadable = {t["name"] for t in doc["tensors"]}
    assert {t["change"] for t in doc["tensors"]} == {"unreadable"}
    assert all("weights.data-00001-of-00002" in t["message"] for t in doc["tensors"])
    # the tensors of the shard still there are intact: they alone match by tensor
    kept = set(digests(json.loads(manifest.read_text()))) - unreadable
    assert kept and unreadable
    by_tensor = verify(manifest, tmp_path / "s" / "weights", "--tensors").json()
    assert {t["name"] for t in by_tensor["tensors"]} == unreadable


def test_missing_extra_and_renamed_tensors_are_named(weights, tmp_path):
    import safetensors.numpy

    manifest = write_manifest(weights / "tf/weights", tmp_path / "tf.json")
    values = safetensors.numpy.load_file(weights / "lib.safetensors")
    values["model/bias"] = values.pop("dense/bias")  # renamed: same values
    del values["step"]
    values["new"] = np.ones(3, np.float32)
    values["counts"] = values["counts"] + 1
    safetensors.numpy.save_file(values, tmp_path / "edited.safetensors")
    result = verify(manifest, tmp_path / "edited.safetensors")
    assert result.exit_code == 1
    doc = result.json()
    assert doc["mode"] == "tensors" and doc["files"] == []
    assert [(t["name"], t["change"], t.get("renamed_to")) for t in doc["tensors"]] == [
        ("counts", "changed", None), ("dense/bias", "renamed", "model/bias"), ("new", "extra", None),
        ("step", "missing", None)]
    assert verify(manifest, tmp_path / "edited.safetensors", "--ignore-names").exit_code == 1  # the rest remain


def test_people_see_each_difference(weights, tmp_path):
    manifest = write_manifest(weights / "tf/weights", tmp_path / "tf.json")
    text = run_cli("verify", "--manifest", manifest, weights / "lib.npz")
    assert text.exit_code == 1 and "bf16" in text.stdout and "missing" in text.stdout
    assert "DIFFERENT (1 difference)" in text.stdout
    quiet = run_cli("verify", "-q", "--manifest", manifest, weights / "lib.npz")
    assert quiet.stdout == "bf16\n"


BAD_MANIFESTS = {
    "not JSON": b"{nope",
    "not a manifest": b'{"files": []}',
    "a newer version": b'{"format": "ckpttool-manifest", "version": 3}',
    "a short digest": None,  # built from a real one below
    "version 2 without a crc32c": None,
    "a bad crc32c": None,
    "a path leaving the directory": None,
    "pieces that do not fit": None,
    # Two entries under one name: only one could be compared, so a manifest listing a tensor or a
    # file twice (the copy with another dtype or digest) verified OK.
    "a tensor listed twice": None,
    "a file listed twice": None,
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_bad_manifest_is_one_line_and_exit_3(weights, tmp_path, case):
    good = json.loads(write_manifest(weights / "tf/weights", tmp_path / "good.json").read_text())
    if case == "a short digest":
        good["tensors"][0]["sha256"] = "abc"
    elif case == "a path leaving the directory":
        good["files"][0]["path"] = "../../etc/passwd"
    elif case == "pieces that do not fit":
        good["files"][0]["pieces"] = [good["files"][0]["sha256"]]
    elif case == "version 2 without a crc32c":
        del good["tensors"][0]["crc32c"]
    elif case == "a bad crc32c":
        good["files"][0]["crc32c"] = "0x12345678"
    elif case == "a tensor listed twice":
        good["tensors"].insert(0, {**good["tensors"][0], "dtype": "int8", "sha256": "0" * 64, "crc32c": "0" * 8})
    elif case == "a file listed twice":
        good["files"].insert(0, {**good["files"][0], "sha256": "0" * 64, "crc32c": "0" * 8})
    data = BAD_MANIFESTS[case] or json.dumps(good).encode()
    (tmp_path / "bad.json").write_bytes(data)
    result = run_cli("verify", "--manifest", tmp_path / "bad.json", weights / "tf/weights")
    assert_one_line_error(result, 3)
    assert "bad.json" in result.stderr and result.stdout == ""
    doc = run_cli("verify", "--json", "--manifest", tmp_path / "bad.json", weights / "tf/weights").json()
    assert doc["error"]["code"] == 3
    for extra in (["--quick"], ["--quick", "--tensors"], ["--tensors"]):
        assert_one_line_error(run_cli("verify", "--manifest", tmp_path / "bad.json", weights / "tf/weights", *extra), 3)


def test_any_mutation_of_a_manifest_is_read_or_refused_as_bad_input(weights, tmp_path):
    """Hostile manifests: every field replaced by any JSON value, or the bytes cut or flipped; only
    CkptError comes out of the parser (exit 3 at the command line), never another exception."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from ckpttool.errors import CkptError
    from ckpttool.ops.tensors.manifest import parse_manifest

    good = json.loads(write_manifest(weights / "tf/weights", tmp_path / "good.json").read_text())
    good["files"][1]["pieces"] = []  # a place for pieces to be mutated
    data = json.dumps(good).encode()
    values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=3), max_leaves=6)
    paths = [("format",), ("version",), ("checkpoint",), ("checkpoint", "path"), ("piece_bytes",), ("files",),
             ("files", 0), ("files", 0, "path"), ("files", 0, "size"), ("files", 1, "pieces"), ("tensors", 0),
             ("tensors", 0, "shape"), ("tensors", 0, "sha256"), ("tensors", 1, "name"), ("tensor_encoding",),
             ("files", 0, "crc32c"), ("tensors", 0, "crc32c")]

    def parses_or_refuses(document_bytes: bytes) -> None:
        try:
            parse_manifest(document_bytes, "m.json")
        except CkptError:
            pass

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(paths), values, st.integers(0, len(data)), st.integers(0, 255))
    def check(path, value, at, byte):
        doc = json.loads(data)
        holder = doc
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = value
        parses_or_refuses(json.dumps(doc).encode())
        parses_or_refuses(data[:at])
        parses_or_refuses(data[:at] + bytes([byte]) + data[at + 1:])

    check()


def test_a_missing_manifest_and_misused_options(weights, tmp_path):
    assert_one_line_error(run_cli("verify", "--manifest", tmp_path / "none.json", weights / "tf/weights"), 3)
    assert_one_line_error(run_cli("verify", "--tensors", weights / "tf/weights"), 2)
    assert_one_line_error(run_cli("verify", "--all", "--manifest", tmp_path / "m.json", weights / "tf"), 2)


def test_manifest_refuses_a_damaged_checkpoint_and_an_existing_output(weights, tmp_path):
    shutil.copytree(weights / "tf", tmp_path / "tf")
    out = write_manifest(tmp_path / "tf" / "weights", tmp_path / "m.json")
    assert_one_line_error(run_cli("manifest", tmp_path / "tf" / "weights", "-o", out), 4)
    _flip_inside(tmp_path / "tf" / "weights.data-00000-of-00001", np.load(weights / "lib.npz")["embedding"].tobytes()[:64])
    result = run_cli("manifest", tmp_path / "tf" / "weights", "-o", tmp_path / "damaged.json")
    assert_one_line_error(result, 3)
    assert "checksum" in result.stderr and not (tmp_path / "damaged.json").exists()


# -- version 2: CRC-32Cs, and --quick -------------------------------------------------------------

def test_a_bundles_stored_crcs_are_the_crc32c_of_its_canonical_bytes(fixtures_dir, weights, tf):
    """What `--quick` relies on (ops/tensors/digests.py): for a little-endian fixed-width tensor,
    the CRC that TensorFlow stores in the index is the CRC-32C of the tensor's canonical bytes
    (masked), and the slices of whole rows join into the variable's. Checked against the values
    TensorFlow reads from checkpoints it wrote, every dtype, partitioned and sharded ones too."""
    from ckpttool.formats.tf import crc32c as crc
    from ckpttool.formats.tf.bundle import open_bundle

    prefixes = [weights / "tf/weights", weights / "tf_sharded/weights", weights / "keras/ckpt",
                fixtures_dir / "every_dtype/dtypes", fixtures_dir / "partitioned/model.ckpt-5"]
    joined = 0
    for prefix in prefixes:
        values = tensorflow_values(tf, prefix)
        with open_bundle(str(prefix)) as bundle:
            for var in bundle.variables:
                if var.name not in values or not var.dtype.fixed_width:
                    continue
                dtype, value = values[var.name]
                expected = canonical_crc(value)
                if not var.partitioned:
                    assert f"{crc.unmask(var.parts[0].crc32c):08x}" == expected, (prefix, var.name)
                elif all(length == -1 or (start, length) == (0, size)
                         for extents in var.slices for (start, length), size in zip(extents[1:], var.shape[1:])):
                    # slices of whole rows: their CRCs joined in row order
                    running = 0
                    for extents, part in sorted(zip(var.slices, var.parts), key=lambda pair: pair[0][0][0]):
                        running = crc.combine(running, crc.unmask(part.crc32c), part.size)
                    assert f"{running:08x}" == expected, (prefix, var.name)
                    joined += 1
        doc = manifest_of(prefix)  # the manifest's CRC-32Cs are those of TensorFlow's values
        assert digests(doc, "crc32c") == {name: canonical_crc(value) for name, (_d, value) in values.items()}, prefix
    assert joined  # the partitioned fixture has a variable split in whole rows


@pytest.mark.parametrize("case", ["partitioned/model.ckpt-5", "every_dtype/dtypes", "max_shard"])
def test_quick_check_of_tensorflow_checkpoints(fixtures_dir, tmp_path, case):
    """--quick on TF's own checkpoints: by files, and by tensors (index CRCs reused where the stored bytes
    are the canonical ones, strings and slices not of whole rows read and checksummed), against the
    manifest of their safetensors copy too where safetensors can hold them."""
    prefix = fixtures_dir / case
    if case == "max_shard":
        prefix = next(fixtures_dir.joinpath(case).glob("*.index")).with_suffix("")
    manifest = write_manifest(prefix, tmp_path / "m.json")
    for extra in ((), ("--tensors",)):
        doc = verify(manifest, prefix, "--quick", *extra).json()
        assert doc["ok"] and doc["digest"] == "crc32c" and doc["mode"] == ("tensors" if extra else "files"), doc
    if case != "every_dtype/dtypes":  # strings and int4 have no safetensors dtype
        assert run_cli("convert", prefix, tmp_path / "c.safetensors").exit_code == 0
        copy_manifest = write_manifest(tmp_path / "c.safetensors", tmp_path / "c.json")
        assert verify(copy_manifest, prefix, "--quick").json()["ok"]


def _v1_document(tf, prefix: Path) -> dict:
    """A version-1 manifest as the code before version 2 wrote it (docs/reference/manifest.md of then),
    built here from the files' bytes (hashlib) and TensorFlow's values: no crc32c anywhere."""
    files = []
    for path in sorted(prefix.parent.glob(prefix.name + ".*")):
        data = path.read_bytes()
        files.append({"path": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return {"format": "ckpttool-manifest", "version": 1, "created_by": "ckpttool 0.1.0",
            "checkpoint": {"path": str(prefix), "format": "v2"}, "tensor_encoding": "ckpttool-tensor-v1",
            "piece_bytes": 64 << 20, "files": files,
            "tensors": [{"name": name, "dtype": dtype, "shape": shape, "sha256": digest}
                        for name, (dtype, shape, digest) in sorted(tensorflow_digests(tf, prefix).items())]}


def test_version_1_manifests_still_verify_by_sha256(weights, tf, tmp_path):
    shutil.copytree(weights / "tf", tmp_path / "tf")
    prefix = tmp_path / "tf" / "weights"
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps(_v1_document(tf, prefix)))
    _validate(json.loads(v1.read_text()))
    # version 2 is version 1 plus a crc32c in every file and tensor: nothing else changed
    v2, old = manifest_of(prefix), json.loads(v1.read_text())
    assert v2["version"] == 2 and all("crc32c" in item for item in v2["files"] + v2["tensors"])
    for key in ("files", "tensors"):
        without = [{k: v for k, v in item.items() if k != "crc32c"} for item in v2[key]]
        assert sorted(without, key=lambda item: item.get("path", item.get("name"))) == \
            sorted(old[key], key=lambda item: item.get("path", item.get("name"))), key
    by_files = verify(v1, prefix)
    assert by_files.exit_code == 0 and by_files.json()["mode"] == "files", by_files.stdout
    for copy in ("lib.safetensors", "lib.npz"):  # by tensors
        doc = verify(v1, weights / copy).json()
        assert [t["name"] for t in doc["tensors"]] == (["bf16"] if copy == "lib.npz" else []), copy
    quick = run_cli("verify", "--quick", "--manifest", v1, prefix)  # no CRC-32C to compare: said before reading
    assert_one_line_error(quick, 3)
    assert "version-1" in quick.stderr and "--quick" in quick.stderr
    assert run_cli("verify", "--json", "--quick", "--manifest", v1, prefix).json()["error"]["code"] == 3
    _flip_inside(tmp_path / "tf" / "weights.data-00000-of-00001", np.load(weights / "lib.npz")["embedding"].tobytes()[:64])
    damaged = verify(v1, prefix).json()
    assert [(f["name"], f["change"]) for f in damaged["files"]] == [("weights.data-00000-of-00001", "changed")]
    assert [t["name"] for t in damaged["tensors"]] == ["embedding"]


def test_quick_goes_with_manifest(weights):
    assert_one_line_error(run_cli("verify", "--quick", weights / "tf/weights"), 2)


# -- item 8: the documented format ----------------------------------------------------------------

def _validate(document: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    try:
        import jsonschema
    except ImportError:  # a structural check of what the schema requires
        assert set(schema["required"]) <= set(document)
        for key in ("files", "tensors"):
            for item in document[key]:
                assert set(schema["properties"][key]["items"]["required"]) <= set(item)
                assert document["version"] == 1 or "crc32c" in item  # the schema's if/then
        return
    jsonschema.validate(document, schema)


def test_manifests_follow_the_published_schema(weights, tmp_path):
    for target in ("tf/weights", "tf_sharded/weights", "lib.safetensors", "lib.npz", "keras/model.weights.h5"):
        _validate(json.loads(write_manifest(weights / target, tmp_path / "m.json").read_text()))
        (tmp_path / "m.json").unlink()
    stdout = manifest_of(weights / "tf/weights")  # stdout's document: schema_version and command on top
    _validate(stdout)
    broken = {**stdout, "tensors": [{"name": "x", "dtype": "float32", "shape": [2]}]}  # no sha256
    with pytest.raises(Exception):
        _validate(broken)
    without_crc = {**stdout, "tensors": [{k: v for k, v in t.items() if k != "crc32c"} for t in stdout["tensors"]]}
    with pytest.raises(Exception):  # required from version 2 on
        _validate(without_crc)


# -- item 7: diff --by-hash and inspect --hash ---------------------------------------------------

def test_diff_by_hash_names_what_diff_finds_changed(tmp_path):
    a, b = ROOT / "examples/run/model.ckpt-400", ROOT / "examples/run/model.ckpt-500"
    by_value = run_cli("diff", "--json", a, b).json()
    by_hash = run_cli("diff", "--json", "--by-hash", a, b)
    assert by_hash.exit_code == 1
    changed = {d["name"] for d in by_hash.json()["differences"]}
    assert changed == {d["name"] for d in by_value["differences"]}
    assert all(d["change"] == "value" and d["a_sha256"] != d["b_sha256"] for d in by_hash.json()["differences"])
    manifest = write_manifest(a, tmp_path / "a.json")  # a manifest stands for A: A is not read again
    from_manifest = run_cli("diff", "--json", "--by-hash", manifest, b).json()
    assert from_manifest["differences"] == by_hash.json()["differences"]
    assert run_cli("diff", "--by-hash", b, ROOT / "examples/run").exit_code == 0


def test_inspect_hash_shows_each_tensors_digest(weights, tf):
    doc = run_cli("inspect", "--json", "--hash", weights / "tf/weights").json()
    expected = tensorflow_digests(tf, weights / "tf/weights")
    assert {v["name"]: v["sha256"] for v in doc["variables"]} == {k: d for k, (_t, _s, d) in expected.items()}
    text = run_cli("inspect", "--hash", weights / "tf/weights").stdout
    assert expected["dense/kernel"][2] in text


# -- the Python API ------------------------------------------------------------------------------

def test_python_api(weights, tmp_path):
    import ckpttool

    manifest = ckpttool.manifest(weights / "tf/weights")
    assert digests(manifest.document()) == digests(manifest_of(weights / "tf/weights"))
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest.document()))
    assert ckpttool.verify(weights / "lib.safetensors", manifest=path).ok
    assert ckpttool.verify(weights / "lib.safetensors", manifest=manifest).ok
    report = ckpttool.verify(weights / "lib.npz", manifest=manifest)
    assert not report.ok and [(d.name, d.change) for d in report.tensors] == [("bf16", "missing")]


# -- buckets (moto's S3 server) ------------------------------------------------------------------

def test_a_checkpoint_in_a_bucket_has_the_manifest_of_its_local_copy(servers, weights, tmp_path):
    from tests.remote_servers import upload_tree
    from tests.test_remote import fresh_prefix

    shutil.copytree(weights / "tf", tmp_path / "up")
    shutil.copy(weights / "lib.safetensors", tmp_path / "up")
    url = upload_tree(servers["s3"], str(tmp_path / "up"), fresh_prefix("manifest"))
    local = manifest_of(weights / "tf/weights")
    remote = manifest_of(f"{url}/weights")
    assert (remote["files"], remote["tensors"]) == (local["files"], local["tensors"])
    manifest = write_manifest(weights / "tf/weights", tmp_path / "m.json")
    by_files = verify(manifest, f"{url}/weights").json()
    assert by_files["ok"] and by_files["mode"] == "files" and by_files["checked_files"] == 2
    by_tensors = verify(manifest, f"{url}/lib.safetensors").json()
    assert by_tensors["ok"] and by_tensors["mode"] == "tensors"
