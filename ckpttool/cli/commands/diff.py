"""`ckpttool diff A B`: what differs between two checkpoints. Exit 1 when they differ."""
from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE
from ckpttool.cli.options import GraphOpt, Json, MinElements, Naming, NamesOpt, Quiet


_CHECKPOINT_HELP = "A checkpoint (prefix, file, run directory or SavedModel)."
TargetA = Annotated[str, typer.Argument(metavar="A", help=_CHECKPOINT_HELP, show_default=False)]
TargetB = Annotated[str, typer.Argument(metavar="B", help=_CHECKPOINT_HELP, show_default=False)]


_COLUMNS = [render.Column("name", kind=render.NAME), render.Column("change"),
            render.Column("detail", kind=render.TEXT)]


def _detail(d) -> str:
    if d.change == "added":
        return f"{d.b_dtype} {list(d.b_shape)}"
    if d.change == "removed":
        return f"{d.a_dtype} {list(d.a_shape)}"
    if d.change in ("dtype", "shape"):
        return f"{d.a_dtype} {list(d.a_shape)} -> {d.b_dtype} {list(d.b_shape)}"
    if d.mismatched is None:  # --by-hash: the digests say that, not where
        return f"sha256 {d.a_sha256[:12]}... -> {d.b_sha256[:12]}..."
    exact = isinstance(d.max_abs_diff, int)  # integer dtypes: the difference itself, not rounded
    max_abs = f"{d.max_abs_diff}" if exact else f"{d.max_abs_diff:.6g}"
    numeric = "" if d.max_abs_diff is None else f", max abs {max_abs}, max rel {d.max_rel_diff:.6g}"
    verb = "differs" if d.mismatched == 1 else "differ"
    return f"{render.plural(d.mismatched, 'element')} {verb}{numeric}"


def command(
    a: TargetA,
    b: TargetB,
    rtol: Annotated[float, typer.Option("--rtol", metavar="RTOL", help="Relative tolerance for floating-point values, as numpy.isclose (integers compare exactly).")] = 0.0,
    atol: Annotated[float, typer.Option("--atol", metavar="ATOL", help="Absolute tolerance for floating-point values, as numpy.isclose (integers compare exactly).")] = 0.0,
    filter_: Annotated[Optional[str], typer.Option("--filter", "-f", metavar="REGEX", help="Only variables matching this regular expression.")] = None,
    by_hash: Annotated[bool, typer.Option(
        "--by-hash", help="Compare each tensor's content SHA-256 (as `manifest` records it) instead of its values: "
                          "which tensors changed, each side read once, no tolerance. A or B may be a manifest "
                          "(a .json file): its digests are used, nothing is read for it.")] = False,
    names: NamesOpt = Naming.key,
    graph: GraphOpt = False,
    min_elements: MinElements = None,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Added, removed, dtype/shape-changed and value-changed variables (exit 1 if any)."""
    from ckpttool.ops.tensors.diff import check_tolerances, diff_checkpoints
    from ckpttool.ops.patterns import compile_optional
    from ckpttool.ops.targets import resolve_target

    check_tolerances(rtol, atol)  # usage errors before anything is read
    compile_optional(filter_, "--filter")
    if by_hash:
        return _by_hash(a, b, rtol, atol, filter_, names, graph, min_elements, json_out, quiet)
    targets = []
    for given in (a, b):
        targets.append(resolve_target(given, graph=graph, min_elements=min_elements))
        render.say_resolved(given, targets[-1], header=not quiet)
    from ckpttool.cli.progress import byte_progress, showing
    from ckpttool.ops.tensors.diff import bytes_to_compare

    total = bytes_to_compare(*targets, pattern=filter_, naming=names.value) if showing(json_out) else 0
    with byte_progress("comparing", total, json_out) as advance:
        report = diff_checkpoints(*targets, rtol=rtol, atol=atol, pattern=filter_, on_progress=advance,
                                  naming=names.value)
    return _show(report, json_out, quiet)


def _by_hash(a: str, b: str, rtol: float, atol: float, filter_: str | None, names: Naming, graph: bool,
             min_elements: int | None, json_out: bool, quiet: bool) -> int:
    from ckpttool.errors import UsageProblem
    from ckpttool.ops.targets import resolve_target
    from ckpttool.ops.tensors.manifest import diff_by_hash, is_manifest_path

    if rtol or atol or graph or min_elements is not None:
        raise UsageProblem("--by-hash compares digests: not with --rtol, --atol, --graph or --min-elements")
    sides = []
    for given in (a, b):
        if is_manifest_path(given):
            sides.append(given)
            continue
        sides.append(resolve_target(given))
        render.say_resolved(given, sides[-1], header=not quiet)
    return _show(diff_by_hash(*sides, pattern=filter_, naming=names.value), json_out, quiet, by_hash=True)


def _show(report, json_out: bool, quiet: bool, by_hash: bool = False) -> int:
    if json_out:
        hashes = () if by_hash else ("a_sha256", "b_sha256")
        render.emit_json("diff", {"a": report.a, "b": report.b, "identical": report.identical,
                                  "compared": report.compared,
                                  "max_abs_within_tolerance": report.tolerated_max_abs,
                                  "differences": [{k: v for k, v in asdict(d).items() if k not in hashes}
                                                  for d in report.differences]})
    elif quiet:
        render.print_lines(d.name for d in report.differences)
    else:
        if report.differences:
            render.print_table(_COLUMNS, [(d.name, d.change, _detail(d)) for d in report.differences])
        verdict = render.plural(len(report.differences), "difference") if not report.identical else (
            f"equal within tolerance (max abs {report.tolerated_max_abs:.6g})" if report.tolerated_max_abs
            else "identical")
        render.print_wrapped([f"{verdict}: {render.plural(report.compared, 'variable')} compared"])
    return 0 if report.identical else EXIT_NEGATIVE
