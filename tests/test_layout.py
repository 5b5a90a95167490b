"""The layering of README's "Layout" section, checked on every import in the package (function-level
imports included, since the lazy ones are how the fast paths stay fast):

    cli -> ops -> formats -> storage     (graph/ beside them, the only importer of TensorFlow)

storage knows no format and no job; formats know no job, no CLI and no graph runtime; ops never print
(no cli); nothing but graph/ imports tensorflow; the cli package has no import circle."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ckpttool"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (`from a import b` counts a and a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_tree_has_the_documented_folders():
    for folder in ("cli", "ops", "formats", "formats/tf", "formats/tf/protos", "storage", "graph"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    assert not list((PACKAGE / "formats").glob("fs.py")), "the storage seam lives in storage/"


STDLIB = set(sys.stdlib_module_names)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, "ckpttool.storage")))
def test_storage_imports_only_the_standard_library_errors_and_text(module):
    allowed_ours = ("ckpttool.errors", "ckpttool.text", "ckpttool.storage")
    allowed_backends = ("fsspec",)  # the URL half of the seam, imported only for URLs
    for name in MODULES[module]:
        top = name.split(".")[0]
        if top == "ckpttool":
            assert any(_in(name, ok) for ok in allowed_ours), f"{module} imports {name}"
        else:
            assert top in STDLIB or top in allowed_backends or top == "__future__", f"{module} imports {name}"


@pytest.mark.parametrize("layer, forbidden", [
    ("ckpttool.formats", ("ckpttool.ops", "ckpttool.cli", "ckpttool.graph", "ckpttool.api")),
    ("ckpttool.ops", ("ckpttool.cli",)),
    ("ckpttool.storage", ("ckpttool.formats", "ckpttool.ops", "ckpttool.cli", "ckpttool.graph")),
])
def test_imports_flow_one_way(layer, forbidden):
    wrong = sorted(f"{module} imports {name}" for module, names in MODULES.items() if _in(module, layer)
                   for name in names if any(_in(name, bad) for bad in forbidden))
    assert not wrong, wrong


def test_only_graph_imports_tensorflow():
    wrong = sorted(module for module, names in MODULES.items()
                   if not _in(module, "ckpttool.graph") and any(_in(n, "tensorflow") for n in names))
    assert not wrong, wrong


def test_the_cli_has_no_import_circle():
    cli = {m: {n for n in names if n in MODULES and _in(n, "ckpttool.cli")} - {m}
           for m, names in MODULES.items() if _in(m, "ckpttool.cli")}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for nxt in cli.get(current, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    circles = sorted(m for m in cli if reaches(m, m) and not m.endswith(("cli", "cli.commands")))
    assert not circles, circles
