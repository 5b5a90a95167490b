"""The generated completions and man page are current, the README's commands
are the ones CI runs, and the shipped sample directory is what TensorFlow reads."""
from __future__ import annotations

import json
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


# -- issue 18 item 14: --help and the man page ------------------------------------------------

def _commands():
    from ckpttool.cli.app import COMMANDS

    return list(COMMANDS)


def test_help_shows_real_metavars():
    """Every option's value is named for what it is (N, REGEX, OLD=NEW, DURATION, the choices),
    never Click's <str>/<int> or the man page's VALUE."""
    for name in _commands():
        text = run_cli(name, "--help").stdout
        assert not re.search(r"<(str|int|float|text)>|\bTEXT\b|\bINTEGER\b|\bFLOAT\b", text), (name, text)
    prune = run_cli("prune", "--help").stdout
    assert re.search(r"--keep-last N\b", prune) and re.search(r"--min-age DURATION\b", prune)
    assert re.search(r"--filter REGEX\b", run_cli("inspect", "--help").stdout)
    assert re.search(r"--map OLD=NEW\b", run_cli("rename-vars", "--help").stdout)
    man = (ROOT / "man" / "ckpttool.1").read_text()
    assert "\\fIVALUE\\fR" not in man
    assert "\\fB\\-\\-keep\\-last\\fR \\fIN\\fR" in man and "\\fIDURATION\\fR" in man
    from ckpttool.graph.export import PARTS

    assert "\\fB\\-\\-part\\fR \\fI" + "|".join(PARTS).replace("_", "_") + "\\fR" in man
    assert "\\fItf|safetensors|npz\\fR" in man and "\\fIjson|pbtxt\\fR" in man


def test_man_page_has_examples_exit_status_and_see_also():
    man = (ROOT / "man" / "ckpttool.1").read_text()
    assert man.count("\nExamples:\n") == len(_commands())
    for section in (".SH EXIT STATUS", ".SH SEE ALSO", ".SH ENVIRONMENT"):
        assert section in man


def test_top_level_command_list_is_never_cut(monkeypatch):
    for width in ("60", "80", "120"):
        monkeypatch.setenv("COLUMNS", width)
        text = run_cli("--help").stdout
        commands = text.split("Commands:")[1]
        assert "..." not in commands and "\u2026" not in commands, text
        for name in _commands():
            assert re.search(rf"^  {re.escape(name)} ", commands, re.M), (name, text)


def test_every_help_example_runs_as_written(tmp_path, monkeypatch):
    """Each command's --help shows examples (so do the man page and its docs page), and each one runs
    as written, in order, on a fresh copy of examples/: exit 0 unless its comment says "(exit N)"."""
    import shlex
    import shutil

    from ckpttool.cli.help_text import EXAMPLES
    from tests.doc_blocks import expected_exit

    for var, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config")):
        monkeypatch.setenv(var, str(tmp_path / sub))  # `completion bash --install` writes here
    for name in _commands():
        text = run_cli(name, "--help").stdout
        assert "Examples:" in text, name
        shutil.copytree(ROOT / "examples", tmp_path / name / "examples")
        monkeypatch.chdir(tmp_path / name)
        for command, comment in EXAMPLES[name]:
            assert command in text, (name, command)
            words = shlex.split(command)
            if words[0] != "ckpttool":  # `source <(ckpttool completion bash)`: the shell's part
                continue
            result = run_cli(*words[1:])
            assert result.exit_code == expected_exit(f"# {comment}"), (command, result.exit_code, result.stderr)
            assert "Traceback" not in result.stderr


def test_export_json_output_says_what_it_wrote(tmp_path):
    """Like every other writer, export-json -o says what it wrote and where."""
    out = tmp_path / "saver.json"
    result = run_cli("export-json", ROOT / "examples" / "run", "--part", "saver", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}: saver as json, "), result.stdout
    assert json.loads(out.read_text())  # the file is what it says
