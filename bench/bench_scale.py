#!/usr/bin/env python3
"""Benchmark directory commands at scale: cost must grow linearly.

    python bench/bench_scale.py [--count 100000] [--repeats 3] [--out bench/out]

Builds (once, cached under --out) two directories of --count checkpoints,
each a copy of one small TensorFlow-written checkpoint (index + data):
  state/  with the state file TensorFlow writes for them (CheckpointManager
          with max_to_keep=None: every path and its timestamp, written by
          TensorFlow's own update_checkpoint_state_internal);
  files/  the same files and no state file (`ls` must look at every index).
Then times `ls --json`, `latest` and `prune --dry-run --keep-last 5` on each.
Issue 8 item 9 target: under 3 s each for 100,000 checkpoints (before the
fix, `latest` took 160 s on such a state file and `ls --json` 24 s); issue 21:
`latest` under 1 s; issue 29: `ls --json` and `prune --dry-run` under 2 s,
`latest` without a state file under 0.5 s.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CKPTTOOL, ENV, PYTHON, report, run_measured  # noqa: E402

BUILD = """
import os, sys, time
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management

root, count = sys.argv[1], int(sys.argv[2])
source = os.path.join(root, "source")
one = tf.train.Checkpoint(v=tf.Variable([1.0] * 10)).write(os.path.join(source, "one"))
names = [f"ckpt-{step}" for step in range(1, count + 1)]
files = {}
for suffix in (".index", ".data-00000-of-00001"):
    with open(one + suffix, "rb") as handle:
        files[suffix] = handle.read()
for directory in ("state", "files"):
    target = os.path.join(root, directory)
    os.makedirs(target)
    for name in names:
        for suffix, data in files.items():
            with open(os.path.join(target, name + suffix), "wb") as handle:
                handle.write(data)
now = time.time()
state_dir = os.path.abspath(os.path.join(root, "state"))
paths = [os.path.join(state_dir, name) for name in names]
checkpoint_management.update_checkpoint_state_internal(
    state_dir, paths[-1], all_model_checkpoint_paths=paths,
    all_model_checkpoint_timestamps=[now - count + i for i in range(count)],
    last_preserved_timestamp=now - count - 1, save_relative_paths=True)
"""


def build(out: str, count: int) -> str:
    root = os.path.join(out, f"scale_{count}")
    if not os.path.exists(os.path.join(root, "state", "checkpoint")):
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(PYTHON + [BUILD, root, str(count)], check=True, env=ENV)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = parser.parse_args()
    root = build(args.out, args.count)
    rows = []
    for directory in ("state", "files"):
        path = os.path.join(root, directory)
        for label, command in (("ls --json", ["ls", "--json", path]), ("latest", ["latest", path]),
                               ("prune --dry-run", ["prune", "--dry-run", "--keep-last", "5", path])):
            rows.append((f"{label} ({directory}/, {args.count} ckpts)",
                         run_measured(CKPTTOOL + command, args.repeats), None,
                         "target < 0.5 s" if label == "latest" else "target < 2 s"))
    report(rows)


if __name__ == "__main__":
    main()
