"""The Python API reference page (docs/python-api/reference.md), generated from the code: every public
name of `ckpttool` (its __all__) with its signature and docstring, every dataclass those return (and
the dataclasses their fields hold), with each field's type and comment, and the error hierarchy with
the exit code the CLI gives each error. scripts/gen_docs.py writes the page; its --check fails in CI
when the page differs from the code, so the reference cannot drift."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize

HEADER = "<!-- Generated from ckpttool's code and docstrings by scripts/gen_docs.py: do not edit. -->"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


# "(ckpttool/formats/partial.py)": module paths, which move, stay out of the reference (the
# docs name them on one page only, the layout page).
_MODULE_PATH = re.compile(r"\s*\((?:ckpttool/)?[\w/]+\.py\)")


def _markdown(text: str) -> str:
    from ckpttool.cli.doc_pages import _text

    return _text(_MODULE_PATH.sub("", text))


def _type(annotation) -> str:
    """An annotation as written, without the quotes of forward references."""
    return str(annotation).replace("'", "").replace('"', "")


def _doc(obj) -> list[str]:
    """A docstring's paragraphs as Markdown, each on one line."""
    doc = inspect.getdoc(obj) or ""
    return [_markdown(" ".join(p.split())) for p in re.split(r"\n\s*\n", doc) if p.strip()]


def _signature(name: str, func) -> str:
    params = []
    star_done = False
    for p in inspect.signature(func).parameters.values():
        if p.name == "self":
            continue
        if p.kind is p.KEYWORD_ONLY and not star_done:
            params.append("*")
            star_done = True
        annotated = p.annotation is not p.empty
        text = p.name + (f": {_type(p.annotation)}" if annotated else "")
        if p.default is not p.empty:
            text += f" = {p.default!r}" if annotated else f"={p.default!r}"
        params.append(text)
    returns = inspect.signature(func).return_annotation
    tail = f" -> {_type(returns)}" if returns is not inspect.Signature.empty else ""
    one_line = f"{name}({', '.join(params)}){tail}"
    if len(one_line) <= 100:
        return one_line
    return f"{name}(\n" + "".join(f"    {p},\n" for p in params) + f"){tail}"


def _type_checking_names(module) -> dict:
    """The names a module imports for type checkers only (`if TYPE_CHECKING:`), imported here."""
    namespace = dict(vars(module))
    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            exec(compile(ast.Module(node.body, []), module.__file__, "exec"), namespace)  # noqa: S102
    return namespace


def _dataclasses_named(annotation: str, namespace: dict) -> list[type]:
    found = []
    for word in _IDENTIFIER.findall(str(annotation)):
        value = namespace.get(word)
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value not in found:
            found.append(value)
    return found


def _comment_lines(source: str) -> dict[int, str]:
    """Comments by line number (`#:` and `#` alike; linters' `noqa` ones left out)."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        text = token.string.lstrip("#:").strip()
        if token.type == tokenize.COMMENT and not text.startswith("noqa"):
            found[token.start[0]] = re.sub(r"\s*noqa:.*$", "", text)
    return found


def _comment_for(node, comments: dict[int, str], lines: list[str]) -> str | None:
    """The comment at the end of a statement's line, else the comment lines just above it."""
    if node.end_lineno in comments:
        return comments[node.end_lineno]
    above = []
    line = node.lineno - 1
    while line >= 1 and lines[line - 1].strip().startswith("#") and line in comments:
        above.insert(0, comments[line])
        line -= 1
    return " ".join(above) or None


def _class_source(cls) -> tuple[ast.ClassDef, dict[int, str], list[str]]:
    source = textwrap.dedent(inspect.getsource(cls))
    return ast.parse(source).body[0], _comment_lines(source), source.splitlines()


def _field_comments(cls) -> dict[str, str]:
    node, comments, lines = _class_source(cls)
    return {f.target.id: text for f in node.body
            if isinstance(f, ast.AnnAssign) and isinstance(f.target, ast.Name)
            and (text := _comment_for(f, comments, lines))}


def _instance_attributes(cls) -> list[tuple[str, str | None, str | None]]:
    """(name, annotation, comment) of the public attributes __init__ sets."""
    node, comments, lines = _class_source(cls)
    init = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    found = []
    for statement in ast.walk(init):
        target = statement.target if isinstance(statement, ast.AnnAssign) else \
            statement.targets[0] if isinstance(statement, ast.Assign) else None
        if isinstance(target, ast.Attribute) and getattr(target.value, "id", None) == "self" \
                and not target.attr.startswith("_"):
            annotation = ast.unparse(statement.annotation) if isinstance(statement, ast.AnnAssign) else None
            found.append((target.attr, annotation, _comment_for(statement, comments, lines)))
    return found


def _properties(cls) -> list[tuple[str, str]]:
    found = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        target = value.fget if isinstance(value, property) else getattr(value, "func", None)
        if target is not None and (isinstance(value, property) or type(value).__name__ == "cached_property"):
            found.append((name, " ".join((inspect.getdoc(target) or "").split())))
    return found


def _dataclass_section(cls) -> list[str]:
    out = [f"### {cls.__name__}", ""]
    if not (inspect.getdoc(cls) or "").startswith(cls.__name__ + "("):  # dataclass' own: the signature
        out += [p + "\n" for p in _doc(cls)]
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        comment = comments.get(f.name)
        out.append(f"- `{f.name}` (`{_type(f.type)}`)" + (f": {_markdown(comment)}" if comment else ""))
    for name, doc in _properties(cls):
        out.append(f"- `{name}` (property)" + (f": {_markdown(doc)}" if doc else ""))
    return out + [""]


def _results(roots: list[type]) -> list[type]:
    """The dataclasses reachable from `roots` through their fields, in the order first met."""
    seen: list[type] = []
    queue = list(roots)
    while queue:
        cls = queue.pop(0)
        if cls in seen:
            continue
        seen.append(cls)
        namespace = vars(sys.modules[cls.__module__])
        for f in dataclasses.fields(cls):
            if not f.name.startswith("_"):
                queue += _dataclasses_named(f.type, namespace)
    return seen


def _errors_section() -> list[str]:
    from ckpttool import errors
    from ckpttool.cli.errors import exit_code_for

    out = ["## Errors", "",
           "Every failure the library expects raises a subclass of `ckpttool.errors.CkptError` (its `message`, and "
           "a `hint` or None); the command line turns each into one `error:` line and the exit code shown.", ""]
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.CkptError)]
    for cls in classes:
        base = cls.__bases__[0].__name__
        code = exit_code_for(cls("x")) if cls is not errors.CkptError else None
        where = f" (a `{base}`)" if cls is not errors.CkptError else ""
        exit_text = f" Exit code {code}." if code is not None else ""
        out.append(f"- `{cls.__name__}`{where}: {' '.join(_doc(cls))}{exit_text}")
    return out + [""]


def reference_page() -> str:
    import ckpttool
    from ckpttool import api

    public = sorted(ckpttool.__all__, key=lambda name: inspect.getsourcelines(getattr(api, name))[1])
    functions = [n for n in public if inspect.isfunction(getattr(api, n))]
    classes = [n for n in public if inspect.isclass(getattr(api, n))]
    namespace = _type_checking_names(api)
    out = [HEADER, "# Python API reference", "",
           "Every public name of `ckpttool` (`ckpttool.__all__`), the results they return and the errors they "
           "raise, generated from the code. For a tour, see [the Python API guide](index.md).", "",
           "## Functions", ""]
    returned: list[type] = []
    for name in functions:
        func = getattr(api, name)
        out += [f"### ckpttool.{name}", "", "```text", _signature(f"ckpttool.{name}", func), "```", ""]
        out += [p + "\n" for p in _doc(func)]
        returned += _dataclasses_named(inspect.signature(func).return_annotation, namespace)
    out += ["## Classes", ""]
    for name in classes:
        cls = getattr(api, name)
        out += [f"### ckpttool.{name}", ""]
        if dataclasses.is_dataclass(cls):
            out += _dataclass_section(cls)[2:]
            continue
        out += ["```text", _signature(f"ckpttool.{name}", cls.__init__), "```", ""]
        out += [p + "\n" for p in _doc(cls)]
        for attr, annotation, comment in _instance_attributes(cls):
            out.append(f"- `{attr}`" + (f" (`{annotation}`)" if annotation else "")
                       + (f": {_markdown(comment)}" if comment else ""))
        out.append("")
        for method_name, method in inspect.getmembers(cls, inspect.isfunction):
            if not method_name.startswith("_"):
                out += [f"#### {name}.{method_name}", "", "```text", _signature(method_name, method), "```", ""]
                out += [p + "\n" for p in _doc(method)]
    out += ["## Results", "", "The frozen dataclasses the functions return, and those their fields hold.", ""]
    for cls in _results(returned):
        out += _dataclass_section(cls)
    out += _errors_section()
    return "\n".join(line.rstrip() for line in "\n".join(out).rstrip().splitlines()) + "\n"
