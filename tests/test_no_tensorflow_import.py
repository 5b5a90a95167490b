"""The fast paths never import TensorFlow: each command runs in a fresh
subprocess that reports whether tensorflow ended up in sys.modules."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from ckpttool.cli.entry import main  # as users run it: the quick path (cli/quick.py) or Typer
try:
    main()
except SystemExit:
    pass
print("TENSORFLOW_LOADED" if any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules) else "NO_TENSORFLOW", file=sys.stderr)
"""


def _commands(fixtures, tmp):
    run, tf2, sm = fixtures / "saver_run", fixtures / "tf2_manager", fixtures / "tf2_saved_model" / "model"
    return {
        "prune": ["prune", "--dry-run", "--keep-last", "1", "--recursive", str(fixtures)],
        "repair": ["repair", "--dry-run", str(run)],
        "prune-policy": ["prune", "--policy", _policy(fixtures, tmp), "--dry-run"],
        "policy-check": ["policy", "check", _policy(fixtures, tmp)],
        "rename-vars": ["rename-vars", "--regex", "^model/dense1/=model/enc/", str(tf2), str(tmp / "renamed")],
        "diff": ["diff", str(run / "model.ckpt-30"), str(run / "model.ckpt-50")],
        "help": ["--help"],
        "ls": ["ls", "--recursive", str(fixtures)],
        "ls-summary": ["ls", "--recursive", "--summary", "--keep-last", "1", str(fixtures)],
        "prune-fleet": ["prune", "--recursive", "--dry-run", "--budget", "1MB", "--drop-failed-runs", "7d", str(fixtures)],
        "latest": ["latest", str(run)],
        "inspect": ["inspect", "--stats", "--values", "--slices", "--meta", "--all", str(run)],
        "inspect-tree": ["inspect", "--tree", "--json", str(tf2)],
        "inspect-savedmodel": ["inspect", "--meta", str(sm)],
        "verify": ["verify", str(fixtures / "every_dtype" / "dtypes")],
        "convert": ["convert", "--drop-optimizer", str(tf2), str(tmp / "w.safetensors")],
        "convert-keras": ["convert", str(fixtures / "keras3" / "m.keras"), str(tmp / "k" / "model.ckpt-1")],
        "convert-layout": ["convert", "--layout", "torch", "--dtype", "bfloat16", str(tf2), str(tmp / "t.safetensors")],
        "average": ["average", str(run), "--last", "2", "-o", str(tmp / "avg" / "model.ckpt-1")],
        # Graphs (issue 20): constants and summaries with our own protos; freeze's suggestion of outputs too.
        "inspect-pb": ["inspect", "--meta", "--stats", "--values", "--all", str(_frozen_graph(tmp))],
        "verify-pb": ["verify", str(_frozen_graph(tmp))],
        "convert-pb": ["convert", str(_frozen_graph(tmp)), str(tmp / "g" / "model.ckpt")],
        "diff-pb": ["diff", str(_frozen_graph(tmp)), str(_frozen_graph(tmp))],
        "inspect-graph": ["inspect", "--graph", "--meta", str(sm)],
        "freeze-suggest": ["freeze", str(fixtures / "ema_run"), "-o", str(tmp / "x.pb")],
        # Manifests (issue 27): digests of a partitioned checkpoint, a check by tensors, by hash
        "manifest": ["manifest", str(fixtures / "partitioned")],
        "verify-manifest": ["verify", "--tensors", "--manifest", str(_manifest(fixtures, tmp)), str(run)],
        "diff-by-hash": ["diff", "--by-hash", str(run / "model.ckpt-30"), str(run / "model.ckpt-50")],
        "inspect-hash": ["inspect", "--hash", str(fixtures / "every_dtype" / "dtypes")],
    }


def _policy(fixtures, tmp) -> str:
    """A retention policy over the fixtures: the saver run by steps, the rest by count."""
    path = tmp / "retention.toml"
    path.write_text(f'[[rule]]\npaths = ["{fixtures}/saver_run"]\nkeep_every_steps = 20\n\n'
                    f'[[rule]]\npaths = ["{fixtures}/*"]\nkeep_last = 1\n')
    return str(path)


def _manifest(fixtures, tmp) -> str:
    """A manifest of the saver run's latest checkpoint, written in this process."""
    from tests.conftest import run_cli

    path = tmp / "run.manifest.json"
    if not path.exists():
        assert run_cli("manifest", fixtures / "saver_run", "-o", path).exit_code == 0
    return str(path)


def _frozen_graph(tmp) -> str:
    """A GraphDef with constants, written by TensorFlow in this process (the probe's has none)."""
    path = tmp / "frozen.pb"
    if not path.exists():
        import numpy as np
        import tensorflow as tf

        with tf.Graph().as_default() as graph:
            x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
            tf.identity(tf.matmul(x, tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2))), name="y")
        path.write_bytes(graph.as_graph_def().SerializeToString())
    return str(path)


@pytest.mark.parametrize("name", ["help", "ls", "latest", "inspect", "inspect-tree", "inspect-savedmodel", "verify",
                                  "prune", "prune-policy", "policy-check", "repair", "rename-vars", "diff", "convert", "convert-keras",
                                  "convert-layout", "average", "inspect-pb",
                                  "verify-pb", "convert-pb", "diff-pb", "inspect-graph", "freeze-suggest",
                                  "manifest", "verify-manifest", "diff-by-hash", "inspect-hash"])
def test_command_does_not_import_tensorflow(fixtures_dir, tmp_path, name):
    args = _commands(fixtures_dir, tmp_path)[name]
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True)
    assert "NO_TENSORFLOW" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [
    ["prune", "--dry-run", "--keep-best", "2", "--metric", "loss", "--events", "{events}", "{run}"],
    ["ls", "--metric", "loss", "--events", "{events}", "--sort", "metric", "--filter", "metric<1", "{run}"],
    ["latest", "--best", "--metric", "loss", "--events", "{events}", "{run}"],
])
def test_metric_paths_do_not_import_tensorflow(fixtures_dir, series_dir, args):
    """Scores read from TensorBoard event files (written by tf.summary) without TensorFlow."""
    paths = {"events": str(series_dir / "tf2"), "run": str(fixtures_dir / "saver_run")}
    proc = subprocess.run([sys.executable, "-c", PROBE, *(a.format(**paths) for a in args)],
                          capture_output=True, text=True)
    assert "NO_TENSORFLOW" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, proc.stderr[-2000:]


FRAMEWORK_PROBE = PROBE.replace(
    'print("TENSORFLOW_LOADED" if any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules) '
    'else "NO_TENSORFLOW", file=sys.stderr)',
    'loaded = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "torch"})\n'
    'print("FRAMEWORKS_LOADED", loaded if loaded else "NONE", file=sys.stderr)')


@pytest.mark.parametrize("args", [
    ["inspect", "--stats", "--values", "{pt}"],
    ["inspect", "--json", "{legacy}"],
    ["verify", "{index}"],
    ["diff", "{pt}", "{legacy}"],
    ["convert", "--layout", "tf", "{net}", "{tmp}/run/model.ckpt-0"],
    ["convert", "{pt}", "{tmp}/w.safetensors"],
    ["average", "{pt}", "{same}", "-o", "{tmp}/avg.safetensors"],
])
def test_pytorch_paths_import_neither_torch_nor_tensorflow(torch_dir, tmp_path, args):
    """PyTorch files are read without torch (issue 28): ckpttool never imports it, nor TensorFlow."""
    paths = {"pt": torch_dir / "every_kind.pt", "legacy": torch_dir / "every_kind_legacy.pt",
             "index": torch_dir / "sharded" / "pytorch_model.bin.index.json", "net": torch_dir / "net.bin",
             "same": torch_dir / "no_extension", "tmp": tmp_path}
    assert "FRAMEWORKS_LOADED" in FRAMEWORK_PROBE
    proc = subprocess.run([sys.executable, "-c", FRAMEWORK_PROBE, *(a.format(**paths) for a in args)],
                          capture_output=True, text=True)
    assert "FRAMEWORKS_LOADED NONE" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, proc.stderr[-2000:]
