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


def test_completion_command_prints_the_checked_in_scripts():
    for shell, name in (("bash", "ckpttool.bash"), ("zsh", "_ckpttool"), ("fish", "ckpttool.fish")):
        result = run_cli("completion", shell)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == (ROOT / "completions" / name).read_text()


def test_completion_install_writes_where_each_shell_looks(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    expected = {"bash": tmp_path / "data" / "bash-completion" / "completions" / "ckpttool",
                "fish": tmp_path / "config" / "fish" / "completions" / "ckpttool.fish",
                "zsh": tmp_path / ".zfunc" / "_ckpttool"}
    for shell, path in expected.items():
        doc = run_cli("completion", shell, "--install", "--json").json()
        assert doc["installed"] == str(path)
        assert path.read_text() == run_cli("completion", shell).stdout
    probe = f"source {expected['bash']}; COMP_WORDS=(ckpttool ls); COMP_CWORD=1; _ckpttool; echo ${{COMPREPLY[@]}}"
    assert subprocess.run(["bash", "-c", probe], capture_output=True, text=True).stdout.split() == ["ls"]


def test_fixed_choice_options_complete_their_values():
    from ckpttool.graph.export import PARTS

    script = ROOT / "completions" / "ckpttool.bash"

    def complete(*words):
        probe = (f"source {script}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; _ckpttool; "
                 "echo ${COMPREPLY[@]}")
        return subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()

    assert complete("ckpttool", "export-json", "--format", "") == ["json", "pbtxt"]
    assert complete("ckpttool", "export-json", "--part", "") == list(PARTS)
    assert complete("ckpttool", "convert", "a", "b", "--to", "s") == ["safetensors"]
    assert "json pbtxt" in (ROOT / "completions" / "_ckpttool").read_text()


def test_wheel_installs_the_man_page_and_completions(tmp_path):
    """A built wheel carries the man page and the completions where man and the shells look."""
    import zipfile

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("ckpttool-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(n.split("/data/")[0] for n in names if "/data/" in n) + "/data/"
    for installed, source in (("share/man/man1/ckpttool.1", "man/ckpttool.1"),
                              ("share/bash-completion/completions/ckpttool.bash", "completions/ckpttool.bash"),
                              ("share/zsh/site-functions/_ckpttool", "completions/_ckpttool"),
                              ("share/fish/vendor_completions.d/ckpttool.fish", "completions/ckpttool.fish")):
        assert data + installed in names
        assert zipfile.ZipFile(wheel).read(data + installed) == (ROOT / source).read_bytes()
    assert "ckpttool/py.typed" in names


def test_usage_shows_argument_names_plainly():
    assert run_cli("ls", "--help").stdout.splitlines()[0] == "Usage: ckpttool ls [OPTIONS] DIR"
    assert run_cli("diff", "--help").stdout.splitlines()[0] == "Usage: ckpttool diff [OPTIONS] A B"
