"""`ckpttool inspect TARGET`: its options for Typer; the body is cli/hot/inspect.py."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from ckpttool.cli.hot import inspect
from ckpttool.cli.options import GraphOpt, Json, MinElements, Naming, NamesOpt, Quiet, TargetArg


def command(
    target: TargetArg,
    filter_: Annotated[Optional[str], typer.Option("--filter", "-f", metavar="REGEX", help="Only variables whose name matches this regular expression.")] = None,
    name: Annotated[Optional[List[str]], typer.Option("--name", metavar="NAME", help="Only this variable, by its exact name (repeatable; with --filter: both).")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also internal entries such as _CHECKPOINTABLE_OBJECT_GRAPH; of a graph, every constant (--min-elements 0).")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="min/max/mean/std and NaN/Inf/zero counts, streamed in bounded memory.")] = False,
    values: Annotated[bool, typer.Option("--values", help="Print the tensors themselves (large ones summarised as numpy does).")] = False,
    full: Annotated[bool, typer.Option("--full", help="With --values: print every element.")] = False,
    limit: Annotated[Optional[str], typer.Option("--limit", metavar="BYTES", help="With --values: leave out values past this many stored bytes in total (100MB, 1GiB); they show as null in JSON.")] = None,
    tree: Annotated[bool, typer.Option("--tree", help="Group by scope, or by the TF2 object graph: each variable under every object path that reaches it (--json: object_paths).")] = False,
    slices: Annotated[bool, typer.Option("--slices", help="Show the stored slices of partitioned variables.")] = False,
    hash_: Annotated[bool, typer.Option("--hash", help="Each tensor's content SHA-256, as `manifest` records it (the same in every format; JSON: sha256).")] = False,
    meta: Annotated[bool, typer.Option("--meta", help="Summarise the graph (.meta, SavedModel or GraphDef .pb), without TensorFlow: inputs, likely outputs, signatures, every op type with counts (the function library's too).")] = False,
    graph: GraphOpt = False,
    min_elements: MinElements = None,
    names: NamesOpt = Naming.key,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """List the variables of a checkpoint: name, dtype, shape, elements, bytes.

    For a directory, says on stderr which checkpoint it chose.
    """
    return inspect.run(target, filter_=filter_, name=name, all_=all_, stats=stats, values=values, full=full, limit=limit,
                       tree=tree, slices=slices, hash_=hash_, meta=meta, graph=graph, min_elements=min_elements,
                       names=names.value, json_out=json_out, quiet=quiet)
