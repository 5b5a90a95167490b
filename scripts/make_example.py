#!/usr/bin/env python3
"""Write the sample run directory shipped in examples/run with TensorFlow.

A small TF1 training loop saved by tf.compat.v1.train.Saver with global_step
and max_to_keep=3: three checkpoints with their .meta graphs and a state file
with relative paths (save_relative_paths=True), so the directory works
wherever the repository is cloned.

    python scripts/make_example.py [OUT]   # default: examples/run
"""
from __future__ import annotations

import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(out: str) -> None:
    import numpy as np
    import tensorflow as tf

    v1 = tf.compat.v1
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        step = v1.train.get_or_create_global_step()
        x = v1.placeholder(tf.float32, [None, 8], name="x")
        y = v1.placeholder(tf.float32, [None, 1], name="y")
        with v1.variable_scope("encoder"):
            w1 = v1.get_variable("kernel", initializer=rng.standard_normal((8, 16)).astype(np.float32) * 0.3)
            b1 = v1.get_variable("bias", initializer=np.zeros(16, np.float32))
        with v1.variable_scope("head"):
            w2 = v1.get_variable("kernel", initializer=rng.standard_normal((16, 1)).astype(np.float32) * 0.3)
            b2 = v1.get_variable("bias", initializer=np.zeros(1, np.float32))
        prediction = tf.add(tf.matmul(tf.nn.relu(tf.matmul(x, w1) + b1), w2), b2, name="prediction")
        loss = tf.reduce_mean(tf.square(prediction - y))
        train = v1.train.AdamOptimizer(0.01).minimize(loss, global_step=step)
        saver = v1.train.Saver(max_to_keep=3, save_relative_paths=True)
        sess.run(v1.global_variables_initializer())
        features = rng.standard_normal((64, 8)).astype(np.float32)
        targets = features.sum(axis=1, keepdims=True)
        for i in range(1, 501):
            sess.run(train, {x: features, y: targets})
            if i % 100 == 0:
                saver.save(sess, os.path.join(out, "model.ckpt"), global_step=step)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "examples", "run"))
