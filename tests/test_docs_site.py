"""The docs site (issue 25): a generated page per command holding every option, argument, JSON field,
exit code and example of the app; JSON fields exactly what each command prints; a README of at most
250 lines; every page in the nav; `mkdocs build --strict` green."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli

README_MAX_LINES = 250


def _generated() -> dict:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generated()


def _commands() -> dict:
    import typer

    from ckpttool.cli.app import app

    return typer.main.get_command(app).commands


def test_a_generated_page_per_command():
    """docs/commands/ holds one page per command of the app (and an index), all written by
    scripts/gen_docs.py, so its --check (tests/test_docs.py) fails when one is stale."""
    pages = {path.relative_to(ROOT).as_posix() for path in _generated()}
    expected = {f"docs/commands/{name}.md" for name in _commands()} | {"docs/commands/index.md"}
    assert expected <= pages
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "commands").glob("*.md")}
    assert on_disk == expected  # no page left behind by a command that is gone


def test_command_pages_hold_every_option_and_the_reference():
    from ckpttool.cli.help_text import EXAMPLES
    from ckpttool.cli.reference import OUTPUT, exit_codes

    for name, command in _commands().items():
        page = (ROOT / "docs" / "commands" / f"{name}.md").read_text()
        text = " ".join(re.sub(r"\\(.)", r"\1", page.replace("&lt;", "<")).split())  # as Markdown shows it
        for param in command.params:
            if param.param_type_name == "argument":
                assert f"`{(param.metavar or param.name).upper()}`" in page, (name, param.name)
                continue
            for opt in list(param.opts) + list(param.secondary_opts):
                assert f"`{opt}" in page, (name, opt)
            for choice in getattr(param.type, "choices", None) or ():
                assert str(getattr(choice, "value", choice)) in page, (name, param.name, choice)
            if param.metavar:
                assert param.metavar in page, (name, param.metavar)
            first_words = " ".join((param.help or "").split()[:4])
            assert first_words in text, (name, param.name, first_words)
        for document in OUTPUT[name]:
            for field in document.fields:
                assert f"`{field.name}`" in page, (name, field.name)
        for code, meaning in exit_codes(name):
            assert f"`{code}`" in page and " ".join(meaning.split()[:3]) in text, (name, code)
        for example, _comment in EXAMPLES[name]:
            assert example in page, (name, example)


# -- the JSON fields of every command, as they print them -------------------------------------

def _keys(doc: dict, document, conditions: set[str]) -> None:
    """The document's top-level fields are exactly those documented for these conditions; every
    object of a documented list holds its unconditional fields and nothing undocumented."""
    from ckpttool.cli.reference import COMMON

    expected = [f.name for f in COMMON] + [f.name for f in document.fields
                                           if f.when is None or f.when in conditions]
    assert list(doc) == expected, (doc.get("command"), conditions)
    for field in document.fields:
        value = doc.get(field.name)
        objects = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        for item in objects:
            if not field.items or not isinstance(item, dict):
                continue
            documented = {f.name for f in field.items}
            required = {f.name for f in field.items if f.when is None}
            assert required <= set(item) <= documented, (doc.get("command"), field.name, set(item) ^ documented)


def _document_for(name: str, args: list[str], conditions: set[str]):
    from ckpttool.cli.reference import OUTPUT

    documents = OUTPUT[name]
    return next((d for d in documents[1:] if d.when in conditions or d.when in args), documents[0])


# (command, arguments, conditions besides the options given)
JSON_CASES = [
    ("ls", ["examples/run"], ()),
    ("ls", ["examples/run", "--metric", "loss", "--metrics", "metrics.csv"], ()),
    ("ls", ["--recursive", "examples"], ()),
    ("ls", ["--recursive", "--summary", "--keep-last", "1", "--metric", "loss", "--metrics", "metrics.csv", "examples"],
     ("a rule option",)),
    ("ls", ["KERAS"], ()),
    ("latest", ["examples/run"], ()),
    ("latest", ["examples/run", "--best", "--metric", "loss", "--metrics", "metrics.csv"], ()),
    ("inspect", ["examples/run"], ()),
    ("inspect", ["examples/run", "--stats", "--slices"], ()),
    ("inspect", ["examples/run", "--values", "--limit", "100"], ()),
    ("inspect", ["examples/run", "--meta"], ()),
    ("inspect", ["model.safetensors", "--meta"], ("--meta of a .safetensors or Keras file",)),
    ("verify", ["examples/run"], ()),
    ("verify", ["--all", "examples/run"], ()),
    ("verify", ["--recursive", "examples"], ("--all",)),
    ("verify", ["--manifest", "run.manifest.json", "examples/run"], ()),
    ("manifest", ["examples/run"], ()),
    ("manifest", ["examples/run", "--output", "other.manifest.json"], ()),
    ("diff", ["examples/run/model.ckpt-400", "examples/run"], ()),
    ("diff", ["--by-hash", "examples/run/model.ckpt-400", "examples/run"], ()),
    ("inspect", ["examples/run", "--hash"], ()),
    ("prune", ["--dry-run", "--keep-last", "2", "examples/run"], ()),
    ("prune", ["--dry-run", "--keep-last", "1", "--metric", "loss", "--metrics", "metrics.csv", "examples/run"], ()),
    ("prune", ["--recursive", "--dry-run", "--keep-last", "2", "examples"], ()),
    ("prune", ["--recursive", "--dry-run", "--budget", "1GB", "--drop-failed-runs", "7d", "examples"], ()),
    ("prune", ["--keep-last", "2", "--yes", "pruned"], ()),
    ("prune", ["--policy", "examples/retention.toml", "--dry-run"], ()),
    ("policy", ["check", "examples/retention.toml"], ()),
    ("repair", ["--dry-run", "examples/run"], ()),
    ("rename-vars", ["examples/run", "renamed/model.ckpt-1", "--add-prefix", "x/"], ()),
    ("convert", ["examples/run", "converted.npz"], ()),
    ("convert", ["KERAS_FILE", "like.weights.h5", "--like", "KERAS_FILE"], ()),
    ("average", ["examples/run", "--last", "2", "-o", "avg.safetensors"], ()),
    ("freeze", ["examples/run", "-o", "frozen.pb", "--output-nodes", "prediction"], ()),
    ("export-json", ["examples/run", "--part", "saver"], ()),
    ("export-json", ["examples/run", "--part", "saver", "--output", "saver.json"], ()),
    ("watch", ["--once", "--since", "500", "examples/run"], ()),
    ("watch", ["--once", "--since", "500", "--state", "w.json", "--exec", "true", "examples/run"], ("done or failed",)),
    ("completion", ["bash"], ()),
    ("completion", ["bash", "--install"], ()),
]


def test_every_command_is_documented_by_a_json_case():
    assert {name for name, _args, _extra in JSON_CASES} == set(_commands())


def test_json_fields_are_exactly_what_each_command_prints(tmp_path, monkeypatch, series_dir):
    """Each command run with --json on real checkpoints (the shipped examples, Keras ModelCheckpoint
    files written by Keras) prints exactly the top-level fields cli/reference.py documents for it."""
    from ckpttool.cli.reference import OUTPUT

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "examples" / "run", tmp_path / "pruned")
    keras_dir = tmp_path / "keras"
    keras_dir.mkdir()
    for checkpoint in sorted((series_dir / "keras" / "ckpt").glob("*.weights.h5")):
        shutil.copy(checkpoint, keras_dir)
    keras_file = sorted(keras_dir.glob("*.weights.h5"))[-1]
    (tmp_path / "metrics.csv").write_text("step,loss\n300,0.5\n400,0.2\n500,0.3\n")
    monkeypatch.chdir(tmp_path)
    for var, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    assert run_cli("convert", "examples/run", "model.safetensors").exit_code == 0
    assert run_cli("manifest", "examples/run", "-o", "run.manifest.json").exit_code == 0
    places = {"KERAS": str(keras_dir), "KERAS_FILE": str(keras_file)}
    for name, args, extra in JSON_CASES:
        args = [places.get(a, a) for a in args]
        result = run_cli(name, *args, "--json")
        assert result.exit_code == (1 if name == "diff" else 0), (name, args, result.stderr)  # they differ
        conditions = {a for a in args if a.startswith("--")} | set(extra)
        if name == "ls" and args == [str(keras_dir)]:
            conditions.add("series members")
        _keys(json.loads(result.stdout), _document_for(name, args, conditions), conditions)
    assert set(OUTPUT) == set(_commands())


def test_a_failing_command_prints_the_documented_error_document():
    from ckpttool.cli.reference import COMMON, ERROR

    result = run_cli("ls", "no-such-directory", "--json")
    assert result.exit_code == 3
    _keys(json.loads(result.stdout), ERROR, set())
    assert [f.name for f in COMMON] == ["schema_version", "command"]


def test_documented_exit_codes_are_the_contracts():
    from ckpttool.cli.reference import EXIT_CODES, EXIT_STATUS

    known = {code for code, _meaning in EXIT_STATUS}
    assert set(EXIT_CODES) == set(_commands())
    for name, codes in EXIT_CODES.items():
        assert {code for code, _meaning in codes} <= known, name
        assert codes[0][0] == "0", name


# -- README and the site -----------------------------------------------------------------------

def test_readme_is_at_most_250_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, len(lines)


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_docs_page_is_in_the_nav():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = _nav_pages(config["nav"])
    on_disk = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(in_nav) == on_disk
    commands = [p for p in in_nav if p.startswith("commands/") and p != "commands/index.md"]
    assert commands == [f"commands/{name}.md" for name in _commands()]  # in the app's order


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "commands" / "prune" / "index.html").exists()


LAYOUT_PAGE = "docs/reference/layout.md"  # the one page that names the package's modules


def test_docs_name_no_internal_module_paths():
    """Modules move (issue 25 splits ops/ and formats/): only the layout page names them."""
    module_path = re.compile(r"\b(?:ckpttool/)?(?:cli|ops|formats|storage|graph)/[\w/]*\w+\.py\b|\bckpttool\.(?:ops|formats|storage|cli)\.")
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    named = {p.relative_to(ROOT).as_posix(): module_path.findall(p.read_text()) for p in pages
             if p.relative_to(ROOT).as_posix() != LAYOUT_PAGE}
    assert not {page: found for page, found in named.items() if found}


def test_api_reference_names_every_public_function_and_error():
    import ckpttool
    import ckpttool.errors as errors

    page = (ROOT / "docs" / "python-api" / "reference.md").read_text()
    for name in ckpttool.__all__:
        assert re.search(rf"^#+ `?ckpttool\.{re.escape(name)}\b", page, re.M), name
    for name, value in vars(errors).items():
        if isinstance(value, type) and issubclass(value, errors.CkptError):
            assert f"`{name}`" in page, name
