"""Every shell and Python block of the README runs as written, in order (issue 18 item 15),
on a copy of the shipped examples/run, with `ckpttool` = `python -m ckpttool` of this tree.

The two one-line commands (install and try; install and test) are skipped: CI runs them
(.ci/run, tests/test_docs.py). The bucket block runs against the test suite's S3 and GCS
servers, with examples/run uploaded to `my-bucket/runs/exp1` on each; its MinIO line's
endpoint is the S3 server's."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ONE_LINERS = ("pip install",)


def _blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    return [(kind, body) for kind, body in re.findall(r"```(sh|python)\n(.*?)\n```", text, re.S)
            if not body.startswith(ONE_LINERS)]


def _commands(block: str) -> list[str]:
    """The command lines of a shell block, continuation lines joined."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _env(tmp_path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ckpttool"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ckpttool "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
            "NO_COLOR": "1"}


@pytest.fixture
def bucket_env():
    """Both test servers, `my-bucket` on each holding examples/run under runs/exp1."""
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


def test_readme_blocks_run_in_order(tmp_path, bucket_env):
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    server_env, s3_endpoint = bucket_env
    env = {**_env(tmp_path), **server_env}
    blocks = _blocks()
    assert [kind for kind, _ in blocks].count("python") == 1 and len(blocks) >= 3
    for kind, body in blocks:
        if kind == "python":
            proc = subprocess.run([sys.executable, "-c", body], cwd=work, env=env, capture_output=True, text=True)
            assert proc.returncode == 0, (body, proc.stderr)
            continue
        for command in _commands(body):
            command = command.replace("http://localhost:9000", s3_endpoint)
            proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True)
            # diff answers "they differ" with exit 1, as diff(1) does; every other line succeeds.
            allowed = (0, 1) if command.startswith("ckpttool diff") else (0,)
            assert proc.returncode in allowed, (command, proc.returncode, proc.stderr)
            assert "Traceback" not in proc.stderr


def test_readme_api_refusal_names_the_keyword(tmp_path):
    """From the API, an existing destination is refused naming `overwrite=True`, not the CLI's flag."""
    import ckpttool
    from ckpttool.errors import Refused

    out = tmp_path / "model.safetensors"
    ckpttool.convert(ROOT / "examples" / "run", out)
    with pytest.raises(Refused) as raised:
        ckpttool.convert(ROOT / "examples" / "run", out)
    assert "overwrite=True" in str(raised.value) and "--overwrite" not in str(raised.value)
