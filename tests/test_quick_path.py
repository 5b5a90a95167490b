"""The quick path (cli/quick.py: `latest`, `inspect`, `verify`, `ls` and `convert` in their common forms, parsed without Typer)
answers exactly as the Typer app does: the same stdout, stderr and exit code for each command line
it takes, good and bad, compared in this process and as whole processes; it takes nothing Typer
refuses (it leaves every other command line to Typer); each flag it knows is that flag of the Typer
command; and its runs import neither Typer nor Rich (nor numpy)."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest

from tests.conftest import run_cli

# {name}: a path under the session's fixtures; {tmp}: under the test's own directory.
QUICK_FORMS = [
    ["latest", "{saver_run}"],
    ["latest", "--json", "{saver_run}"],
    ["latest", "{saver_run}", "--step"],
    ["latest", "--absolute", "--complete", "{saver_run}"],
    ["latest", "--step", "{tf2_manager}"],
    ["latest", "--absolute", "--step", "{saver_run}"],  # a usage error the body finds
    ["latest", "--json", "--absolute", "--step", "{saver_run}"],  # the same, with its JSON document
    ["latest", "{tmp}/missing"],
    ["latest", "--json", "{tmp}/missing"],
    ["latest", "{tmp}/empty"],  # no checkpoint: exit 1
    ["latest", "--json", "--complete", "{tmp}/empty"],
    ["latest", "{tmp}/notes.txt"],  # a file, not a directory
    ["latest", "{tmp}/moved"],  # a copied run: the answer with a warning
    ["--debug", "latest", "{saver_run}"],
    ["latest", "{saver_run}", "--no-color", "--debug"],
    ["inspect", "{saver_run}"],  # the table (Rich, loaded by the body when it prints one)
    ["inspect", "--json", "{saver_run}"],
    ["inspect", "-q", "{saver_run}/model.ckpt-30"],
    ["inspect", "--quiet", "--all", "{tf2_manager}"],
    ["inspect", "--json", "-a", "--slices", "{partitioned}"],
    ["inspect", "--json", "{every_dtype}/dtypes"],
    ["inspect", "{tmp}/missing"],
    ["inspect", "--stats", "{every_dtype}/dtypes"],  # the table with statistics
    ["inspect", "--json", "--stats", "{saver_run}"],
    ["inspect", "--stats", "{tmp}/damaged"],  # a checksum mismatch: exit 3
    ["inspect", "--json", "{tmp}/notes.txt"],  # not a checkpoint
    ["verify", "{saver_run}"],  # an empty table of problems, then the verdict
    ["verify", "--json", "{sharded}"],
    ["verify", "-q", "{saver_run}/model.ckpt-30"],
    ["verify", "{tmp}/damaged"],  # a flipped byte: exit 1, the table of problems
    ["verify", "--json", "{tmp}/damaged"],
    ["verify", "--quiet", "{tmp}/damaged"],
    ["verify", "--all", "{saver_run}"],
    ["verify", "-a", "--json", "{tmp}/damaged"],
    ["verify", "-q", "-a", "{tmp}/damaged"],
    ["verify", "-r", "{tmp}"],  # damaged/, moved/ and the empty directory under one root
    ["verify", "--recursive", "--json", "{tmp}"],
    ["verify", "--all", "{tmp}/notes.txt"],  # not a directory
    ["verify", "{tmp}/missing"],
    ["verify", "--json", "{tmp}/notes.txt"],
    ["verify", "--graph", "{saver_run}"],  # no graph there
    ["verify", "{saver_run}", "--debug", "--no-color"],
    ["ls", "{saver_run}"],  # the table
    ["ls", "--json", "{saver_run}"],
    ["ls", "-q", "{tf2_manager}"],
    ["ls", "--json", "-r", "{tmp}"],  # damaged/, moved/ (a stale state file) and the empty directory
    ["ls", "--recursive", "{tmp}"],
    ["ls", "--json", "{tmp}/empty"],
    ["ls", "{tmp}/empty"],  # no checkpoints: the hint
    ["ls", "{tmp}/missing"],
    ["ls", "--json", "{tmp}/notes.txt"],  # not a directory
    ["ls", "--quiet", "--json", "{tmp}/moved"],
    ["convert", "{saver_run}", "{tmp}/out.safetensors", "--overwrite"],
    ["convert", "--json", "{saver_run}", "{tmp}/out.safetensors", "--overwrite", "--dtype", "bfloat16"],
    ["convert", "-q", "--dry-run", "{saver_run}/model.ckpt-30", "{tmp}/out.npz", "--to", "npz"],
    ["convert", "{saver_run}", "{tmp}/out/model.ckpt-30", "--overwrite", "--no-update-state", "--strict"],
    ["convert", "--json", "-n", "{saver_run}", "{tmp}/t.safetensors", "--transpose", "kernel=1,0", "--layout", "torch"],
    ["convert", "--json", "-n", "{saver_run}", "{tmp}/t.safetensors", "--transpose", "(=1,0"],  # a bad pattern
    ["convert", "{saver_run}", "{tmp}/out.h5"],  # a usage error the body finds
    ["convert", "--json", "{tmp}/missing", "{tmp}/out.safetensors"],
]

# Forms left to Typer: help, completion, anything the quick parser does not list, and mistakes.
TYPER_FORMS = [
    [], ["--help"], ["-h"], ["--version"], ["latest"], ["latest", "--help"], ["latest", "-h"], ["inspect"],
    ["latest", "--bogus", "D"], ["latest", "D", "E"], ["latest", "--json=1", "D"], ["latest", "--", "D"],
    ["latest", "--json", "--json", "D"], ["latest", ""], ["latest", "-"], ["latest", "-x", "D"],
    ["latest", "--best", "--metric", "loss", "D"], ["latest", "--metric=loss", "D"], ["inspect", "--tree", "D"],
    ["inspect", "--stats", "--stats", "D"], ["inspect", "-qa", "D"], ["inspect", "--filter", "x", "D"], ["ls", "--summary", "D"], ["ls", "--sort", "step", "D"],
    ["ls", "--metric", "loss", "D"], ["ls", "-rq", "D"], ["ls", "--keep-last", "5", "D"], ["ls"], ["ls", "--help"],
    ["verify"], ["verify", "--help"], ["verify", "-ar", "D"], ["verify", "--manifest", "M", "D"], ["verify", "-m", "M", "D"],
    ["verify", "--tensors", "D"], ["verify", "--ignore-names", "D"], ["verify", "-a", "-a", "D"], ["--storage-option", "a=b", "latest", "D"], ["--debug", "--debug", "latest", "D"],
    ["Latest", "D"], ["--no-colour", "latest", "D"], ["latest", "--jso", "D"],
    ["convert", "S"], ["convert", "S", "D", "E"], ["convert", "S", "D", "--dtype", "int8"],
    ["convert", "S", "D", "--dtype=bfloat16"], ["convert", "S", "D", "--dtype"], ["convert", "S", "D", "--to", "-q"],
    ["convert", "S", "D", "--transpose", "a=1,0", "--transpose", "b=1,0"], ["convert", "S", "D", "--map", "a=b"],
    ["convert", "S", "D", "--dtype", "bfloat16", "--dtype", "float16"], ["convert", "S", "D", "--transpose", ""],
    ["convert", "--help"], ["convert", "S", "D", "-h"],
]


@pytest.fixture
def paths(fixtures_dir, tmp_path) -> dict[str, str]:
    import shutil

    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    shutil.copytree(fixtures_dir / "saver_run", tmp_path / "moved")  # its state file names the original
    shutil.copytree(fixtures_dir / "saver_run", tmp_path / "damaged")
    for data in (tmp_path / "damaged").glob("*.data-*"):  # a byte flipped in every shard: a CRC mismatch each
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    names = ("saver_run", "tf2_manager", "partitioned", "every_dtype", "sharded")
    return {"tmp": str(tmp_path), **{name: str(fixtures_dir / name) for name in names}}


def _argv(form: list[str], paths: dict[str, str]) -> list[str]:
    return [arg.format(**paths) for arg in form]


def _quick(argv: list[str]):
    """Run `argv` through the quick path in this process: (exit code, stdout, stderr)."""
    from ckpttool.cli import quick

    form = quick.parse(quick.hoist_global_flags(argv))
    assert form is not None, f"the quick path does not take {argv}"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = quick.run(form)
    return code, out.getvalue(), err.getvalue()


def test_quick_path_answers_as_typer_does(paths):
    for form in QUICK_FORMS:
        argv = _argv(form, paths)
        typer = run_cli(*argv)
        assert _quick(argv) == (typer.exit_code, typer.stdout, typer.stderr), argv


@pytest.mark.parametrize("form", TYPER_FORMS, ids=" ".join)
def test_the_rest_is_left_to_typer(form):
    from ckpttool.cli import quick

    assert quick.parse(quick.hoist_global_flags(form)) is None


def test_a_completion_request_is_left_to_typer(monkeypatch):
    from ckpttool.cli import quick

    monkeypatch.setenv("_CKPTTOOL_COMPLETE", "bash_complete")
    assert quick.parse(["latest", "D"]) is None


def test_each_quick_flag_is_that_flag_of_the_typer_command():
    import typer.main

    from ckpttool.cli.app import app
    from ckpttool.cli.quick import FORMS

    group = typer.main.get_command(app)
    for name, (positionals, flags, values) in FORMS.items():
        params = group.commands[name].params
        arguments = [p.name for p in params if p.param_type_name == "argument"]
        assert arguments == list(positionals), name
        options = {opt: p for p in params if p.param_type_name == "option" for opt in p.opts + p.secondary_opts}
        for flag, keyword in flags.items():
            option = options[flag]
            assert option.is_flag and not option.secondary_opts and option.name == keyword, (name, flag)
        for flag, (keyword, choices) in values.items():
            option = options[flag]
            assert not option.is_flag and option.name == keyword, (name, flag)
            assert tuple(getattr(option.type, "choices", None) or ()) == tuple(choices or ()), (name, flag)


TYPER_PROBE = "import sys\nfrom ckpttool.cli.app import main\nmain(sys.argv[1:])\n"


@pytest.mark.parametrize("form", [["latest", "{saver_run}"], ["inspect", "--json", "{saver_run}"],
                                  ["latest", "--json", "--absolute", "--step", "{saver_run}"],
                                  ["verify", "{tmp}/damaged"], ["verify", "--json", "-a", "{tmp}/damaged"],
                                  ["ls", "--json", "{saver_run}"], ["ls", "-r", "{tmp}"]],
                         ids=" ".join)
def test_whole_processes_answer_as_typer_does(paths, form):
    argv = _argv(form, paths)
    quick = subprocess.run([sys.executable, "-m", "ckpttool", *argv], capture_output=True, text=True)
    typer = subprocess.run([sys.executable, "-c", TYPER_PROBE, *argv], capture_output=True, text=True)
    assert (quick.returncode, quick.stdout, quick.stderr) == (typer.returncode, typer.stdout, typer.stderr)


IMPORT_PROBE = """
import sys
from ckpttool.cli.entry import main
try:
    main()
except SystemExit:
    pass
loaded = sorted(({m.split(".")[0] for m in sys.modules} & {"typer", "click", "rich", "numpy"})
                | (set(sys.modules) & {"ckpttool.formats.pytorch", "ckpttool.ops.tensors.verify"}))
print("LOADED:" + ",".join(loaded), file=sys.stderr)
"""


@pytest.mark.parametrize("form", [["latest", "{saver_run}"], ["latest", "--json", "--complete", "{tmp}/empty"],
                                  ["inspect", "--json", "{tf2_manager}"], ["inspect", "-q", "{saver_run}"],
                                  ["verify", "{saver_run}"], ["verify", "--json", "-a", "{sharded}"],
                                  ["verify", "-q", "{tmp}/damaged"], ["convert", "{saver_run}", "{tmp}/out.safetensors"],
                                  ["ls", "--json", "{saver_run}"], ["ls", "-q", "{tmp}/damaged"]],
                         ids=" ".join)
def test_hot_commands_import_neither_typer_nor_rich(paths, form):
    """Nor numpy, nor (for a TF checkpoint) the PyTorch readers; nor the verifier, but to verify (convert
    into safetensors moves the stored bytes)."""
    proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *_argv(form, paths)], capture_output=True, text=True)
    expected = "ckpttool.ops.tensors.verify" if form[0] == "verify" else ""
    assert proc.stderr.endswith(f"LOADED:{expected}\n"), proc.stderr[-2000:]
