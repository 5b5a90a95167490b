#!/usr/bin/env python3
"""Benchmark `prune` on a directory of 1000 checkpoints.

    python bench/bench_prune.py [--count 1000] [--repeats 5]

Copies one small TensorFlow-written checkpoint 1000 times (CheckpointManager
style state file with timestamps), then times `ckpttool prune --yes
--keep-last 10` on a fresh copy each run, minus the process start of
`ckpttool --version`. Issue target: under 1 s beyond process start. For
comparison it also times TensorFlow's own way of deleting old checkpoints:
tf.train.CheckpointManager(max_to_keep=10) sweeping the same directory.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CKPTTOOL, ENV, PYTHON, Measure, report, run_measured  # noqa: E402

TF_SWEEP = """
import sys, tensorflow as tf
tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(0.0)), sys.argv[1], max_to_keep=10)._sweep()
"""


def make_template(root: str, count: int) -> str:
    template = os.path.join(root, "template")
    source = os.path.join(root, "source")
    os.makedirs(source)
    subprocess.run(PYTHON + ["import sys, tensorflow as tf; tf.train.Checkpoint(v=tf.Variable([1.0] * 100))"
                             ".write(sys.argv[1] + '/one')", source], check=True, env=ENV)
    os.makedirs(template)
    for step in range(1, count + 1):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(os.path.join(source, "one" + suffix), os.path.join(template, f"ckpt-{step}{suffix}"))
    now = time.time()
    lines = [f'model_checkpoint_path: "ckpt-{count}"']
    lines += [f'all_model_checkpoint_paths: "ckpt-{i}"' for i in range(1, count + 1)]
    lines += [f"all_model_checkpoint_timestamps: {now - count + i}" for i in range(1, count + 1)]
    lines.append(f"last_preserved_timestamp: {now - count - 1}")
    with open(os.path.join(template, "checkpoint"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return template


def timed_on_copies(template: str, cmd_for, repeats: int) -> Measure:
    results = []
    for _ in range(repeats):
        work = template + ".work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(template, work)
        results.append(run_measured(cmd_for(work), repeats=1))
    results.sort(key=lambda m: m.seconds)
    return Measure(results[len(results) // 2].seconds, max(m.peak_mb for m in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        template = make_template(root, args.count)
        start = run_measured(CKPTTOOL + ["--version"], args.repeats)
        ours = timed_on_copies(template, lambda d: CKPTTOOL + ["prune", "--yes", "--keep-last", "10", d], args.repeats)
        theirs = timed_on_copies(template, lambda d: PYTHON + [TF_SWEEP, d], args.repeats)
        report([(f"prune {args.count} checkpoints, keep 10", ours, theirs,
                 f"{ours.seconds - start.seconds:.3f} s beyond process start ({start.seconds:.3f} s); target < 1 s")])


if __name__ == "__main__":
    main()
