#!/usr/bin/env python3
"""Benchmark the read path against the TensorFlow way, whole process, side by side.

    python bench/bench_read.py [--size-gib 1.0] [--repeats 5] [--out bench/out] [--start-up-only]

Builds (once, cached under --out) a Saver run directory, a 3000-variable
checkpoint and a checkpoint of about --size-gib GiB, then prints wall time,
peak memory and ratios for:
  latest DIR               vs python -c "import tensorflow as tf; print(tf.train.latest_checkpoint(DIR))",
                           and vs `python -c pass` (the interpreter's own start-up)
  inspect --json (3000)    vs tf.train.list_variables
  verify (1 GiB)           vs reading every tensor with tf.train.load_checkpoint, and vs cat of the data
  inspect --stats (1 GiB)  vs the same TensorFlow read plus numpy statistics
The start-up rows run each pair in turn (ours, theirs, ours ...) and give the median of the pairs'
ratios. Issue targets: latest >= 40x faster than TensorFlow and within 4x of `python -c pass`,
>= 8x less memory; inspect --json >= 20x faster; verify within 2x the time of `cat FILES > /dev/null` and --stats >= 2 GB/s from page cache
(issue 29; whole process, start-up included), both under 300 MB peak.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CKPTTOOL, PYTHON, report, run_measured, run_paired, size_parser  # noqa: E402


def build(out: str, size_gib: float) -> dict[str, str]:
    paths = {"run": os.path.join(out, "run"), "many": os.path.join(out, "many", "many"),
             "big": os.path.join(out, f"big_{size_gib:g}", "big")}
    if all(os.path.exists(p) or os.path.exists(p + ".index") for p in paths.values()):
        return paths
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    if not os.path.exists(paths["run"]):
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
        import make_example

        make_example.main(paths["run"])
    if not os.path.exists(paths["many"] + ".index"):
        names = [f"block_{i // 10:03d}/layer_{i % 10}/kernel" for i in range(3000)]
        tensors = [tf.constant(np.full((32, 32), i, np.float32)) for i in range(3000)]
        tf.raw_ops.SaveV2(prefix=paths["many"], tensor_names=names, shape_and_slices=[""] * 3000, tensors=tensors)
    if not os.path.exists(paths["big"] + ".index"):
        rng = np.random.default_rng(0)
        per_tensor = 64 << 20  # 64 MiB of float32 each
        count = max(1, int(size_gib * (1 << 30) // per_tensor))
        names = [f"big/w{i:03d}" for i in range(count)]
        tensors = [tf.constant(rng.standard_normal(per_tensor // 4, dtype=np.float32).reshape(-1, 1024))
                   for _ in names]
        tf.raw_ops.SaveV2(prefix=paths["big"], tensor_names=names, shape_and_slices=[""] * count, tensors=tensors)
    return paths


TF_LATEST = "import tensorflow as tf, sys; print(tf.train.latest_checkpoint(sys.argv[1]))"
TF_LIST = "import tensorflow as tf, sys; print(len(tf.train.list_variables(sys.argv[1])))"
TF_READ_ALL = ("import tensorflow as tf, sys\nr = tf.train.load_checkpoint(sys.argv[1])\n"
               "for n in r.get_variable_to_shape_map(): r.get_tensor(n)")
TF_STATS = ("import tensorflow as tf, sys, numpy as np\nr = tf.train.load_checkpoint(sys.argv[1])\n"
            "for n in r.get_variable_to_shape_map():\n t = r.get_tensor(n); print(n, t.min(), t.max(), t.mean(), t.std())")


def main() -> None:
    parser = size_parser(__doc__, repeats=5)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-up-only", action="store_true", help="only the latest and inspect --json rows")
    args = parser.parse_args()
    if args.build_only:
        build(args.out, args.size_gib)
        return
    # Build in a child process: a parent that loaded TensorFlow would lend its
    # peak RSS to every measured child through fork.
    subprocess.run([sys.executable, __file__, "--build-only", "--size-gib", str(args.size_gib), "--out", args.out],
                   check=True)
    paths = build(args.out, args.size_gib)
    big_bytes = sum(os.path.getsize(os.path.join(os.path.dirname(paths["big"]), f))
                    for f in os.listdir(os.path.dirname(paths["big"])))
    r = args.repeats
    rows = []
    latest = CKPTTOOL + ["latest", paths["run"]]
    vs_tf = run_paired(latest, PYTHON + [TF_LATEST, paths["run"]], r)
    rows.append(("latest DIR", vs_tf.ours, vs_tf.theirs, f"paired {vs_tf.ratio:.1f}x; target >=40x time, >=8x memory"))
    vs_python = run_paired(latest, PYTHON + ["pass"], max(r, 10))
    rows.append(("  python -c pass", vs_python.theirs, None,
                 f"latest takes {1 / vs_python.ratio:.2f}x its time (paired); target <=4x"))
    listing = run_paired(CKPTTOOL + ["inspect", "--json", paths["many"]], PYTHON + [TF_LIST, paths["many"]], r)
    rows.append(("inspect --json (3000 variables)", listing.ours, listing.theirs,
                 f"paired {listing.ratio:.1f}x; target >=20x time"))
    if args.start_up_only:
        report(rows)
        return
    verify = run_measured(CKPTTOOL + ["verify", paths["big"]], r)
    rows.append((f"verify ({big_bytes / 2**30:.2f} GiB)", verify,
                 run_measured(PYTHON + [TF_READ_ALL, paths["big"]], max(1, r // 2)),
                 f"{big_bytes / verify.seconds / 1e9:.2f} GB/s; target <300 MB, <=2x cat's time"))
    cat = run_measured(["cat", *sorted(glob.glob(glob.escape(paths["big"]) + ".data-*"))], r)
    rows.append(("  cat of the same data files", cat, None,
                 f"{big_bytes / cat.seconds / 1e9:.2f} GB/s; verify takes {verify.seconds / cat.seconds:.1f}x cat's time"))
    stats = run_measured(CKPTTOOL + ["inspect", "--stats", paths["big"]], max(1, r // 2))
    rows.append((f"inspect --stats ({big_bytes / 2**30:.2f} GiB)", stats,
                 run_measured(PYTHON + [TF_STATS, paths["big"]], max(1, r // 2)),
                 f"{big_bytes / stats.seconds / 1e9:.2f} GB/s; target <300 MB, >=2 GB/s"))
    report(rows)


if __name__ == "__main__":
    main()
