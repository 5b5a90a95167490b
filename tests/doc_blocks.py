"""Runs the shell and Python blocks of a Markdown page (README.md, docs/**/*.md) as written, in order,
in a working directory holding a copy of the shipped examples/, with `ckpttool` = `python -m
ckpttool` of this tree (tests/test_readme.py, tests/test_doc_blocks.py).

What the Markdown says to the runner:
- `<!-- no-run: REASON -->` on the line before a block: the block is not run (install commands, which
  CI runs itself; benchmarks that take minutes). tests/test_doc_blocks.py counts them.
- `<!-- docs-test: buckets -->` in a page: its blocks run with the suite's S3 and GCS servers, on each
  `my-bucket/runs/exp1` holding examples/run, and `http://localhost:9000` meaning the S3 server.
- A command whose comment says `(exit N)` must end with exit N; every other command, and every Python
  block, with 0. Each line of a shell block runs on its own (`bash -c`).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

_BLOCK = re.compile(r"(?:<!-- no-run: (?P<reason>[^\n]*?) -->\n)?```(?P<kind>sh|python)\n(?P<body>.*?)\n```", re.S)
_EXPECTED_EXIT = re.compile(r"#.*\(exit (\d+)")
BUCKETS_MARKER = "<!-- docs-test: buckets -->"
MINIO_ENDPOINT = "http://localhost:9000"


@dataclass(frozen=True)
class Block:
    kind: str  # "sh" or "python"
    body: str
    no_run: str | None  # why it is not run, or None


def blocks(text: str) -> list[Block]:
    return [Block(m["kind"], m["body"], m["reason"]) for m in _BLOCK.finditer(text)]


def commands(body: str) -> list[str]:
    """The command lines of a shell block, continuation lines joined."""
    return [line for line in body.replace("\\\n", " ").splitlines() if line.strip()]


def expected_exit(command: str) -> int:
    found = _EXPECTED_EXIT.search(command)
    return int(found[1]) if found else 0


def work_directory(tmp_path: Path) -> Path:
    """A fresh working directory holding a copy of examples/."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    return work


def cli_env(tmp_path: Path) -> dict:
    """`ckpttool` on PATH running this tree; HOME and XDG directories inside tmp_path (completion
    --install writes there)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ckpttool"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ckpttool "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    homes = {"HOME": "home", "XDG_DATA_HOME": "data", "XDG_CONFIG_HOME": "config"}
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
            "NO_COLOR": "1", **{var: str(tmp_path / sub) for var, sub in homes.items()}}


def run_blocks(page_blocks: list[Block], work: Path, env: dict, s3_endpoint: str | None = None) -> None:
    for block in page_blocks:
        if block.no_run is not None:
            continue
        if block.kind == "python":
            proc = subprocess.run([sys.executable, "-c", block.body], cwd=work, env=env, capture_output=True,
                                  text=True)
            assert proc.returncode == 0, (block.body, proc.stderr)
            continue
        for command in commands(block.body):
            if s3_endpoint is not None:
                command = command.replace(MINIO_ENDPOINT, s3_endpoint)
            proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)  # never a terminal: prune must not ask
            assert proc.returncode == expected_exit(command), (command, proc.returncode, proc.stderr)
            assert "Traceback" not in proc.stderr, (command, proc.stderr)


@contextlib.contextmanager
def bucket_servers():
    """Both test servers, `my-bucket` on each holding examples/run under runs/exp1: yields (the
    servers' environment, the S3 endpoint)."""
    from tests.remote_servers import start_gcs, start_s3

    servers = [start_s3(), start_gcs()]
    saved = dict(os.environ)
    try:
        env = {}
        for server in servers:
            env.update(server.env)
        os.environ.update(env)
        from ckpttool.storage import remote

        remote.set_storage_options({})  # no cached file system pointing at another test's server
        for server in servers:
            fs = remote.filesystem(server.protocol)
            fs.mkdir("my-bucket")
            for name in sorted(os.listdir(ROOT / "examples" / "run")):
                fs.pipe_file(f"my-bucket/runs/exp1/{name}", (ROOT / "examples" / "run" / name).read_bytes())
        yield env, servers[0].endpoint
    finally:
        os.environ.clear()
        os.environ.update(saved)
        from ckpttool.storage import remote

        remote.set_storage_options({})  # the next test's servers get file systems of their own
        for server in servers:
            server.stop()


def run_page(text: str, tmp_path: Path, page_blocks: list[Block] | None = None) -> None:
    """Run a page's blocks (or those given) in a fresh copy of examples/, with the bucket servers
    when the page asks for them."""
    work = work_directory(tmp_path)
    env = cli_env(tmp_path)
    page_blocks = blocks(text) if page_blocks is None else page_blocks
    if BUCKETS_MARKER not in text:
        run_blocks(page_blocks, work, env)
        return
    with bucket_servers() as (server_env, s3_endpoint):
        run_blocks(page_blocks, work, {**env, **server_env}, s3_endpoint)
