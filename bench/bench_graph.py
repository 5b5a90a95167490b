#!/usr/bin/env python3
"""Benchmark reading a frozen graph (GraphDef constants) against the TensorFlow way, whole process.

    python bench/bench_graph.py [--size-mib 100] [--repeats 5] [--out bench/out]

Builds (once, cached under --out) a frozen GraphDef of about --size-mib MiB: a chain of MatMul /
BiasAdd / Relu layers whose kernels and biases are Const nodes (tensor_content), as
convert_variables_to_constants leaves them. Then prints wall time, peak memory and ratios for:
  inspect --json frozen.pb        vs parsing the GraphDef and listing the Const nodes' dtype and shape
  inspect --meta --json frozen.pb vs parsing it and counting op types (protobuf in both)
  verify frozen.pb                vs tf.make_ndarray of every Const node
  convert frozen.pb x.safetensors vs make_ndarray of every Const node and safetensors.numpy.save_file
Issue target: inspect of a 100 MB frozen graph in under 1 s with bounded memory (the listing reads
each node's name, op and tensor header over ranged reads; constants are decoded only for values).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CKPTTOOL, PYTHON, report, run_measured  # noqa: E402


def build(out: str, size_mib: int) -> str:
    path = os.path.join(out, f"frozen_{size_mib}mib.pb")
    if os.path.exists(path):
        return path
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    width = 256  # each kernel is 256 KiB of float32
    layers = max(1, size_mib * 4)
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None, width], name="input")
        for i in range(layers):
            with tf.name_scope(f"layer_{i:04d}"):
                kernel = tf.constant(rng.standard_normal((width, width), dtype=np.float32), name="kernel")
                bias = tf.constant(rng.standard_normal(width, dtype=np.float32), name="bias")
                x = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, kernel), bias))
        tf.identity(x, name="output")
    data = graph.as_graph_def().SerializeToString()
    with open(path + ".tmp", "wb") as handle:
        handle.write(data)
    os.replace(path + ".tmp", path)
    return path


TF_LIST = ("import sys, tensorflow as tf\ng = tf.compat.v1.GraphDef.FromString(open(sys.argv[1], 'rb').read())\n"
           "print(len([(n.name, n.attr['value'].tensor.dtype, n.attr['value'].tensor.tensor_shape) "
           "for n in g.node if n.op == 'Const']))")
TF_OPS = ("import sys, collections, tensorflow as tf\n"
          "g = tf.compat.v1.GraphDef.FromString(open(sys.argv[1], 'rb').read())\n"
          "print(collections.Counter(n.op for n in g.node))")
TF_READ_ALL = ("import sys, tensorflow as tf\ng = tf.compat.v1.GraphDef.FromString(open(sys.argv[1], 'rb').read())\n"
               "print(sum(tf.make_ndarray(n.attr['value'].tensor).size for n in g.node if n.op == 'Const'))")
TF_CONVERT = ("import sys, tensorflow as tf\nfrom safetensors.numpy import save_file\n"
              "g = tf.compat.v1.GraphDef.FromString(open(sys.argv[1], 'rb').read())\n"
              "save_file({n.name: tf.make_ndarray(n.attr['value'].tensor) for n in g.node if n.op == 'Const' "
              "and tf.make_ndarray(n.attr['value'].tensor).size >= 2}, sys.argv[2])")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build(args.out, args.size_mib)
        return
    # Built in a child: a parent that loaded TensorFlow would lend its peak RSS to every measured child.
    subprocess.run([sys.executable, __file__, "--build-only", "--size-mib", str(args.size_mib), "--out", args.out],
                   check=True)
    path = build(args.out, args.size_mib)
    size = os.path.getsize(path)
    r = args.repeats
    label = f"{size / 2**20:.0f} MiB frozen graph"
    with tempfile.TemporaryDirectory(prefix="bench-graph-") as tmp:
        ours_out, theirs_out = os.path.join(tmp, "ours.safetensors"), os.path.join(tmp, "theirs.safetensors")
        rows = [
            (f"inspect --json ({label})", run_measured(CKPTTOOL + ["inspect", "--json", path], r),
             run_measured(PYTHON + [TF_LIST, path], r), "target < 1 s, bounded memory"),
            (f"inspect --meta --json ({label})", run_measured(CKPTTOOL + ["inspect", "--meta", "--json", path], r),
             run_measured(PYTHON + [TF_OPS, path], r), "both parse the whole GraphDef"),
            (f"verify ({label})", run_measured(CKPTTOOL + ["verify", path], r),
             run_measured(PYTHON + [TF_READ_ALL, path], r), "every Const decoded"),
            (f"convert to safetensors ({label})",
             run_measured(CKPTTOOL + ["convert", "--overwrite", path, ours_out], r),
             run_measured(PYTHON + [TF_CONVERT, path, theirs_out], r), "streamed tensor by tensor"),
        ]
    report(rows)


if __name__ == "__main__":
    main()
