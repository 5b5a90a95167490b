#!/usr/bin/env python3
"""Benchmark `convert` (TF checkpoint -> safetensors), whole process, side by side.

    python bench/bench_convert.py [--size-gib 1.0] [--repeats 3] [--out bench/out]

Uses the ~1 GiB checkpoint bench_read.py builds (cached under --out) and prints
wall time, peak memory and ratios for:
  convert CKPT out.safetensors    vs cp of the checkpoint's data file (the same bytes)
  convert CKPT out.safetensors    vs the usual script: tf.train.load_checkpoint, get_tensor of
                                     every tensor, safetensors.numpy.save_file
  convert CKPT out.safetensors --transpose big/w=1,0    vs cp (every tensor transposed: what
                                                          --layout torch does to Dense kernels)
  convert CKPT out.safetensors --dtype bfloat16        vs cp
  convert CKPT64 out.safetensors --dtype bfloat16      vs cp (CKPT64: CKPT cast to float64 by
                                                        convert itself; the one-rounding path)
  average 5 copies of CKPT -o out.safetensors          vs cat of the 5 inputs
Issue targets: <= 1.3x the time of cp (issue 29; 1.5x in issue 19); >= 5x faster
and >= 5x less peak memory than the usual script; transposes and casts within 2x of
cp, average within 2x of cat, peak memory under 300 MB for all (issues 19, 29). `--cases` picks some. Outputs go to a scratch directory under --out and are
removed after each run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CKPTTOOL, PYTHON, fresh, report, run_measured, size_parser  # noqa: E402

TF_SCRIPT = ("import sys, tensorflow as tf\nfrom safetensors.numpy import save_file\n"
             "r = tf.train.load_checkpoint(sys.argv[1])\n"
             "save_file({n: r.get_tensor(n) for n in r.get_variable_to_shape_map()}, sys.argv[2])")


def main() -> None:
    parser = size_parser(__doc__, repeats=3)
    parser.add_argument("--cases", default="plain,layout,dtype,dtype64,average",
                        help="comma-separated: plain (vs cp and the TF script), layout, dtype, dtype64, average")
    args = parser.parse_args()
    # bench_read.py builds (and caches) the checkpoint in a child process of its own.
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "bench_read.py"), "--build-only",
                    "--size-gib", str(args.size_gib), "--out", args.out], check=True)
    big = os.path.join(args.out, f"big_{args.size_gib:g}", "big")
    data = big + ".data-00000-of-00001"
    size = os.path.getsize(data)
    scratch = os.path.join(args.out, "convert_scratch", "x")
    r = args.repeats

    def measured(cmd: list[str], target: str):
        """Median time and max peak over `r` runs, each writing into an emptied directory."""
        runs = []
        for _ in range(r + 1):
            fresh(target)
            runs.append(run_measured(cmd, repeats=1, warmup=False))
        runs = runs[1:]  # the first fills the page cache
        runs.sort(key=lambda m: m.seconds)
        median = runs[len(runs) // 2]
        median.peak_mb = max(m.peak_mb for m in runs)
        return median

    cases = set(args.cases.split(","))
    out = scratch + ".safetensors"
    cp = measured(["cp", data, scratch + ".copy"], scratch + ".copy")
    rows = []
    if "plain" in cases:
        ours = measured(CKPTTOOL + ["convert", big, out], out)
        script = measured(PYTHON + [TF_SCRIPT, big, out], out)
        rows += [
            (f"convert -> safetensors ({size / 2**30:.2f} GiB) vs cp", ours, cp,
             f"{ours.seconds / cp.seconds:.2f}x the time of cp; target <= 1.3x"),
            ("convert -> safetensors vs load_checkpoint+save_file", ours, script,
             "target >= 5x time, >= 5x memory"),
        ]
    if "layout" in cases:
        ours = measured(CKPTTOOL + ["convert", big, out, "--transpose", "big/w=1,0"], out)
        rows.append(("convert --transpose (every tensor) vs cp", ours, cp,
                     f"{ours.seconds / cp.seconds:.2f}x the time of cp; target <= 2x, < 300 MB"))
    if "dtype" in cases:
        ours = measured(CKPTTOOL + ["convert", big, out, "--dtype", "bfloat16"], out)
        rows.append(("convert --dtype bfloat16 vs cp", ours, cp,
                     f"{ours.seconds / cp.seconds:.2f}x the time of cp; target <= 2x, < 300 MB"))
    if "dtype64" in cases:
        wide = os.path.join(args.out, f"big64_{args.size_gib:g}", "big")
        if not os.path.exists(wide + ".index"):  # cached beside the float32 one
            subprocess.run(CKPTTOOL + ["convert", big, wide, "--dtype", "float64"], check=True)
        ours = measured(CKPTTOOL + ["convert", wide, out, "--dtype", "bfloat16"], out)
        cp64 = measured(["cp", wide + ".data-00000-of-00001", scratch + ".copy"], scratch + ".copy")
        rows.append(("convert float64 --dtype bfloat16 vs cp", ours, cp64,
                     f"{ours.seconds / cp64.seconds:.2f}x the time of cp; target <= 2x, < 300 MB"))
    if "average" in cases:
        inputs = os.path.join(args.out, "average_inputs")
        os.makedirs(inputs, exist_ok=True)
        prefixes = []
        for i in range(5):  # five checkpoints of the same size (copies: the mean's cost does not depend on values)
            prefix = os.path.join(inputs, f"big-{i}")
            for suffix in (".index", ".data-00000-of-00001"):
                if not os.path.exists(prefix + suffix):
                    shutil.copyfile(big + suffix, prefix + suffix)
            prefixes.append(prefix)
        ours = measured(CKPTTOOL + ["average", *prefixes, "-o", out], out)
        cat = measured(["sh", "-c", 'cat "$@" > /dev/null', "cat",
                        *[p + ".data-00000-of-00001" for p in prefixes]], scratch + ".cat")
        rows.append((f"average 5 x {size / 2**30:.2f} GiB vs cat of the inputs", ours, cat,
                     f"{ours.seconds / cat.seconds:.2f}x the time of cat; target <= 2x, < 300 MB"))
    shutil.rmtree(os.path.dirname(scratch), ignore_errors=True)
    report(rows)


if __name__ == "__main__":
    main()
