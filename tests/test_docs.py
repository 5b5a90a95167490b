"""The generated completions and man page are current, the README's commands
are the ones CI runs, and the shipped sample directory is what TensorFlow reads."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT, run_cli
from tests.oracle import assert_inspect_matches_tf


def test_generated_docs_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_man_page_has_every_command_and_exit_status():
    man = (ROOT / "man" / "ckpttool.1").read_text()
    assert ".SH EXIT STATUS" in man
    for name in ("ls", "latest", "inspect", "verify"):
        assert f"ckpttool {name}" in man


def test_bash_completion_offers_commands_and_options():
    script = ROOT / "completions" / "ckpttool.bash"
    probe = (f"source {script}; COMP_WORDS=(ckpttool ins); COMP_CWORD=1; _ckpttool; echo ${{COMPREPLY[@]}};"
             f"COMP_WORDS=(ckpttool inspect --st); COMP_CWORD=2; _ckpttool; echo ${{COMPREPLY[@]}}")
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].split() == ["inspect"]
    assert "--stats" in out[1].split()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_sample_run_directory_reads_like_tensorflow(tf):
    run = ROOT / "examples" / "run"
    assert run_cli("latest", run).stdout.strip() == tf.train.latest_checkpoint(str(run))
    doc = run_cli("inspect", "--json", "--all", "--values", run).json()
    assert_inspect_matches_tf(doc, tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run))))
    listing = run_cli("ls", "--json", run).json()
    assert len(listing["checkpoints"]) == 3 and all(c["has_meta"] for c in listing["checkpoints"])
