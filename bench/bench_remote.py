#!/usr/bin/env python3
"""Benchmark ckpttool on a bucket: moto's S3 server on 127.0.0.1, whole process, side by side.

    python bench/bench_remote.py [--size-gib 1.0] [--repeats 3] [--out bench/out]

Starts moto's standalone S3 server (a real HTTP S3 API) in this process, uploads
a checkpoint of about --size-gib GiB (built once by bench_read.py's builder)
and 1000 small checkpoints, then prints wall time, peak memory and ratios for:
  inspect s3://...         vs downloading the directory (parallel, fsspec) then `ckpttool inspect` on it
  verify s3://...          vs a plain parallel download of the same objects (fsspec get, to /dev/null-like tmp)
  prune s3://... (1000)    the figure, and the requests the server saw
Issue targets: inspect >= 20x faster than download-then-inspect; verify within 1.5x of a parallel download.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import CKPTTOOL, PYTHON, Measure, report, run_measured  # noqa: E402

BUCKET = "bench-bucket"

DOWNLOAD_THEN_INSPECT = """
import os, subprocess, sys, tempfile, fsspec
fs = fsspec.filesystem("s3")
with tempfile.TemporaryDirectory() as tmp:
    fs.get(sys.argv[1] + "/", tmp + "/", recursive=True)
    sys.exit(subprocess.call([sys.executable, "-m", "ckpttool", "inspect", "--json", tmp],
                             stdout=subprocess.DEVNULL))
"""
PARALLEL_DOWNLOAD = """
import sys, tempfile, fsspec
fs = fsspec.filesystem("s3")
with tempfile.TemporaryDirectory() as tmp:
    fs.get(sys.argv[1] + "/", tmp + "/", recursive=True)
"""


class RequestCounter:
    """Counts the requests moto's server answers (its werkzeug request log)."""

    def __init__(self):
        import logging

        self.count = 0
        counter = self

        class Handler(logging.Handler):
            def emit(self, record):
                counter.count += 1

        logger = logging.getLogger("werkzeug")
        logger.setLevel(logging.INFO)
        logger.addHandler(Handler())
        logger.propagate = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = parser.parse_args()
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "bench_read.py"), "--build-only",
                    "--size-gib", str(args.size_gib), "--out", args.out], check=True)
    big_dir = os.path.join(args.out, f"big_{args.size_gib:g}")

    counter = RequestCounter()
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=True)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"})
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.mkdir(BUCKET)
    fs.put(big_dir + "/", f"{BUCKET}/big/", recursive=True)
    small = tempfile.mkdtemp()
    _many(small, 1000)
    fs.put(small + "/", f"{BUCKET}/many/", recursive=True)
    shutil.rmtree(small)
    size = sum(os.path.getsize(os.path.join(big_dir, f)) for f in os.listdir(big_dir))
    url = f"s3://{BUCKET}/big"
    r = args.repeats
    rows = []
    rows.append((f"inspect {url} ({size / 2**30:.2f} GiB)", run_measured(CKPTTOOL + ["inspect", "--json", url], r),
                 run_measured(PYTHON + [DOWNLOAD_THEN_INSPECT, url], r), "vs download + inspect; target >= 20x"))
    verify = run_measured(CKPTTOOL + ["verify", url], r)
    download = run_measured(PYTHON + [PARALLEL_DOWNLOAD, url], r)
    rows.append((f"verify {url}", verify, download,
                 f"{size / verify.seconds / 1e9:.2f} GB/s; vs parallel download; target >= 0.67x (within 1.5x)"))
    before = counter.count
    prune = run_measured(CKPTTOOL + ["prune", "--yes", "--keep-last", "10", f"s3://{BUCKET}/many"], 1, warmup=False)
    rows.append(("prune s3://.../many (1000 checkpoints)", prune, None,
                 f"{counter.count - before} requests"))
    report(rows)
    server.stop()


def _many(directory: str, count: int) -> None:
    """`count` tiny checkpoints (one shard each) and a state file listing them."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np

    from ckpttool.formats.bundle_writer import BundleWriter
    from ckpttool.formats.dtypes import dtype_from_name
    from ckpttool.formats.state import CheckpointState, write_state

    for step in range(1, count + 1):
        writer = BundleWriter(os.path.join(directory, f"ckpt-{step}"))
        writer.add("w", dtype_from_name("float32"), np.full(4, step, np.float32))
        writer.finish()
    names = tuple(f"ckpt-{i}" for i in range(1, count + 1))
    write_state(directory, CheckpointState(names[-1], names, tuple(float(i) for i in range(1, count + 1))))


if __name__ == "__main__":
    main()
