"""Helpers for the freeze/export-json tests: running a frozen GraphDef in a
fresh TensorFlow process (nothing shared with the process that froze it)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

FRESH_PROCESS = textwrap.dedent("""
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    path, output, feeds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(open(path, "rb").read())
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as sess:
            result = sess.run(output, {k: np.array(v, np.float32) for k, v in feeds.items()})
    print(json.dumps(np.asarray(result).tolist()))
""")


def load_graph_def(tf, path):
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(open(path, "rb").read())
    return graph_def


def run_frozen_in_fresh_process(path, output, feeds):
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(path), output,
                           json.dumps({k: v.tolist() for k, v in feeds.items()})], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.array(json.loads(proc.stdout.strip().splitlines()[-1]), np.float32)


def run_frozen(tf, path, output, feeds):
    """The frozen graph at `path` run in a fresh tf.Graph of this process (cheaper than a new process)."""
    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(load_graph_def(tf, path), name="")
        with v1.Session(graph=graph) as sess:
            return sess.run(output, feeds)
