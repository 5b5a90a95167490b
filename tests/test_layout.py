"""The layering of docs/reference/layout.md, checked on every import in the package (function-level
and type-checking imports included, since the lazy ones are how the fast paths stay fast):

    cli -> ops -> formats -> storage     (graph/ beside them, the only importer of TensorFlow)

and inside ops/: ops.runs (run directories over time) <- ops.retention (what prune keeps) <- ops.tensors
(what happens to tensors), with the shared modules at the top of ops/ (targets, destinations) between
ops.runs and the rest. storage knows no format and no job; formats know no job, no CLI and no graph
runtime; ops never print (no cli); no module below the CLI imports the package's API (`ckpttool`
itself: the version lives in ckpttool.version); nothing but graph/ imports tensorflow; no import
circle anywhere. The checks are plain functions over an import graph, shown on graphs made to break
them (a circle, a wrong-way import) as well as run on the package."""
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


def our_graph(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """module -> the modules of ours it imports (a package's own __init__ is not an edge of its modules:
    Python has loaded it before them)."""
    return {m: {n for n in names if n in modules and n != m and not _in(m, n)} for m, names in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected components of more than one module
    (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


# Which packages each layer must never import. A module of ops/ at its top (targets, destination,
# fetch, patterns) is "ckpttool.ops" here: shared by every job, it may use ops.runs only.
OPS_TOP = ("ckpttool.ops.destination", "ckpttool.ops.fetch", "ckpttool.ops.patterns", "ckpttool.ops.targets")
FORBIDDEN = {
    "ckpttool.storage": ("ckpttool.formats", "ckpttool.ops", "ckpttool.cli", "ckpttool.graph", "ckpttool.api"),
    "ckpttool.formats": ("ckpttool.ops", "ckpttool.cli", "ckpttool.graph", "ckpttool.api"),
    "ckpttool.formats.keras": ("ckpttool.formats.tf",),
    "ckpttool.formats.tf": ("ckpttool.formats.keras",),
    "ckpttool.ops": ("ckpttool.cli",),
    "ckpttool.ops.runs": ("ckpttool.ops.retention", "ckpttool.ops.tensors", *OPS_TOP),
    "ckpttool.ops.retention": ("ckpttool.ops.tensors", *OPS_TOP),
    **{top: ("ckpttool.ops.retention", "ckpttool.ops.tensors") for top in OPS_TOP},
    "ckpttool.graph": ("ckpttool.cli",),
}


def wrong_way(modules: dict[str, set[str]], forbidden: dict[str, tuple[str, ...]]) -> list[str]:
    """`A imports B` for every import of a layer's module that its rules forbid."""
    return sorted(f"{module} imports {name}" for module, names in modules.items()
                  for layer, bad in forbidden.items() if _in(module, layer)
                  for name in names if any(_in(name, b) for b in bad))


def up_to_the_api(modules: dict[str, set[str]]) -> list[str]:
    """Modules below the CLI that import the package itself (its __init__ loads the API, which loads
    every job): they take what they need from a module below (ckpttool.version, errors, text)."""
    below = ("ckpttool.ops", "ckpttool.formats", "ckpttool.storage", "ckpttool.graph")
    return sorted(f"{module} imports ckpttool" for module, names in modules.items()
                  if any(_in(module, b) for b in below) and "ckpttool" in names)


def test_the_checks_find_what_they_look_for():
    made = {
        "ckpttool.ops.runs.scan": {"ckpttool.ops.tensors.convert"},  # wrong way, and a circle
        "ckpttool.ops.tensors.convert": {"ckpttool.ops.runs.scan", "ckpttool"},  # an arrow up
        "ckpttool.formats.a": {"ckpttool.formats.b"},
        "ckpttool.formats.b": {"ckpttool.formats.c"},
        "ckpttool.formats.c": {"ckpttool.formats.a"},  # a circle through three
        "ckpttool.storage.fs": {"ckpttool.storage.remote"},  # fine
        "ckpttool.storage.remote": set(),
        "ckpttool": set(),
    }
    assert sorted(circles(our_graph(made))) == [
        ["ckpttool.formats.a", "ckpttool.formats.b", "ckpttool.formats.c"],
        ["ckpttool.ops.runs.scan", "ckpttool.ops.tensors.convert"]]
    assert wrong_way(made, FORBIDDEN) == ["ckpttool.ops.runs.scan imports ckpttool.ops.tensors.convert"]
    assert up_to_the_api(made) == ["ckpttool.ops.tensors.convert imports ckpttool"]
    del made["ckpttool.formats.c"]
    made["ckpttool.ops.runs.scan"] = set()
    made["ckpttool.ops.tensors.convert"] = {"ckpttool.ops.runs.scan", "ckpttool.version"}
    assert circles(our_graph(made)) == []
    assert wrong_way(made, FORBIDDEN) == [] and up_to_the_api(made) == []


def test_the_tree_has_the_documented_folders():
    for folder in ("cli", "ops", "ops/runs", "ops/retention", "ops/tensors", "formats", "formats/keras", "formats/tf",
                   "formats/tf/protos", "storage", "graph"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    assert not list((PACKAGE / "formats").glob("fs.py")), "the storage seam lives in storage/"
    assert not list((PACKAGE / "formats").glob("keras*.py")), "Keras files are read in formats/keras/"


def test_no_folder_holds_more_than_fifteen_modules():
    for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir() and (p / "__init__.py").is_file())]:
        if folder.name == "protos":
            continue  # generated protobuf modules beside their .proto files
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 15, f"{folder.relative_to(PACKAGE.parent)}: {len(modules)} modules"


def test_each_package_says_what_lives_there_and_what_it_may_import():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(PACKAGE.parent)} has no docstring"


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


def test_imports_flow_one_way():
    assert wrong_way(MODULES, FORBIDDEN) == []


def test_nothing_below_the_cli_imports_the_api():
    assert up_to_the_api(MODULES) == []


def test_no_import_circle_anywhere():
    assert circles(our_graph(MODULES)) == []


def test_only_graph_imports_tensorflow():
    wrong = sorted(module for module, names in MODULES.items()
                   if not _in(module, "ckpttool.graph") and any(_in(n, "tensorflow") for n in names))
    assert not wrong, wrong
