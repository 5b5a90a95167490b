#!/usr/bin/env python3
"""Benchmark reading a metric from TensorBoard event files, ours vs TensorFlow's summary_iterator.

    python bench/bench_events.py [--steps 100000] [--image-mb 200] [--repeats 3]

Writes one run with TensorFlow (`tf.summary`): `loss` and `val_loss` scalars at every step,
a histogram every 100 steps and images (about --image-mb MiB in all) in a second file, as a
training job's log directory holds them. Then times, as whole processes:
- ours: `ckpttool.ops.retention.metrics.read_metric(DIR, "val_loss")` (TF-free reader, every file read);
- TensorFlow: `tf.compat.v1.train.summary_iterator` over the same files, keeping `val_loss`'s
  scalars (make_ndarray of each tensor value), the usual way scripts read them.
Issue target: at least 10x faster. Peak memory is printed for both.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ENV, PYTHON, report, run_measured  # noqa: E402

WRITE = """
import sys, numpy as np, tensorflow as tf
out, steps, image_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
writer = tf.summary.create_file_writer(out)
with writer.as_default():
    for step in range(steps):
        tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
        tf.summary.scalar("val_loss", 2.0 / (step + 1), step=step)
        if step % 100 == 0:
            tf.summary.histogram("weights", rng.standard_normal(1000), step=step)
writer.close()
images = tf.summary.create_file_writer(out, filename_suffix=".images")
with images.as_default():
    for step in range(image_mb):
        tf.summary.image("picture", rng.random((1, 512, 512, 4)), step=step)
images.close()
"""

OURS = "import sys; from ckpttool.ops.retention.metrics import read_metric; print(len(read_metric(sys.argv[1], 'val_loss').values))"
THEIRS = """
import glob, os, sys, tensorflow as tf
values = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
            if value.tag == "val_loss":
                values[event.step] = float(tf.make_ndarray(value.tensor))
print(len(values))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--image-mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench_events_")
    try:
        subprocess.run(PYTHON + [WRITE, root, str(args.steps), str(args.image_mb)], check=True, env=ENV)
        size = sum(os.path.getsize(os.path.join(root, n)) for n in os.listdir(root))
        print(f"event files: {len(os.listdir(root))}, {size / 2**20:.0f} MiB, {args.steps} steps")
        ours = run_measured(PYTHON + [OURS, root], repeats=args.repeats)
        theirs = run_measured(PYTHON + [THEIRS, root], repeats=args.repeats)
        report([(f"val_loss of {args.steps} steps", ours, theirs, "target >= 10x")])
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
