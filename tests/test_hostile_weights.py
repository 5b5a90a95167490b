"""Hostile safetensors / .npz inputs and the Python API on them (issue 16, items 9, 11, 14, 16):
each case is checked against the format's own library first (safetensors, numpy, zipfile): what
it refuses, ckpttool refuses with exit 3 and one `error:` line under a memory cap; what it loads,
ckpttool reads equally."""
from __future__ import annotations

import io
import json
import os
import struct
import threading
import zipfile

import numpy as np
import pytest

import ckpttool
from ckpttool.errors import CkptError
from tests.conftest import assert_one_line_error, run_cli
from tests.hostile import assert_clean_exit, run_limited
from tests.test_convert_inputs import GOOD, _safetensors


def _limited_error(*args, code: int = 3) -> str:
    """Run under the memory cap; exit `code`, one error line, no traceback. Its stderr."""
    proc = run_limited(*args)
    assert_clean_exit(proc, codes=(code,))
    assert_one_line_error(proc, code)
    return proc.stderr


def _tensor(shape, dtype="F32", data: bytes = b"") -> bytes:
    return _safetensors({"a": {"dtype": dtype, "shape": shape, "data_offsets": [0, len(data)]}}, data)


def _refused_by_safetensors(path) -> bool:
    from safetensors.numpy import load_file

    try:
        load_file(str(path))
    except Exception:  # noqa: BLE001 - the library's error or numpy's, either is a refusal
        return True
    return False


# -- safetensors headers that crashed (exit 70) -----------------------------------------------

CRASHERS = {
    "dtype_is_an_object": _tensor([2], {"x": 1}, b"\0" * 8),
    "dtype_is_a_list": _tensor([2], ["F32"], b"\0" * 8),
    "lone_surrogate_name": _safetensors({"\ud800": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                                        b"\0" * 8),
    "lone_surrogate_metadata": _safetensors({"__metadata__": {"k": "\udfff"}, **GOOD}, b"\0" * 12),
    "dim_10_30": _tensor([0, 10**30]),
    "dim_2_64": _tensor([0, 2**64]),
}


@pytest.mark.parametrize("case", list(CRASHERS))
def test_safetensors_headers_the_library_refuses_exit_3(tmp_path, case):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(CRASHERS[case])
    assert _refused_by_safetensors(bad)
    out = tmp_path / "out"
    for args in (["inspect", bad], ["inspect", "--values", bad], ["diff", bad, bad],
                 ["convert", bad, out / "o.npz"], ["convert", bad, out / "o.safetensors"],
                 ["convert", bad, out / "model"]):
        _limited_error(*args)
    verify = run_cli("verify", "--json", bad)
    assert verify.exit_code == 1 and verify.json()["errors"][0]["problem"] == "corrupt_index"
    assert not out.exists()


# numpy cannot hold these values (np.empty refuses the shape); the safetensors library lists them but
# cannot load them either.
NO_ARRAY = {"rank_301": [1] * 301, "rank_101": [1] * 101, "dim_2_63": [0, 2**63], "dim_2_63_minus_1": [0, 2**63 - 1],
            "bytes_over_2_63": [0, 2**62, 4]}


@pytest.mark.parametrize("case", list(NO_ARRAY))
def test_shapes_numpy_cannot_hold_are_listed_but_never_read(tmp_path, case):
    shape = NO_ARRAY[case]
    with pytest.raises(ValueError):
        np.empty(shape, np.float32)
    size = 4 if all(shape) else 0
    path = tmp_path / "w.safetensors"
    path.write_bytes(_tensor(shape, "F32", b"\0" * size))
    assert _refused_by_safetensors(path)
    doc = run_cli("inspect", "--json", path)
    assert doc.exit_code == 0 and doc.json()["variables"][0]["shape"] == shape
    out = tmp_path / "out"
    for args in (["inspect", "--values", path], ["convert", path, out / "o.npz"],
                 ["convert", path, out / "o.safetensors"], ["convert", path, out / "model"]):
        _limited_error(*args)
    assert not out.exists()
    with ckpttool.open(path) as ckpt, pytest.raises(CkptError):
        ckpt.read("a")


def test_shape_check_agrees_with_numpy():
    from ckpttool.formats.dtypes import array_shape_problem

    for shape in ([0, 2**63 - 1], [0, 2**61, 4], [0, 2**61, 3], [2**31, 2**31], [0] * 64 + [1], [1] * 64,
                  [0, 2**62, 2], [3, 0, 2**62]):
        for dtype in ("u1", "f4", "f8"):
            try:
                np.empty(shape, dtype)
                numpy_ok = True
            except (ValueError, MemoryError) as exc:
                numpy_ok = isinstance(exc, MemoryError)  # a real allocation that failed: the shape is fine
            assert (array_shape_problem(tuple(shape), np.dtype(dtype).itemsize) is None) == numpy_ok, (shape, dtype)


# -- sharded sets: shard names and symlinks ---------------------------------------------------

def _index(directory, weight_map) -> str:
    path = directory / "model.safetensors.index.json"
    path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return str(path)


def test_symlinked_shard_outside_the_directory_is_never_read(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$saltsalt$hash:19000:0:99999:7:::\n")
    first8 = str(struct.unpack("<Q", secret.read_bytes()[:8])[0])
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(secret, run / "model-00001.safetensors")
    index = _index(run, {"a": "model-00001.safetensors"})
    for args in (["inspect", index], ["convert", index, tmp_path / "o.npz"]):
        stderr = _limited_error(*args)
        assert "outside" in stderr and first8 not in stderr
    assert not (tmp_path / "o.npz").exists()
    # a link to a good safetensors file outside is refused as well: it is where it points that matters
    (tmp_path / "good.safetensors").write_bytes(_safetensors(GOOD, b"\0" * 12))
    os.replace(tmp_path / "good.safetensors", secret)
    assert "outside" in _limited_error("inspect", index)


def test_symlinked_shard_inside_the_directory_is_read(tmp_path):
    (tmp_path / "real.safetensors").write_bytes(_safetensors(GOOD, b"\0" * 12))
    os.symlink("real.safetensors", tmp_path / "model-00001.safetensors")
    index = _index(tmp_path, {"a": "model-00001.safetensors", "b": "model-00001.safetensors"})
    assert run_cli("inspect", index).exit_code == 0


def test_no_message_quotes_the_first_bytes_as_a_number(tmp_path):
    for content in (b"-----BEGIN PRIVATE KEY-----\n", b"secret42"):
        path = tmp_path / "x.safetensors"
        path.write_bytes(content)
        number = str(struct.unpack("<Q", content[:8])[0])
        stderr = _limited_error("inspect", path)
        assert number not in stderr


@pytest.mark.parametrize("shard", ["a\u0000b.safetensors", "\ud800.safetensors"])
def test_shard_names_that_are_no_file_names(tmp_path, shard):
    index = _index(tmp_path, {"a": shard})
    with pytest.raises((ValueError, UnicodeEncodeError)):  # what Python's own open() makes of them
        open(os.path.join(tmp_path, shard), "rb")  # noqa: SIM115
    _limited_error("inspect", index)


def test_lone_surrogate_tensor_name_in_an_index(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(_safetensors(GOOD, b"\0" * 12))
    _limited_error("inspect", _index(tmp_path, {"\udc80": "m.safetensors"}))


# -- threads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_threads_reading_one_file_get_their_own_values(tmp_path, fmt):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    expected = {f"t{i}": rng.standard_normal(5000 + i).astype(np.float32) for i in range(8)}
    path = tmp_path / f"m.{fmt}"
    if fmt == "npz":
        np.savez(path, **expected)
    else:
        save_file(expected, str(path))
    wrong, barrier = [], threading.Barrier(len(expected))
    with ckpttool.open(path) as ckpt:
        def reader(name):
            barrier.wait()  # every thread starts reading at once
            for _ in range(150):
                if not np.array_equal(ckpt.read(name), expected[name]):
                    wrong.append(name)
                    return

        threads = [threading.Thread(target=reader, args=(name,)) for name in expected]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not wrong


# -- .npz --------------------------------------------------------------------------------------

def _npz(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy(array: np.ndarray, old: bytes = b"", new: bytes = b"", cut: int = 0) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    data = buffer.getvalue().replace(old, new) if old else buffer.getvalue()
    return data[: len(data) - cut]


def test_encrypted_npz_member_exits_3(tmp_path):
    path = tmp_path / "enc.npz"
    np.savez(path, a=np.zeros(3))
    data = bytearray(path.read_bytes())
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local header, central directory
        at = data.find(signature)
        data[at + flags] |= 1  # "encrypted"
    path.write_bytes(bytes(data))
    with np.load(path) as archive, pytest.raises(RuntimeError):
        archive["a"]
    assert "encrypted" in _limited_error("inspect", "--values", path)
    verify = run_cli("verify", "--json", path)
    assert verify.exit_code == 1 and "encrypted" in verify.json()["errors"][0]["message"]


def test_npz_zero_width_strings_read_as_numpy_reads_them(tmp_path):
    path = tmp_path / "s0.npz"
    _npz(path, {"a.npy": _npy(np.zeros(3, "S1"), b"'|S1'", b"'|S0'", cut=3)})
    with np.load(path) as archive:
        expected = archive["a"]
    assert expected.dtype.itemsize == 0 and expected.tolist() == [b"", b"", b""]
    doc = run_cli("inspect", "--json", "--values", path)
    assert doc.exit_code == 0, doc.stderr
    assert doc.json()["variables"][0]["value"] == ["", "", ""]
    assert run_cli("verify", path).exit_code == 0


def test_npz_shape_numpy_cannot_load_is_refused(tmp_path):
    path = tmp_path / "huge.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (0, 10**30)})
    _npz(path, {"a.npy": header.getvalue()})
    with np.load(path) as archive, pytest.raises((ValueError, OverflowError)):
        archive["a"]
    for args in (["inspect", path], ["convert", path, tmp_path / "o.safetensors"], ["convert", path, tmp_path / "m"]):
        _limited_error(*args)
    assert not (tmp_path / "o.safetensors").exists()


def test_npz_header_with_unbalanced_brackets_exits_3(tmp_path):
    """Found by the fuzz test (seed 4242): numpy's header parser tokenizes the dict, and an
    unclosed bracket raised tokenize.TokenError, which was not caught (exit 70)."""
    path = tmp_path / "unbalanced.npz"
    _npz(path, {"a.npy": _npy(np.zeros(3, "<f4"), b"(3,)", b"(3, ")})
    with np.load(path) as archive, pytest.raises(Exception):  # noqa: B017 - numpy's own refusal, any error
        archive["a"]
    for args in (["inspect", path], ["convert", path, tmp_path / "o.safetensors"]):
        _limited_error(*args)
    verify = run_cli("verify", "--json", path)  # verify reports the damage
    assert verify.exit_code == 1 and "a.npy" in verify.json()["errors"][0]["message"]


def test_npz_member_with_an_empty_name_exits_3(tmp_path):
    """Found by the fuzz test (seed 31337): ZipInfo.is_dir() raises IndexError on an empty name."""
    path = tmp_path / "empty-name.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo(""), _npy(np.zeros(3)))
    with zipfile.ZipFile(path) as archive:
        assert [info.filename for info in archive.infolist()] == [""]
    assert "not a .npy array" in _limited_error("inspect", path)


@pytest.mark.parametrize("bad", [2, 0xFF])
def test_npz_bool_bytes_other_than_0_and_1_fail_verify(tmp_path, bad):
    good = _npy(np.array([True, False, True]))
    assert good.endswith(b"\x01\x00\x01")
    path = tmp_path / "b.npz"
    _npz(path, {"flags.npy": good[:-1] + bytes([bad])})
    st = tmp_path / "b.safetensors"  # the same bytes in safetensors: its check refuses them
    st.write_bytes(_tensor([3], "BOOL", b"\x01\x00" + bytes([bad])))
    for target in (st, path):
        doc = run_cli("verify", "--json", target)
        assert doc.exit_code == 1, (target, doc.stdout)
        assert "0 and 1" in doc.json()["errors"][0]["message"]
    assert run_cli("verify", tmp_path / "b.npz").exit_code == 1


def _bool_source(kind: str, directory, bad: int, tf) -> str:
    """A file holding the bool tensor [True, False, <byte `bad`>], written by the format's own
    library (numpy, safetensors, TensorFlow's SaveV2, Keras then h5py), which each keep the byte, or
    a GraphDef constant, which TensorFlow refuses to run."""
    flags = np.array([1, 0, bad], np.uint8).view(np.bool_)
    if kind == "npz":
        np.savez(directory / "b.npz", flags=flags)
        with np.load(directory / "b.npz") as data:
            assert data["flags"].view(np.uint8)[2] == bad
        return str(directory / "b.npz")
    if kind == "safetensors":
        from safetensors.numpy import load_file, save_file

        save_file({"flags": flags}, str(directory / "b.safetensors"))
        assert load_file(str(directory / "b.safetensors"))["flags"].view(np.uint8)[2] == bad
        return str(directory / "b.safetensors")
    if kind == "graph":  # TensorFlow writes bool constants as bool_val; tensor_content holds any byte
        graph = tf.Graph()
        with graph.as_default():
            tf.constant(np.zeros(3, np.bool_), name="flags")
        graph_def = graph.as_graph_def()
        tensor = graph_def.node[0].attr["value"].tensor
        tensor.ClearField("bool_val")
        tensor.tensor_content = flags.tobytes()
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            tf.import_graph_def(graph_def, name="")
            with pytest.raises(tf.errors.InvalidArgumentError, match="Cannot parse tensor"):
                session.run("flags:0")  # TensorFlow refuses that constant
        (directory / "frozen.pb").write_bytes(graph_def.SerializeToString())
        return str(directory / "frozen.pb")
    if kind == "tf":
        prefix = str(directory / "ck" / "b")
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["flags"], shape_and_slices=[""], tensors=[tf.constant(flags)])
        assert tf.train.load_checkpoint(prefix).get_tensor("flags").view(np.uint8)[2] == bad
        return prefix
    import h5py
    import keras

    class Flags(keras.layers.Layer):
        def build(self, shape):
            self.mask = self.add_weight(shape=(3,), dtype="bool", initializer="ones", trainable=False)

        def call(self, x):
            return x

    path = str(directory / "b.weights.h5")
    keras.Sequential([keras.Input((3,)), Flags()]).save_weights(path)
    with h5py.File(path, "r+") as handle:
        handle["layers/flags/vars/0"][...] = flags
    with h5py.File(path, "r") as handle:
        assert handle["layers/flags/vars/0"][()].view(np.uint8)[2] == bad
    return path


@pytest.mark.parametrize("bad", [2, 0xFF])
@pytest.mark.parametrize("kind", ["npz", "safetensors", "tf", "keras", "graph"])
def test_bool_bytes_other_than_0_and_1_are_refused_by_convert_and_reported_by_verify(tmp_path, tf, kind, bad):
    """Each format's library reads such a byte back as it is, and TensorFlow computes with it
    (logical_not of 2 is 3, still true): convert refuses it (exit 3, nothing written), as
    verify reports it (exit 1), whatever the source (an .npz became a TF bool tensor holding 2 or 255,
    which verify then passed)."""
    source = _bool_source(kind, tmp_path, bad, tf)
    for destination in (tmp_path / "out" / "ckpt-1", tmp_path / "out" / "o.safetensors", tmp_path / "out" / "o.npz"):
        result = run_cli("convert", source, destination)
        assert_one_line_error(result, 3)
        assert "0 and 1" in result.stderr and "flags" in result.stderr
        assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
    verify = run_cli("verify", "--json", source)
    assert verify.exit_code == 1, verify.stdout
    assert "0 and 1" in verify.json()["errors"][0]["message"]


def test_megabyte_name_to_npz_is_refused_before_writing(tmp_path):
    name = "a" * (1 << 20)
    with pytest.raises(Exception):  # noqa: B017 - zipfile's own limit (65535-byte names), any error
        np.savez(tmp_path / "numpy.npz", **{name: np.zeros(2, np.float32)})
    src = tmp_path / "long.safetensors"
    src.write_bytes(_safetensors({name: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8))
    stderr = _limited_error("convert", src, tmp_path / "o.npz")
    assert len(stderr) < 2000  # the name is not echoed whole
    assert not (tmp_path / "o.npz").exists()


# -- map files ---------------------------------------------------------------------------------

def test_deeply_nested_map_file_exits_3(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.zeros(2, np.float32))
    depth = 100_000
    (tmp_path / "map.json").write_text('{"a": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(RecursionError):
        json.loads((tmp_path / "map.json").read_text())
    _limited_error("convert", tmp_path / "w.npz", tmp_path / "o.npz", "--map-file", tmp_path / "map.json")
    (tmp_path / "map.json").write_text('{"a": ["b"]}')
    _limited_error("convert", tmp_path / "w.npz", tmp_path / "o.npz", "--map-file", tmp_path / "map.json")
    assert not (tmp_path / "o.npz").exists()


# -- the Python API ----------------------------------------------------------------------------

def test_read_after_close_is_a_ckpt_error(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.zeros(2, np.float32))
    (tmp_path / "w.safetensors").write_bytes(_safetensors(GOOD, b"\0" * 12))
    for path in (tmp_path / "w.npz", tmp_path / "w.safetensors"):
        ckpt = ckpttool.open(path)
        ckpt.close()
        with pytest.raises(CkptError):
            ckpt.read("a")


@pytest.mark.parametrize("metadata", [{"a": 1}, {"a": None}, {"a": "\ud800"}])
def test_convert_metadata_must_be_strings(tmp_path, metadata):
    from safetensors.numpy import save_file

    with pytest.raises(Exception):  # noqa: B017 - the library's own refusal of such metadata
        save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "lib.safetensors"), metadata=metadata)
    np.savez(tmp_path / "w.npz", a=np.zeros(2, np.float32))
    with pytest.raises(CkptError):
        ckpttool.convert(tmp_path / "w.npz", tmp_path / "o.safetensors", metadata=metadata)
    assert not (tmp_path / "o.safetensors").exists()
