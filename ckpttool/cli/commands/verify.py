"""`ckpttool verify TARGET`: its options for Typer (`--manifest FILE [--quick]` compares with a manifest);
the body is cli/hot/verify.py."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ckpttool.cli.hot import verify
from ckpttool.cli.options import GraphOpt, Json, Quiet, TargetArg


def command(
    target: TargetArg,
    all_: Annotated[bool, typer.Option(
        "--all", "-a", help="Every checkpoint of the directory TARGET, not just the latest (Keras checkpoint files, SavedModel versions, Orbax steps and HF steps' weights too).")] = False,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Every checkpoint of every run directory under TARGET (implies --all).")] = False,
    graph: GraphOpt = False,
    manifest: Annotated[Optional[str], typer.Option(
        "--manifest", "-m", metavar="FILE",
        help="Compare TARGET with this manifest (written by `ckpttool manifest`) instead: its files when they "
             "are the manifest's (same format and names; each file's SHA-256, large ones in parallel pieces), "
             "else its tensors' content SHA-256 (CRC-32Cs with --quick). Names every missing, extra, changed and "
             "renamed file and tensor; exit 1 on any.")] = None,
    tensors: Annotated[bool, typer.Option(
        "--tensors", help="With --manifest: compare tensors even when the files could be compared.")] = False,
    ignore_names: Annotated[bool, typer.Option(
        "--ignore-names", help="With --manifest: a tensor found under another name with the same content is no "
                               "difference (it is still listed as renamed).")] = False,
    quick: Annotated[bool, typer.Option(
        "--quick", help="With --manifest: compare CRC-32Cs (a version-2 manifest's) instead of SHA-256s, at "
                        "verify's speed. Finds accidental damage (a flipped bit, a short copy), not deliberate "
                        "tampering: a signed manifest is checked without it.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Check every tensor's CRC, shard presence and sizes. Exit 1 on damage.

    A graph (a GraphDef .pb, a lone .meta, --graph) is checked structurally: it parses and every Const
    decodes to its declared shape (graphs carry no checksums).
    """
    return verify.run(target, all_=all_, recursive=recursive, graph=graph, manifest=manifest, tensors=tensors,
                      ignore_names=ignore_names, quick=quick, json_out=json_out, quiet=quiet)
