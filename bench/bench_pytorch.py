#!/usr/bin/env python3
"""Benchmark reading PyTorch files without torch, whole process, against torch itself.

    python bench/bench_pytorch.py [--size-gib 1.0] [--repeats 3] [--out bench/out]

Builds (once, cached under --out, in a child process with torch) a state dict of about
--size-gib: float32 matrices, a bfloat16 one, a transposed view (not contiguous) and a
tied pair, saved with torch.save (zip layout) and with the legacy layout. Then prints
wall time, peak memory and ratios for:
  inspect --json model.pt                 vs torch.load(weights_only=True) and a listing of
                                             names, dtypes and shapes
  convert model.pt out.safetensors        vs torch.load(weights_only=True) then
                                             safetensors.torch.save_file (the usual script)
  the same two for the legacy file
The "theirs" columns are torch's. Outputs go to a scratch directory under --out and are
removed before each run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CKPTTOOL, Measure, PYTHON, report, run_measured, size_parser  # noqa: E402

BUILD = r"""
import sys, torch
size, zip_path, legacy_path = float(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.manual_seed(0)
state, total, i = {}, 0, 0
while total < size * (1 << 30) - (64 << 20):
    state[f"layers.{i}.weight"] = torch.randn(2048, 2048)  # 16 MiB
    total += 16 << 20
    i += 1
state["embed.weight"] = torch.randn(4096, 2048).to(torch.bfloat16)  # 16 MiB
state["proj.weight"] = torch.randn(2048, 2048).t()  # a transposed view: 16 MiB, not contiguous
state["lm_head.weight"] = state["layers.0.weight"]  # tied: one storage, two names
torch.save(state, zip_path)
torch.save(state, legacy_path, _use_new_zipfile_serialization=False)
"""

TORCH_LIST = ("import sys, torch\nstate = torch.load(sys.argv[1], weights_only=True)\n"
              "print({name: (str(t.dtype), tuple(t.shape)) for name, t in state.items()})")
TORCH_CONVERT = ("import sys, torch\nfrom safetensors.torch import save_file\n"
                 "state = torch.load(sys.argv[1], weights_only=True)\n"
                 "save_file({name: t.contiguous().clone() for name, t in state.items()}, sys.argv[2])")


def build(size_gib: float, out: str) -> tuple[str, str]:
    directory = os.path.join(out, f"pytorch_{size_gib:g}")
    zip_path, legacy_path = os.path.join(directory, "model.pt"), os.path.join(directory, "model_legacy.pt")
    if not (os.path.exists(zip_path) and os.path.exists(legacy_path)):
        os.makedirs(directory, exist_ok=True)
        subprocess.run([sys.executable, "-c", BUILD, str(size_gib), zip_path, legacy_path], check=True)
    return zip_path, legacy_path


def main() -> None:
    parser = size_parser(__doc__, repeats=3)
    args = parser.parse_args()
    zip_path, legacy_path = build(args.size_gib, args.out)
    scratch = os.path.join(args.out, "pytorch_scratch")
    out = os.path.join(scratch, "out.safetensors")

    def writing(cmd: list[str]) -> Measure:
        """Median time and max peak over the repeats, each writing into an emptied directory."""
        runs = []
        for _ in range(args.repeats + 1):
            shutil.rmtree(scratch, ignore_errors=True)
            os.makedirs(scratch)
            runs.append(run_measured(cmd, repeats=1, warmup=False))
        runs = sorted(runs[1:], key=lambda m: m.seconds)  # the first fills the page cache
        return Measure(runs[len(runs) // 2].seconds, max(m.peak_mb for m in runs))

    rows = []
    size = os.path.getsize(zip_path) / (1 << 30)
    for label, path in (("zip", zip_path), ("legacy", legacy_path)):
        rows.append((f"inspect --json ({label}, {size:.2f} GiB)",
                     run_measured(CKPTTOOL + ["inspect", "--json", path], repeats=args.repeats),
                     run_measured(PYTHON + [TORCH_LIST, path], repeats=args.repeats), "vs torch.load + listing"))
        rows.append((f"convert -> safetensors ({label})", writing(CKPTTOOL + ["convert", path, out]),
                     writing(PYTHON + [TORCH_CONVERT, path, out]), "vs torch.load + save_file"))
    shutil.rmtree(scratch, ignore_errors=True)
    report(rows, theirs="torch")


if __name__ == "__main__":
    main()
