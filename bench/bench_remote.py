#!/usr/bin/env python3
"""Benchmark ckpttool on a bucket: moto's S3 server on 127.0.0.1, whole process, side by side.

    python bench/bench_remote.py [--size-gib 1.0] [--repeats 3] [--out bench/out] [--only-inspect]

Starts moto's standalone S3 server (a real HTTP S3 API) in a process of its own, uploads
a checkpoint of about --size-gib GiB (built once by bench_read.py's builder)
and 1000 small checkpoints, then prints wall time, peak memory and ratios for:
  inspect s3://...         vs downloading the directory (parallel, fsspec) then `ckpttool inspect` on it,
                           run in turn (ours, theirs, ours ...): the median of the pairs' ratios
                           (--only-inspect: this row alone, with the big checkpoint alone uploaded)
  verify s3://...          vs a plain parallel download of the same objects: ranged GETs of 8 MiB,
                           8 in flight (what `aws s3 cp` does), and fsspec's get (one GET per object)
  prune s3://... (1000)    the figure, and the requests the server saw
  prune -r s3://... (--runs run directories of 3 checkpoints each, keep-last 1): dry run and real
                           (--only-policy: prune --policy of the same, a rule naming their parent, then each),
                           with the requests the server saw per run directory: planning (beyond the
                           listing pages; target <= 1.1) and applying (target <= 4). A real prune
                           plans from the listing and the state files and reads each family's newest
                           index as it applies; a dry run reads it to plan.
Issue targets: inspect >= 20x faster than download-then-inspect; verify within 1.5x of a parallel download.
Caveat: moto (like the GCS emulator) reads a whole object to answer each ranged GET, so
on it ranged reads of a large object cost far more than they do on S3; compare verify
with the ranged download, which pays the same.
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
from common import CKPTTOOL, ENV, PYTHON, report, run_measured, run_paired, size_parser  # noqa: E402
from tests.remote_servers import BUCKET, start_s3  # noqa: E402  (the test suite's server, in its own process)


DOWNLOAD_THEN_INSPECT = """
import os, subprocess, sys, tempfile, fsspec
fs = fsspec.filesystem("s3")
with tempfile.TemporaryDirectory() as tmp:
    fs.get(sys.argv[1] + "/", tmp + "/", recursive=True)
    sys.exit(subprocess.call([sys.executable, "-m", "ckpttool", "inspect", "--json", tmp],
                             stdout=subprocess.DEVNULL))
"""
# What `aws s3 cp` (s3transfer) does with a large object: ranged GETs of 8 MiB, several in flight.
RANGED_DOWNLOAD = """
import sys, fsspec
from concurrent.futures import ThreadPoolExecutor
fs = fsspec.filesystem("s3")
part = 8 << 20
with ThreadPoolExecutor(8) as pool:
    for path, size in fs.du(sys.argv[1], total=False).items():
        list(pool.map(lambda start: len(fs.cat_file(path, start=start, end=min(size, start + part))), range(0, size, part)))
"""
# fsspec's get: one streamed GET per object, objects in parallel.
WHOLE_OBJECT_DOWNLOAD = """
import sys, tempfile, fsspec
fs = fsspec.filesystem("s3")
with tempfile.TemporaryDirectory() as tmp:
    fs.get(sys.argv[1] + "/", tmp + "/", recursive=True)
"""
def main() -> None:
    parser = size_parser(__doc__, repeats=3)
    parser.add_argument("--runs", type=int, default=1000, help="run directories for the prune -r case")
    parser.add_argument("--only-runs", action="store_true", help="only the prune -r case")
    parser.add_argument("--only-policy", action="store_true",
                        help="only prune --policy over --runs run directories (a rule naming their parent, then each)")
    parser.add_argument("--only-inspect", action="store_true", help="only the inspect case")
    parser.add_argument("--upload", help=argparse.SUPPRESS)
    parser.add_argument("--upload-big-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upload-runs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upload_runs:
        _upload_runs(args.upload_runs)
        return
    if args.upload:
        _upload(args.upload, many=not args.upload_big_only)
        return
    if args.only_runs or args.only_policy:
        server = start_s3(count_requests=True)
        os.environ.update(server.env)
        ENV.update(server.env)
        if args.only_runs:
            report(_prune_runs(server, args.runs))
        else:
            report([row for paths in ("runs", "runs/*") for row in _prune_runs(server, args.runs, paths)])
        server.stop()
        return
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "bench_read.py"), "--build-only",
                    "--size-gib", str(args.size_gib), "--out", args.out], check=True)
    big_dir = os.path.join(args.out, f"big_{args.size_gib:g}")

    server = start_s3(count_requests=True)
    os.environ.update(server.env)
    ENV.update(server.env)  # the measured subprocesses get common.ENV, built at import
    # Uploading in a child process keeps this one small: a child started by vfork counts
    # its parent's resident memory in its own peak (ru_maxrss) until it execs.
    subprocess.run([sys.executable, __file__, "--upload", big_dir] + ["--upload-big-only"] * args.only_inspect,
                   check=True)
    size = sum(os.path.getsize(os.path.join(big_dir, f)) for f in os.listdir(big_dir))
    url = f"s3://{BUCKET}/big"
    r = args.repeats
    rows = [_inspect_row(server, url, size, r)]
    if args.only_inspect:
        report(rows)
        server.stop()
        return

    def measured(cmd):
        before = server.requests()
        result = run_measured(cmd, r)
        return result, (server.requests() - before) // (r + 1)

    verify, verify_requests = measured(CKPTTOOL + ["verify", url])
    ranged, ranged_requests = measured(PYTHON + [RANGED_DOWNLOAD, url])
    whole, whole_requests = measured(PYTHON + [WHOLE_OBJECT_DOWNLOAD, url])
    rows.append((f"verify {url}", verify, ranged,
                 f"{size / verify.seconds / 1e9:.2f} GB/s, {verify_requests} requests; vs ranged parallel download "
                 f"(8 MiB parts, 8 in flight, {ranged_requests} requests); target >= 0.67x"))
    rows.append(("  the same verify", verify, whole,
                 f"vs fsspec get (one streamed GET per object, {whole_requests} requests)"))
    before = server.requests()
    prune = run_measured(CKPTTOOL + ["prune", "--yes", "--keep-last", "10", f"s3://{BUCKET}/many"], 1, warmup=False)
    rows.append(("prune s3://.../many (1000 checkpoints)", prune, None,
                 f"{server.requests() - before} requests"))
    rows += _prune_runs(server, args.runs)
    report(rows)
    server.stop()


def _inspect_row(server, url: str, size: int, repeats: int) -> tuple:
    """`inspect --json URL` and download-then-inspect in turn, after one run of ours alone whose
    requests are counted (the server's log settled before and after it)."""
    ours = CKPTTOOL + ["inspect", "--json", url]
    before = len(server.settled_log())
    run_measured(ours, 1, warmup=False)
    requests = len(server.settled_log()) - before
    paired = run_paired(ours, PYTHON + [DOWNLOAD_THEN_INSPECT, url], repeats)
    return (f"inspect {url} ({size / 2**30:.2f} GiB)", paired.ours, paired.theirs,
            f"paired {paired.ratio:.1f}x, {requests} requests; vs download + inspect; target >= 20x")


def _prune_runs(server, runs: int, policy_paths: str | None = None) -> list:
    """`prune -r` over `runs` run directories of a bucket (planned from the tree's one listing,
    deleted in batches across run directories), or `prune --policy` with one rule `keep_last = 1`
    whose `paths` is `s3://BUCKET/<policy_paths>`: the requests the server saw per run directory,
    for the plan (`--dry-run`, beyond the listing pages) and for the real run: its plan (the state
    files it read, beyond the listing pages) and its apply (the rest)."""
    subprocess.run([sys.executable, __file__, "--upload-runs", str(runs)], check=True, env={**os.environ, **ENV})
    url = f"s3://{BUCKET}/runs"
    if policy_paths is None:
        command, shown = ["prune", "-r", "--keep-last", "1", url], "prune -r"
    else:
        policy = os.path.join(tempfile.mkdtemp(), "retention.toml")
        with open(policy, "w") as handle:
            handle.write(f'[[rule]]\npaths = ["s3://{BUCKET}/{policy_paths}"]\nkeep_last = 1\n')
        command, shown = ["prune", "--policy", policy], f"prune --policy (paths {policy_paths})"
    rows = []
    planned = 0
    for label, extra in ((f"{shown} --dry-run", ["--dry-run"]), (f"{shown} --yes", ["--yes"])):
        before = len(server.settled_log())
        result = run_measured(CKPTTOOL + command + extra, 1, warmup=False)
        lines = server.settled_log()[before:]
        # The tree's listing pages (prefix runs/); a run directory listed on its own is not one of them.
        listings = sum("list-type=2" in line and "prefix=runs/&" in line for line in lines)
        deletes = sum("?delete" in line for line in lines)
        if extra == ["--dry-run"]:
            planned = len(lines)
            what = f"plan: {(len(lines) - listings) / runs:.2f} per run directory beyond the tree's {listings} listing pages"
        else:
            # A real prune plans from the listing and each state file; the newest index of a family
            # is read when the batched apply takes the run directory (a dry run reads it to plan).
            states = sum(line.startswith("GET ") and line.split(" ")[1].endswith("/checkpoint") for line in lines)
            what = (f"plan: {states / runs:.2f} per run directory beyond the {listings} listing pages; "
                    f"apply: {(len(lines) - states - listings) / runs:.2f} per run directory "
                    f"({deletes} DeleteObjects in all); the dry run's requests: {planned}")
        rows.append((f"{label} ({runs} run dirs)", result, None,
                     f"{len(lines)} requests, {len(lines) / runs:.2f} per run directory; {what}"))
    return rows


def _upload_runs(runs: int) -> None:
    """`runs` run directories, each of 3 tiny checkpoints and a state file, in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    import fsspec

    fs = fsspec.filesystem("s3")
    if fs.exists(f"{BUCKET}/runs"):
        fs.rm(f"{BUCKET}/runs", recursive=True)
    small = tempfile.mkdtemp()
    _many(small, 3)
    files = {}
    for name in os.listdir(small):
        with open(os.path.join(small, name), "rb") as handle:
            files[name] = handle.read()
    shutil.rmtree(small)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: fs.pipe_file(f"{BUCKET}/runs/run-{item[0]:04d}/{item[1]}", files[item[1]]),
                      [(run, name) for run in range(runs) for name in files]))


def _upload(big_dir: str, many: bool = True) -> None:
    """Put the big checkpoint and (`many`) 1000 small ones into the bucket."""
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.put(big_dir + "/", f"{BUCKET}/big/", recursive=True)
    if not many:
        return
    small = tempfile.mkdtemp()
    _many(small, 1000)
    fs.put(small + "/", f"{BUCKET}/many/", recursive=True)
    shutil.rmtree(small)


def _many(directory: str, count: int) -> None:
    """`count` tiny checkpoints (one shard each) and a state file listing them."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np

    from ckpttool.formats.tf.bundle_writer import BundleWriter
    from ckpttool.formats.dtypes import dtype_from_name
    from ckpttool.formats.tf.state import CheckpointState, write_state

    for step in range(1, count + 1):
        writer = BundleWriter(os.path.join(directory, f"ckpt-{step}"))
        writer.add("w", dtype_from_name("float32"), np.full(4, step, np.float32))
        writer.finish()
    names = tuple(f"ckpt-{i}" for i in range(1, count + 1))
    write_state(directory, CheckpointState(names[-1], names, tuple(float(i) for i in range(1, count + 1))))


if __name__ == "__main__":
    main()
