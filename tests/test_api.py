"""The Python API, used directly (not through the CLI), with TensorFlow as the oracle."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

import ckpttool
from ckpttool.errors import CkptError, Refused, UnknownVariable
from tests.conftest import ROOT


def test_open_lists_lazily_and_reads_like_tensorflow(fixtures_dir, tf):
    prefix = fixtures_dir / "partitioned" / "model.ckpt-5"
    reader = tf.train.load_checkpoint(str(prefix))
    with ckpttool.open(fixtures_dir / "partitioned") as ckpt:  # a run directory: its latest checkpoint
        assert ckpt.path == str(prefix) and ckpt.format == "v2"
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
        assert {v.name: list(v.shape) for v in ckpt.variables} == shapes
        assert {v.name: v.dtype for v in ckpt.variables} == {n: d.name for n, d in dtypes.items()}
        assert len(ckpt) == len(shapes) and "scope/part" in ckpt and sorted(ckpt) == sorted(shapes)
        assert next(v for v in ckpt.variables if v.name == "scope/part").partitioned
        for name in ckpt:
            np.testing.assert_array_equal(ckpt[name], reader.get_tensor(name))
        with pytest.raises(UnknownVariable):
            ckpt.read("nope")


def test_raw_reads_give_stored_bits(fixtures_dir, tf):
    reader = tf.train.load_checkpoint(str(fixtures_dir / "every_dtype" / "dtypes"))
    with ckpttool.open(fixtures_dir / "every_dtype" / "dtypes") as ckpt:
        decoded = ckpt.read("bfloat16")
        assert decoded.dtype == np.float32
        np.testing.assert_array_equal(decoded, reader.get_tensor("bfloat16").astype(np.float32))
        raw = ckpt.read("bfloat16", raw=True)
        assert raw.dtype == np.uint16 and raw.tobytes() == reader.get_tensor("bfloat16").tobytes()
        assert ckpt.read("int4", raw=True).tobytes() == reader.get_tensor("int4").tobytes()


def test_load_latest_and_errors(fixtures_dir, tf):
    run = fixtures_dir / "saver_run"
    assert ckpttool.latest(run) == tf.train.latest_checkpoint(str(run))
    weights = ckpttool.load(run)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run)))
    assert set(weights) == set(reader.get_variable_to_shape_map())
    for name, value in weights.items():
        np.testing.assert_array_equal(value, reader.get_tensor(name))
    assert set(ckpttool.load(run, ["embedding"])) == {"embedding"}
    with pytest.raises(CkptError):
        ckpttool.open(fixtures_dir / "no-such-thing")


def test_prune_plan_then_apply(fixtures_dir, tmp_path, tf):
    run = tmp_path / "run"
    shutil.copytree(fixtures_dir / "prune_run", run)
    plan = ckpttool.plan_prune(run, keep_last=2)
    assert len(plan.deleted) == 8 and all((run / f"{d.name}.index").exists() for d in plan.deleted)
    result = ckpttool.apply_prune(plan)
    assert {d.name for d in result.deleted} == {d.name for d in plan.deleted}
    state = tf.train.get_checkpoint_state(str(run))
    assert [p.rsplit("/", 1)[-1] for p in state.all_model_checkpoint_paths] == ["model.ckpt-900", "model.ckpt-1000"]
    assert ckpttool.latest(run) == tf.train.latest_checkpoint(str(run))
    with pytest.raises(CkptError):
        ckpttool.plan_prune(run)  # no rule


def test_convert_from_python(fixtures_dir, tmp_path, tf):
    src = fixtures_dir / "saver_run" / "model.ckpt-50"
    dry = ckpttool.convert(src, tmp_path / "w.safetensors", dry_run=True, map={"embedding": "emb"})
    assert dry.files == () and not (tmp_path / "w.safetensors").exists()
    assert ("embedding", "emb") in dry.plan.renamed
    result = ckpttool.convert(src, tmp_path / "w.safetensors", map={"embedding": "emb"}, regex=[("^dense/", "fc.")],
                              shard_size="1KB")
    assert result.files and result.bytes_written > 0
    loaded = ckpttool.load(result.files[-1])
    reader = tf.train.load_checkpoint(str(src))
    np.testing.assert_array_equal(loaded["emb"], reader.get_tensor("embedding"))
    np.testing.assert_array_equal(loaded["fc.kernel"], reader.get_tensor("dense/kernel"))
    with pytest.raises(Refused):
        ckpttool.convert(src, tmp_path / "w.safetensors")


def test_import_is_lazy_and_typed():
    probe = ("import sys, ckpttool; assert 'numpy' not in sys.modules and 'ckpttool.api' not in sys.modules; "
             "ckpttool.open; assert 'ckpttool.api' in sys.modules and 'numpy' not in sys.modules; "
             "assert set(ckpttool.__all__) <= set(dir(ckpttool)); print('ok')")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "ok", proc.stderr
    assert (ROOT / "ckpttool" / "py.typed").exists()
    with pytest.raises(AttributeError):
        ckpttool.no_such_function  # noqa: B018
