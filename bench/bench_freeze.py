#!/usr/bin/env python3
"""Benchmark `freeze` against TensorFlow's freeze_graph.py on the same inputs.

    python bench/bench_freeze.py [--repeats 3]

Builds (once, cached) a TF1 Saver checkpoint of a graph with a few hundred
nodes and about 50 MB of variables, then times, whole process:
  ckpttool freeze PREFIX -o OUT.pb --output-nodes output
  python -m tensorflow.python.tools.freeze_graph --input_meta_graph PREFIX.meta
      --input_checkpoint PREFIX --output_graph OUT.pb --output_node_names output --input_binary
Issue target: within 1.2x the time and at most 1.5x the memory of freeze_graph.py.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import CKPTTOOL, ENV, report, run_measured  # noqa: E402

BUILD = """
import os, sys
import numpy as np, tensorflow as tf
v1 = tf.compat.v1
out = sys.argv[1]
with tf.Graph().as_default(), v1.Session() as sess:
    step = v1.train.get_or_create_global_step()
    x = v1.placeholder(tf.float32, [None, 1024], name="x")
    h = x
    for i in range(12):  # 12 x (1024 x 1024) float32 = 48 MiB of weights
        with v1.variable_scope(f"layer{i}"):
            w = v1.get_variable("w", [1024, 1024], initializer=v1.random_normal_initializer(stddev=0.03))
            b = v1.get_variable("b", [1024], initializer=v1.zeros_initializer())
            h = tf.nn.relu(tf.matmul(h, w) + b)
            for j in range(8):  # extra nodes: a few hundred in all
                h = tf.identity(h * 1.0 + 0.0, name=f"post{j}")
    tf.identity(h, name="output")
    sess.run(v1.global_variables_initializer())
    v1.train.Saver().save(sess, os.path.join(out, "model.ckpt"), global_step=step)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(HERE, "out"))
    args = parser.parse_args()
    run_dir = os.path.join(args.out, "freeze_run")
    prefix = os.path.join(run_dir, "model.ckpt-0")
    if not os.path.exists(prefix + ".index"):
        os.makedirs(run_dir, exist_ok=True)
        subprocess.run([sys.executable, "-c", BUILD, run_dir], check=True, env=ENV)
    ours_out = os.path.join(args.out, "frozen_ours.pb")
    theirs_out = os.path.join(args.out, "frozen_tf.pb")
    ours = run_measured(CKPTTOOL + ["freeze", prefix, "-o", ours_out, "--output-nodes", "output", "--overwrite"],
                        args.repeats)
    theirs = run_measured([sys.executable, "-m", "tensorflow.python.tools.freeze_graph",
                           f"--input_meta_graph={prefix}.meta", f"--input_checkpoint={prefix}",
                           f"--output_graph={theirs_out}", "--output_node_names=output", "--input_binary=true"],
                          args.repeats)
    same = _structure(ours_out) == _structure(theirs_out)
    report([("freeze (~50 MB of variables)", ours, theirs,
             f"ours/tf time {ours.seconds / theirs.seconds:.2f}x (target <= 1.2x), memory "
             f"{ours.peak_mb / theirs.peak_mb:.2f}x (target <= 1.5x); same nodes, ops and inputs: {same}")])


def _structure(path: str):
    """(name, op, inputs) of every node, read with our own protos (no TensorFlow here).
    freeze_graph.py also keeps the .meta's _output_shapes attributes; we do not."""
    from ckpttool.formats.tf.protos import graph_pb2

    graph = graph_pb2.GraphDef.FromString(open(path, "rb").read())
    return sorted((n.name, n.op, tuple(n.input)) for n in graph.node)


if __name__ == "__main__":
    main()
