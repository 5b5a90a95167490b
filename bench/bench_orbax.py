#!/usr/bin/env python3
"""Benchmark reading an Orbax checkpoint without JAX, whole process, side by side with Orbax.

    python bench/bench_orbax.py [--size-gib 1.0] [--repeats 3] [--out bench/out]

Builds (once, cached under --out) a CheckpointManager step of about --size-gib written by
orbax.checkpoint (OCDBT, Orbax's default): float32 arrays of 64 MiB and a bfloat16 one, saved
from one CPU device. Prints wall time, peak memory and ratios for:
  ckpttool inspect --json STEP           vs Orbax's metadata() of the step (what Orbax offers
                                            to see a checkpoint's structure) and vs Orbax
                                            restoring it to numpy
  ckpttool convert STEP out.safetensors  vs the usual script: Orbax restores to numpy, then
                                            safetensors.numpy.save_file
Outputs go to a scratch directory under --out, removed after each run. Needs jax,
orbax-checkpoint and tensorstore (the `test` extra).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CKPTTOOL, PYTHON, fresh, report, run_measured, size_parser  # noqa: E402

ARRAY_MIB = 64
BUILD = """
import os, sys, numpy as np, ml_dtypes, orbax.checkpoint as ocp
root, count = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
rows = ({mib} << 20) // 4 // 1024
tree = {{"params": {{f"layer_{{i}}": {{"kernel": rng.standard_normal((rows, 1024), np.float32)}} for i in range(count)}},
        "embed": rng.standard_normal((rows, 1024), np.float32).astype(ml_dtypes.bfloat16), "step": 1000}}
with ocp.CheckpointManager(root) as manager:
    manager.save(1000, args=ocp.args.StandardSave(tree))
    manager.wait_until_finished()
""".format(mib=ARRAY_MIB)
_RESTORE = """
import sys, numpy as np, jax, orbax.checkpoint as ocp
item = sys.argv[1] + "/default"
checkpointer = ocp.PyTreeCheckpointer()
metadata = checkpointer.metadata(item).item_metadata.tree
args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray)
                    if type(m).__name__ == "ArrayMetadata" else ocp.RestoreArgs(), metadata)
tree = checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=args))
"""
ORBAX_METADATA = ("import sys, orbax.checkpoint as ocp\n"
                  "print(ocp.PyTreeCheckpointer().metadata(sys.argv[1] + '/default').item_metadata.tree)")
ORBAX_RESTORE = _RESTORE
ORBAX_TO_SAFETENSORS = _RESTORE + (
    "from safetensors.numpy import save_file\n"
    "flat = {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)\n"
    "        for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}\n"
    "save_file({k: v for k, v in flat.items() if v.dtype.kind in 'fiub' and v.dtype.name != 'bfloat16'}, sys.argv[2])")


def build(out: str, size_gib: float) -> str:
    """The step directory, written by Orbax once and reused."""
    root = os.path.join(out, f"orbax_{size_gib:g}")
    step = os.path.join(root, "1000")
    if not os.path.isfile(os.path.join(step, "_CHECKPOINT_METADATA")):
        shutil.rmtree(root, ignore_errors=True)
        count = max(1, round(size_gib * 1024 / ARRAY_MIB) - 1)  # and the bfloat16 embedding's half
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        subprocess.run([sys.executable, "-c", BUILD, root, str(count)], check=True, env=env)
    return step


def main() -> None:
    parser = size_parser(__doc__, repeats=3)
    args = parser.parse_args()
    step = build(args.out, args.size_gib)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _s, files in os.walk(step) for f in files)
    scratch = fresh(os.path.join(args.out, "orbax_scratch", "out.safetensors"))
    r = args.repeats
    inspect = run_measured([*CKPTTOOL, "inspect", "--json", step], r)
    rows = [("inspect --json vs Orbax metadata()", inspect, run_measured([*PYTHON, ORBAX_METADATA, step], r),
             f"{size / 2**30:.2f} GiB on disk"),
            ("inspect --json vs Orbax restore to numpy", inspect, run_measured([*PYTHON, ORBAX_RESTORE, step], r), "")]
    ours = run_measured([*CKPTTOOL, "convert", "--overwrite", step, scratch], r)
    theirs = run_measured([*PYTHON, ORBAX_TO_SAFETENSORS, step, scratch], r)
    rows.append(("convert to safetensors vs Orbax restore+save", ours, theirs,
                 "the script leaves bfloat16 out (numpy has none)"))
    shutil.rmtree(os.path.dirname(scratch), ignore_errors=True)
    report(rows)


if __name__ == "__main__":
    main()
