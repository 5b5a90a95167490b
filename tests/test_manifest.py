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


def canonical_digest(value, dtype: str) -> str:
    """SHA-256 of the canonical encoding (docs/reference/manifest.md), from a value TensorFlow read."""
    assert sys.byteorder == "little"  # numpy's native bytes are the encoding's little-endian ones
    value = np.asarray(value)
    digest = hashlib.sha256(f"ckpttool-tensor-v1\0{dtype}\0{','.join(map(str, value.shape))}\0".encode())
    if value.dtype == object:
        for item in value.reshape(-1):
            digest.update(len(item).to_bytes(8, "little") + item)
    else:
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def tensorflow_digests(tf, prefix: Path) -> dict[str, tuple[str, list[int], str]]:
    """name -> (dtype, shape, digest) of every variable TensorFlow reads from the checkpoint."""
    reader = tf.train.load_checkpoint(str(prefix))
    dtypes = reader.get_variable_to_dtype_map()
    return {name: (dtypes[name].name, list(shape), canonical_digest(reader.get_tensor(name), dtypes[name].name))
            for name, shape in reader.get_variable_to_shape_map().items() if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def manifest_of(target) -> dict:
    result = run_cli("manifest", target)
    assert result.exit_code == 0, result.stderr
    return result.json()


def digests(doc: dict) -> dict[str, str]:
    return {t["name"]: t["sha256"] for t in doc["tensors"]}


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
    assert {"bf16", "flags", "half", "empty", "step"} <= set(expected) or checkpoint == "keras/ckpt"


def test_files_are_listed_with_their_sha256(weights):
    doc = manifest_of(weights / "tf_sharded" / "weights")
    on_disk = {p.name: p for p in (weights / "tf_sharded").iterdir()}
    assert {f["path"] for f in doc["files"]} == set(on_disk)
    for f in doc["files"]:
        data = on_disk[f["path"]].read_bytes()
        assert (f["size"], f["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert (doc["format"], doc["version"], doc["checkpoint"]["format"]) == ("ckpttool-manifest", 1, "v2")


def test_every_copy_agrees_tensor_by_tensor(weights, tf, tmp_path):
    """Written by each format's library and converted by ckpttool, from TF and back to TF."""
    expected = {name: digest for name, (_dtype, _shape, digest) in tensorflow_digests(tf, weights / "tf/weights").items()}
    for args in (["tf/weights", "c.safetensors"], ["tf/weights", "c.npz", "--drop", "bf16"],
                 ["lib.safetensors", "back/weights"], ["lib.npz", "back_npz/weights"]):
        result = run_cli("convert", weights / args[0], tmp_path / args[1], *args[2:])
        assert result.exit_code == 0, result.stderr
    copies = {"lib.safetensors": weights / "lib.safetensors", "lib.npz": weights / "lib.npz",
              "c.safetensors": tmp_path / "c.safetensors", "c.npz": tmp_path / "c.npz",
              "back": tmp_path / "back/weights", "back_npz": tmp_path / "back_npz/weights"}
    manifest = write_manifest(weights / "tf/weights", tmp_path / "tf.json")
    for name, copy in copies.items():
        found = digests(manifest_of(copy))
        without_bf16 = "npz" in name  # numpy has no bfloat16: the .npz copies lack it
        assert found == {k: v for k, v in expected.items() if not (without_bf16 and k == "bf16")}, name
        result = verify(manifest, copy)
        doc = result.json()
        assert [(t["name"], t["change"]) for t in doc["tensors"]] == ([("bf16", "missing")] if without_bf16 else [])
        assert result.exit_code == (1 if without_bf16 else 0), name
    # the TF bundle ckpttool wrote from the library's safetensors has the same name and is byte-identical
    doc = verify(manifest, tmp_path / "back/weights").json()
    assert doc["mode"] == "files" and doc["ok"] and doc["checked_files"] == 2


def test_a_keras_file_and_the_tf_checkpoint_of_its_model_hold_the_same_tensors(weights, tf, tmp_path):
    """Keras' save_weights and tf.train.Checkpoint name the weights differently: matched by digest."""
    keras_doc = manifest_of(weights / "keras/model.weights.h5")
    tf_values = tensorflow_digests(tf, weights / "keras/ckpt")
    assert sorted(digests(keras_doc).values()) == sorted(digest for _d, _s, digest in tf_values.values())
    manifest = write_manifest(weights / "keras/ckpt", tmp_path / "ckpt.json")
    renamed = verify(manifest, weights / "keras/model.weights.h5")
    assert renamed.exit_code == 1
    changes = renamed.json()["tensors"]
    assert {c["change"] for c in changes} == {"renamed"} and {c["name"] for c in changes} == set(tf_values)
    assert {c["renamed_to"] for c in changes} == set(digests(keras_doc))
    assert verify(manifest, weights / "keras/model.weights.h5", "--ignore-names").exit_code == 0
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


@pytest.mark.parametrize("copy,shard", [("tf/weights", "tf/weights.data-00000-of-00001"),
                                        ("lib.safetensors", "lib.safetensors"), ("lib.npz", "lib.npz")])
def test_one_flipped_byte_is_found_and_named(weights, tmp_path, monkeypatch, copy, shard):
    from ckpttool.ops.tensors import manifest as manifest_module

    monkeypatch.setattr(manifest_module, "PIECE_BYTES", 1 << 20)  # the 2.4 MB files are checked in pieces
    shutil.copytree(weights, tmp_path / "w")
    manifest = write_manifest(tmp_path / "w" / copy, tmp_path / "m.json")
    listed = {f["path"]: f for f in json.loads(manifest.read_text())["files"]}
    size = (tmp_path / "w" / shard).stat().st_size
    assert len(listed[Path(shard).name]["pieces"]) == -(-size // (1 << 20)) >= 2
    original = np.load(weights / "lib.npz")
    flipped = _flip_inside(tmp_path / "w" / shard, original["dense/kernel"].tobytes()[-4096:])
    doc = verify(manifest, tmp_path / "w" / copy).json()
    assert doc.get("mode") == "files" and not doc["ok"], doc
    assert [(f["name"], f["change"]) for f in doc["files"]] == [(Path(shard).name, "changed")]
    assert f"from byte {flipped >> 20 << 20}" in doc["files"][0]["message"]  # the piece that holds it
    # named by tensor too: changed (no checksum in safetensors) or unreadable (a CRC that fails)
    assert [t["name"] for t in doc["tensors"]] == ["dense/kernel"]
    assert doc["tensors"][0]["change"] in ("changed", "unreadable")
    # and compared by tensor against the TF checkpoint's manifest: the same tensor, the only one
    tf_manifest = write_manifest(weights / "tf/weights", tmp_path / "tf.json")
    by_tensor = verify(tf_manifest, tmp_path / "w" / copy, "--tensors").json()
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
    "a newer version": b'{"format": "ckpttool-manifest", "version": 2}',
    "a short digest": None,  # built from a real one below
    "a path leaving the directory": None,
    "pieces that do not fit": None,
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
    data = BAD_MANIFESTS[case] or json.dumps(good).encode()
    (tmp_path / "bad.json").write_bytes(data)
    result = run_cli("verify", "--manifest", tmp_path / "bad.json", weights / "tf/weights")
    assert_one_line_error(result, 3)
    assert "bad.json" in result.stderr and result.stdout == ""
    doc = run_cli("verify", "--json", "--manifest", tmp_path / "bad.json", weights / "tf/weights").json()
    assert doc["error"]["code"] == 3


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
             ("tensors", 0, "shape"), ("tensors", 0, "sha256"), ("tensors", 1, "name"), ("tensor_encoding",)]

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
