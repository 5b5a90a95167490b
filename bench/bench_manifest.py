#!/usr/bin/env python3
"""Benchmark `manifest` and `verify --manifest` on bench_read's 1 GiB checkpoint, whole process.

    python bench/bench_manifest.py [--size-gib 1.0] [--repeats 5] [--out bench/out]

Rows, each with its ratio:
  manifest (files, 64 MiB pieces, tensors)   vs sha256sum of the same files
  verify --manifest (files mode: pieces)     vs verify (every CRC)
  verify --manifest --tensors (digests)      vs verify
  verify --manifest --quick (files: CRC-32C) vs verify  -- issue 27: >= 90% of verify's throughput
  verify --manifest --quick --tensors        vs verify  (the index's CRCs, after verify's own pass)
  verify --manifest of a safetensors copy    vs verify of that copy (SHA-256, then --quick)
sha256sum is one SHA-256 stream per file on one core; a manifest computes three (the whole files, their
pieces, the tensors' canonical encodings), verify --manifest one, spread over threads.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_read import build  # noqa: E402
from common import CKPTTOOL, report, run_measured, size_parser  # noqa: E402


def main() -> None:
    parser = size_parser(__doc__, repeats=5)
    args = parser.parse_args()
    # Built in a child process (bench_read's builder imports TensorFlow): see bench_read.main.
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "bench_read.py"), "--build-only",
                    "--size-gib", str(args.size_gib), "--out", args.out], check=True)
    big = build(args.out, args.size_gib)["big"]
    files = sorted(glob.glob(glob.escape(big) + ".*"))
    size = sum(os.path.getsize(f) for f in files)
    manifest = os.path.join(args.out, "big.manifest.json")
    copy = os.path.join(args.out, f"big_{args.size_gib:g}.safetensors")
    if not os.path.exists(copy):
        subprocess.run(CKPTTOOL + ["convert", big, copy], check=True, capture_output=True)
    subprocess.run(CKPTTOOL + ["manifest", big, "-o", manifest, "--overwrite"], check=True, capture_output=True)
    r = args.repeats
    gbs = lambda m: f"{size / m.seconds / 1e9:.2f} GB/s"  # noqa: E731
    made = run_measured(CKPTTOOL + ["manifest", big, "-o", manifest, "--overwrite"], r)
    sha = run_measured(["sha256sum", *files], r)
    verify = run_measured(CKPTTOOL + ["verify", big], r)
    by_files = run_measured(CKPTTOOL + ["verify", "--manifest", manifest, big], r)
    by_tensors = run_measured(CKPTTOOL + ["verify", "--manifest", manifest, "--tensors", big], r)
    quick = run_measured(CKPTTOOL + ["verify", "--manifest", manifest, "--quick", big], r)
    quick_tensors = run_measured(CKPTTOOL + ["verify", "--manifest", manifest, "--quick", "--tensors", big], r)
    verify_copy = run_measured(CKPTTOOL + ["verify", copy], r)
    copy_by_tensors = run_measured(CKPTTOOL + ["verify", "--manifest", manifest, copy], r)
    copy_quick = run_measured(CKPTTOOL + ["verify", "--manifest", manifest, "--quick", copy], r)
    report([
        (f"manifest ({size / 2**30:.2f} GiB) vs sha256sum", made, sha,
         f"{gbs(made)}; sha256sum {gbs(sha)}"),
        ("verify --manifest (files) vs sha256sum", by_files, sha, f"{gbs(by_files)}"),
        ("verify --manifest (files) vs verify", by_files, verify,
         f"{verify.seconds / by_files.seconds:.0%} of verify's throughput ({gbs(verify)})"),
        ("verify --manifest --tensors vs verify", by_tensors, verify,
         f"{verify.seconds / by_tensors.seconds:.0%} of verify's throughput"),
        ("verify --manifest --quick (files) vs verify", quick, verify,
         f"{verify.seconds / quick.seconds:.0%} of verify's throughput; target >= 90%"),
        ("verify --manifest --quick --tensors vs verify", quick_tensors, verify,
         f"{verify.seconds / quick_tensors.seconds:.0%} of verify's throughput; target >= 90%"),
        ("safetensors copy: verify --manifest vs verify", copy_by_tensors, verify_copy,
         f"{verify_copy.seconds / copy_by_tensors.seconds:.0%} of verify's throughput"),
        ("safetensors copy: verify --manifest --quick vs verify", copy_quick, verify_copy,
         f"{verify_copy.seconds / copy_quick.seconds:.0%} of verify's throughput"),
    ])
    print("(the 'tf' columns hold the second command of each row)")


if __name__ == "__main__":
    main()
