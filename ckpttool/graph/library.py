"""Checks of a graph's function library, made before TensorFlow sees the graph.

TensorFlow follows function calls without a bound: a function that calls
itself, directly or through others (as an op, or through a function-valued
attribute such as PartitionedCall's `f` or While's `body`), makes it recurse
until the process dies of a stack overflow (SIGSEGV, no message). Such a
library is refused first, with one line naming the cycle.
"""
from __future__ import annotations

from ckpttool.errors import BadInput


def _calls(node, names: set[str]) -> set[str]:
    """The library functions `node` calls: as its op, or through a func / list(func) attribute."""
    called = {node.op}
    for value in node.attr.values():
        kind = value.WhichOneof("value")
        if kind == "func":
            called.add(value.func.name)
        elif kind == "list":
            called.update(f.name for f in value.list.func)
    return called & names


def refuse_recursive_functions(graph_def, source: str) -> None:
    """BadInput (exit 3) if a function of `graph_def`'s library reaches itself through its calls
    (a function's gradient function counts as called by it)."""
    library = graph_def.library
    names = {function.signature.name for function in library.function}
    calls: dict[str, set[str]] = {name: set() for name in names}
    for function in library.function:
        for node in function.node_def:
            calls[function.signature.name] |= _calls(node, names)
    for gradient in library.gradient:
        if gradient.function_name in calls and gradient.gradient_func in names:
            calls[gradient.function_name].add(gradient.gradient_func)
    done: set[str] = set()
    for root in sorted(names):
        if root in done:
            continue
        path, on_path = [root], {root}
        pending = [iter(sorted(calls[root]))]  # depth first without Python recursion: a library may be deep
        while pending:
            callee = next(pending[-1], None)
            if callee is None:
                done.add(path[-1])
                on_path.discard(path.pop())
                pending.pop()
            elif callee in on_path:
                cycle = path[path.index(callee):] + [callee]
                raise BadInput(f"{source}: function {callee!r} calls itself ({' -> '.join(cycle)}); TensorFlow "
                               "would recurse without end, so the graph is refused (recursive function library)")
            elif callee not in done:
                path.append(callee)
                on_path.add(callee)
                pending.append(iter(sorted(calls[callee])))
