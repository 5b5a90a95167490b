#!/usr/bin/env python3
"""Benchmark rename-vars on a checkpoint of about --size-gib GiB.

    python bench/bench_rename.py [--size-gib 1.0] [--repeats 3]

Side by side, whole process, median of --repeats runs into a fresh directory:
  ckpttool rename-vars --add-prefix renamed/ SRC DST
  cp SRC.* DSTDIR/                                 (target: ours at most 1.2x)
  the TensorFlow way: load every variable, create renamed variables,
  tf.compat.v1.train.Saver.save                    (target: ours at least 5x faster, far less memory)
  ckpttool rename-vars --link ...                  (target: under 0.5 s whatever the size)
The checkpoint is built (and cached) by bench_read.py's builder.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import CKPTTOOL, Measure, PYTHON, report, run_measured, size_parser  # noqa: E402

TF_RENAME = """
import sys, tensorflow as tf
src, dst = sys.argv[1], sys.argv[2]
reader = tf.train.load_checkpoint(src)
variables = {"renamed/" + name: tf.Variable(reader.get_tensor(name))
             for name in reader.get_variable_to_shape_map()}
tf.compat.v1.train.Saver(var_list=variables).save(None, dst)
"""


def fresh_runs(commands: dict[str, callable], repeats: int, out_root: str) -> dict[str, Measure]:
    """Each command `repeats` times into a fresh directory, interleaved so all see the same disk state."""
    results: dict[str, list[Measure]] = {name: [] for name in commands}
    for i in range(repeats):
        for name, make_cmd in commands.items():
            out = os.path.join(out_root, f"{name}{i}")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            results[name].append(run_measured(make_cmd(out), repeats=1, warmup=False))
            shutil.rmtree(out)
            subprocess.run(["sync"], check=True)  # leave no write-back for the next command to pay
    medians = {}
    for name, runs in results.items():
        runs.sort(key=lambda m: m.seconds)
        medians[name] = Measure(runs[len(runs) // 2].seconds, max(m.peak_mb for m in runs))
    return medians


def main() -> None:
    parser = size_parser(__doc__, repeats=5)
    args = parser.parse_args()
    subprocess.run([sys.executable, os.path.join(HERE, "bench_read.py"), "--build-only", "--size-gib",
                    str(args.size_gib), "--out", args.out], check=True)
    src = os.path.join(args.out, f"big_{args.size_gib:g}", "big")
    work = os.path.join(args.out, "rename_work")
    files = sorted(glob.glob(src + ".*"))
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    m = fresh_runs({
        "ours": lambda d: CKPTTOOL + ["rename-vars", "--add-prefix", "renamed/", src, os.path.join(d, "big")],
        "cp": lambda d: ["cp", *files, d],
        "tf": lambda d: PYTHON + [TF_RENAME, src, os.path.join(d, "big")],
        "link": lambda d: CKPTTOOL + ["rename-vars", "--link", "--add-prefix", "renamed/", src,
                                      os.path.join(d, "big")],
    }, args.repeats, work)
    ours, cp, tf_way, link = m["ours"], m["cp"], m["tf"], m["link"]
    size = sum(os.path.getsize(f) for f in files) / 2**30
    report([
        (f"rename-vars vs TensorFlow ({size:.2f} GiB)", ours, tf_way, "target: >=5x faster, far less memory"),
        (f"rename-vars vs cp ({size:.2f} GiB)", ours, cp, f"ours/cp = {ours.seconds / cp.seconds:.2f}x; target <= 1.2x"),
        (f"rename-vars --link ({size:.2f} GiB)", link, None, "target: < 0.5 s"),
    ])


if __name__ == "__main__":
    main()
