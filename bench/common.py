"""Shared helpers for the benchmarks: whole-process timing and peak memory of
a command (wait4's ru_maxrss), medians over repeats, and a results table."""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

# Bytecode is cached after the warm-up run, as it is for an installed package
# (PYTHONDONTWRITEBYTECODE would make every run compile ckpttool from source).
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
CKPTTOOL = [sys.executable, "-m", "ckpttool"]
PYTHON = [sys.executable, "-c"]


def size_parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """The options every bench that builds a checkpoint of some size takes (--size-gib, --repeats,
    --out), described by the first line of the bench's docstring; a bench adds its own to it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    return parser


def fresh(path: str) -> str:
    """`path`'s directory emptied, so each measured run writes a new file."""
    import shutil

    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    os.makedirs(os.path.dirname(path))
    return path


@dataclass
class Measure:
    seconds: float
    peak_mb: float


def _run_once(cmd: list[str]) -> Measure:
    """Wall time and peak RSS of one run of `cmd` (exit 0 or 1 expected)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{stderr[-2000:]}")
    return Measure(elapsed, usage.ru_maxrss / 1024)


def run_measured(cmd: list[str], repeats: int = 5, warmup: bool = True) -> Measure:
    """Median wall time and max peak RSS of `cmd` over `repeats` runs (after one warm-up run)."""
    if warmup:
        _run_once(cmd)  # fills the page cache and the interpreter's .pyc files
    runs = [_run_once(cmd) for _ in range(repeats)]
    return Measure(statistics.median(r.seconds for r in runs), max(r.peak_mb for r in runs))


@dataclass
class Paired:
    ours: Measure
    theirs: Measure
    ratio: float  # the median over the pairs of their time / ours


def run_paired(ours: list[str], theirs: list[str], repeats: int = 5) -> Paired:
    """The two commands in turn (ours, theirs, ours ...) after a warm-up run of each: medians, max
    peaks, and the median of the pairs' time ratios, which holds while a shared machine's speed drifts."""
    _run_once(ours), _run_once(theirs)
    pairs = [(_run_once(ours), _run_once(theirs)) for _ in range(repeats)]
    return Paired(Measure(statistics.median(a.seconds for a, _ in pairs), max(a.peak_mb for a, _ in pairs)),
                  Measure(statistics.median(b.seconds for _, b in pairs), max(b.peak_mb for _, b in pairs)),
                  statistics.median(b.seconds / a.seconds for a, b in pairs))


def report(rows: list[tuple[str, Measure, Measure | None, str]], theirs: str = "tf") -> None:
    """Print ours vs the other way (TensorFlow's unless `theirs` names another), with the ratios."""
    print(f"{'case':44} {'ours s':>8} {'ours MB':>8} {theirs + ' s':>8} {theirs + ' MB':>8} {'speedup':>8} "
          f"{'mem ratio':>9}  note")
    for name, ours, theirs, note in rows:
        if theirs:
            print(f"{name:44} {ours.seconds:8.3f} {ours.peak_mb:8.1f} {theirs.seconds:8.3f} {theirs.peak_mb:8.1f} "
                  f"{theirs.seconds / ours.seconds:7.1f}x {theirs.peak_mb / ours.peak_mb:8.1f}x  {note}")
        else:
            print(f"{name:44} {ours.seconds:8.3f} {ours.peak_mb:8.1f} {'-':>8} {'-':>8} {'-':>8} {'-':>9}  {note}")
