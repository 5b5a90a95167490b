"""Weights files as TARGETs: Keras 3 files saved by TensorFlow 2.21's Keras,
hostile safetensors / .npz / .keras inputs (exit 3, nothing written), a
seeded fuzz of the new readers, and interrupted converts (no DST left)."""
from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tests.conftest import ROOT, assert_one_line_error, run_cli

# -- Keras 3 ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["m.weights.h5", "m.keras"])
def test_keras_files_list_keras_paths_and_values(fixtures_dir, name):
    keras_dir = fixtures_dir / "keras3"
    doc = run_cli("inspect", "--json", "--values", keras_dir / name).json()
    assert doc["format"] == "keras"
    values = {v["name"]: (v["dtype"], np.array(v["value"], dtype=np.float64)) for v in doc["variables"]}
    with np.load(keras_dir / "expected.npz") as expected:  # Keras' own saving walk: path -> variable
        assert set(values) == set(expected.files)
        for path in expected.files:
            np.testing.assert_array_equal(values[path][1], expected[path], err_msg=path)
        model_values = [expected[p] for p in expected.files if not p.startswith("optimizer/")]
    with np.load(keras_dir / "get_weights.npz") as weights:  # ... which are model.get_weights()
        got = sorted(w.tobytes() for w in (weights[k] for k in weights.files))
    assert got == sorted(np.asarray(v, dtype=w.dtype).tobytes() for v, w in zip(model_values, model_values))
    assert values["layers/sequential/layers/dense_1/vars/0"][0] == "bfloat16"
    assert run_cli("verify", keras_dir / name).exit_code == 0


def test_keras_to_safetensors_to_tf(fixtures_dir, tmp_path, tf):
    keras_dir = fixtures_dir / "keras3"
    result = run_cli("convert", "--json", "--drop-optimizer", keras_dir / "m.keras", tmp_path / "k.safetensors")
    assert result.exit_code == 0, result.stderr
    assert all(name.startswith("optimizer/") for name in result.json()["dropped"])
    assert run_cli("convert", tmp_path / "k.safetensors", tmp_path / "tf" / "model.ckpt-1").exit_code == 0
    reader = tf.train.load_checkpoint(str(tmp_path / "tf" / "model.ckpt-1"))
    with np.load(keras_dir / "expected.npz") as expected:
        names = [p for p in expected.files if not p.startswith("optimizer/")]
        assert set(reader.get_variable_to_shape_map()) == set(names)
        for path in names:
            np.testing.assert_array_equal(reader.get_tensor(path).astype(np.float32), expected[path], err_msg=path)
    assert reader.get_variable_to_dtype_map()["layers/sequential/layers/dense_1/vars/1"] == tf.bfloat16
    assert run_cli("diff", keras_dir / "m.weights.h5", tmp_path / "tf" / "model.ckpt-1", "--filter", "^layers/"
                   ).exit_code == 0


def test_keras_zip_bomb_is_refused(fixtures_dir, tmp_path):
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.weights.h5", b"\0" * 4096)
    data = bytearray(bomb.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 24: central + 28] = struct.pack("<I", 0xFFFFFFF0)  # declares ~4 GiB uncompressed
    bomb.write_bytes(bytes(data))
    for args in (["inspect", bomb], ["convert", bomb, tmp_path / "out.safetensors"]):
        result = run_cli(*args)
        assert_one_line_error(result, 3)
        assert "zip bomb" in result.stderr
    verify = run_cli("verify", "--json", bomb)  # verify reports damage: exit 1
    assert verify.exit_code == 1 and "zip bomb" in verify.json()["errors"][0]["message"]
    assert sorted(os.listdir(tmp_path)) == ["bomb.keras"]
    plain = tmp_path / "plain.keras"  # a member that inflates past what it declares: CRC/size check
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("config.json", "{}")
    assert_one_line_error(run_cli("inspect", plain), 3)


# -- hostile safetensors and .npz -----------------------------------------------

def _safetensors(header: dict, data: bytes, length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "I8", "shape": [4], "data_offsets": [8, 12]}}
HOSTILE = {
    "truncated_header": _safetensors(GOOD, b"\0" * 12)[:40],
    "header_length_huge": _safetensors(GOOD, b"\0" * 12, length=2**63),
    "offsets_outside_file": _safetensors({**GOOD, "b": {"dtype": "I8", "shape": [4], "data_offsets": [8, 1 << 40]}},
                                         b"\0" * 12),
    "offsets_overlap": _safetensors({**GOOD, "b": {"dtype": "I8", "shape": [4], "data_offsets": [4, 8]}}, b"\0" * 8),
    "offsets_gap": _safetensors({**GOOD, "b": {"dtype": "I8", "shape": [4], "data_offsets": [9, 13]}}, b"\0" * 13),
    "size_not_shape": _safetensors({**GOOD, "a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 8]}},
                                   b"\0" * 12),
    "unknown_dtype": _safetensors({**GOOD, "a": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12),
    "huge_shape": _safetensors({"a": {"dtype": "F32", "shape": [10**12, 10**12], "data_offsets": [0, 8]}},
                               b"\0" * 8),
    "not_json": struct.pack("<Q", 5) + b"{nope" + b"\0" * 8,
    "duplicate_names": struct.pack("<Q", 62) + b'{"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"a":{}}  '
                       + b"\0",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_safetensors_exit_3_nothing_written(tmp_path, case):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(HOSTILE[case])
    for args in (["inspect", "--values", bad], ["convert", bad, tmp_path / "out" / "model"]):
        assert_one_line_error(run_cli(*args), 3)
    assert not (tmp_path / "out").exists()
    doc = run_cli("verify", "--json", bad)
    assert doc.exit_code == 1 and doc.json()["errors"][0]["problem"] == "corrupt_index"


def test_safetensors_index_cannot_point_outside(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "secret.safetensors").write_bytes(_safetensors(GOOD, b"\0" * 12))
    index = tmp_path / "sub" / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {"a": "../secret.safetensors"}}))
    result = run_cli("inspect", index)
    assert_one_line_error(result, 3)
    assert "outside" in result.stderr


def test_npz_with_pickled_objects_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.savez(tmp_path / "evil.npz", w=np.zeros(3), o=np.array([Evil()], dtype=object))
    for args in (["inspect", "--values", tmp_path / "evil.npz"],
                 ["convert", tmp_path / "evil.npz", tmp_path / "out.safetensors"]):
        result = run_cli(*args)
        assert_one_line_error(result, 3)
        assert "pickle" in result.stderr
    verify = run_cli("verify", "--json", tmp_path / "evil.npz")
    assert verify.exit_code == 1 and "pickle" in verify.json()["errors"][0]["message"]
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_npz_header_lying_about_its_shape(tmp_path):
    np.savez(tmp_path / "ok.npz", w=np.zeros(4, np.float32))
    data = (tmp_path / "ok.npz").read_bytes().replace(b"'shape': (4,), }", b"'shape': (9999,),}")
    assert data != (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "lying.npz").write_bytes(data)
    result = run_cli("inspect", tmp_path / "lying.npz")
    assert_one_line_error(result, 3)


# -- fuzz -------------------------------------------------------------------------

def _mutants(data: bytes, seed: int, count: int, focus: int) -> list[bytes]:
    """Flips, truncations and insertions, most of them within the first `focus` bytes (the headers)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(min(len(buf), focus) if rng.random() < 0.8 else len(buf)) if buf else 0
            kind = rng.choice(["flip", "flip", "truncate", "insert"])
            if kind == "flip" and buf:
                buf[pos] ^= rng.randint(1, 255)
            elif kind == "truncate":
                del buf[pos:]
            else:
                buf.insert(pos, rng.randint(0, 255))
        out.append(bytes(buf))
    return out


def _safetensors_seed(tmp_path) -> bytes:
    from safetensors.numpy import save_file

    save_file({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([True, False]),
               "i": np.arange(3, dtype=np.int64)}, str(tmp_path / "seed.safetensors"), metadata={"k": "v"})
    return (tmp_path / "seed.safetensors").read_bytes()


def _npz_seed(tmp_path) -> bytes:
    np.savez(tmp_path / "seed.npz", w=np.arange(12, dtype=np.float32).reshape(3, 4), s=np.array([b"ab", b"c"]))
    return (tmp_path / "seed.npz").read_bytes()


def _exit_code(job) -> int:
    """The exit code the CLI would give for `job()`: 0, 1 for a negative verify, else its error's code."""
    from ckpttool.cli.errors import exit_code_for

    try:
        return 0 if job() is not False else 1
    except Exception as exc:  # noqa: BLE001 - mapped exactly as cli/errors.py maps it
        return exit_code_for(exc)


@pytest.mark.parametrize("kind,count", [("safetensors", 200), ("npz", 200)])
def test_fuzz_weights_readers_in_process(tmp_path, kind, count):
    """inspect (values and stats) and verify, called as the CLI calls them, on seeded mutants."""
    from ckpttool.ops.tensors.inspect import inspect_checkpoint
    from ckpttool.ops.tensors.verify import verify_checkpoint

    seed_bytes = _safetensors_seed(tmp_path) if kind == "safetensors" else _npz_seed(tmp_path)
    target = str(tmp_path / f"mutant.{kind}")
    for i, mutant in enumerate(_mutants(seed_bytes, seed=1234, count=count, focus=400)):
        with open(target, "wb") as handle:
            handle.write(mutant)
        inspect_code = _exit_code(lambda: inspect_checkpoint(target, with_values=True, with_stats=True) and None)
        verify_code = _exit_code(lambda: verify_checkpoint(target).ok)
        assert inspect_code in (0, 3) and verify_code in (0, 1, 3), (i, inspect_code, verify_code)


FUZZ_PROBE = """
import sys
from ckpttool.cli.errors import exit_code_for
from ckpttool.ops.tensors.inspect import inspect_checkpoint
from ckpttool.ops.tensors.verify import verify_checkpoint
codes = set()
for path in sys.argv[1:]:
    for job in (lambda: inspect_checkpoint(path, with_values=True, with_stats=True) and 0,
                lambda: 0 if verify_checkpoint(path).ok else 1):
        try:
            codes.add(job())
        except Exception as exc:
            codes.add(exit_code_for(exc))
            if exit_code_for(exc) not in (1, 3):
                raise
print("CODES", sorted(codes))
"""


@pytest.mark.parametrize("name,count", [("m.weights.h5", 100), ("m.keras", 60)])
def test_fuzz_keras_readers_in_a_subprocess(fixtures_dir, tmp_path, name, count):
    """HDF5 is C code: mutants run in a child process, so a crash shows as a failure, not a dead suite."""
    paths = []
    for i, mutant in enumerate(_mutants((fixtures_dir / "keras3" / name).read_bytes(), seed=99, count=count,
                                        focus=4096)):
        paths.append(tmp_path / f"{i:03d}-{name}")
        paths[-1].write_bytes(mutant)
    proc = subprocess.run([sys.executable, "-c", FUZZ_PROBE, *map(str, paths)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = eval(proc.stdout.split("CODES", 1)[1])  # noqa: S307 - our own probe's printed list
    assert set(codes) <= {0, 1, 3}, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr[-3000:]


# -- interrupted converts ------------------------------------------------------------

BLOCKING_PROBE = """
import sys
import ckpttool.formats.raw as raw

state = {"held": False}


def held_after_first_chunk(original):
    def read(reader, var, chunk_bytes=None):
        for chunk in original(reader, var, chunk_bytes):
            yield chunk
            if not state["held"]:
                state["held"] = True
                print("READY", flush=True)  # the first bytes are in the temp file
                sys.stdin.read()  # hold until the test's signal arrives
    return read


# convert reads a bundle's plain tensors into a reused buffer (iter_stored_views), others as bytes
raw.iter_stored_bytes = held_after_first_chunk(raw.iter_stored_bytes)
raw.iter_stored_views = held_after_first_chunk(raw.iter_stored_views)
from ckpttool.cli.app import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("dst", ["model.safetensors", "model.npz", "model.ckpt-1", "sharded.safetensors.index.json"])
def test_interrupted_convert_leaves_no_destination(fixtures_dir, tmp_path, sig, dst, sigint_reaches_children):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", BLOCKING_PROBE, "convert", "--shard-size", "100B",
                             str(fixtures_dir / "saver_run"), str(out / dst)] if dst.startswith("sharded") else
                            [sys.executable, "-c", BLOCKING_PROBE, "convert", str(fixtures_dir / "saver_run"),
                             str(out / dst)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "READY"  # a readiness condition, not a sleep
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "error: interrupted" in err and "Traceback" not in err, err
        assert os.listdir(out) == []  # temp files removed too
    else:
        assert proc.returncode == -signal.SIGKILL
        assert all(".tmp" in name for name in os.listdir(out)), os.listdir(out)  # only unnamed leftovers
