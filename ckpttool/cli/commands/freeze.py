"""`ckpttool freeze SRC -o OUT.pb`: a frozen, self-contained GraphDef (uses TensorFlow)."""
from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, List, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.errors import EXIT_NEGATIVE
from ckpttool.cli.options import Json


def command(
    source: Annotated[str, typer.Argument(metavar="SRC", help="A checkpoint with its .meta, or a SavedModel directory.",
                                          show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="The .pb (or .pbtxt with --text) to write; missing directories are created.",
                                        show_default=False)],
    output_nodes: Annotated[Optional[str], typer.Option("--output-nodes", metavar="NODES", help="Comma-separated output nodes (name or name:0).")] = None,
    tags: Annotated[Optional[str], typer.Option("--tags", metavar="TAGS", help="SavedModel tags, comma-separated (default: the only meta graph's, else serve).")] = None,
    signature: Annotated[Optional[str], typer.Option("--signature", metavar="NAME", help="SavedModel signature (default: serving_default, else the only one).")] = None,
    text: Annotated[bool, typer.Option("--text", help="Write text format (pbtxt).")] = False,
    clear_devices: Annotated[bool, typer.Option("--clear-devices/--keep-devices", help="Drop device placements (at load, so GPU-placed graphs freeze on a CPU).")] = True,
    check: Annotated[bool, typer.Option("--check", help="Run original and frozen graphs on the same random inputs; exit 1 if they differ. An unknown batch (first) dimension is fed as 1. This runs the file's graph (its output nodes); without --check, freezing a checkpoint or a TF1 SavedModel runs none of its nodes (a TF2 SavedModel's loader runs its own restore and init functions).")] = False,
    input_shape: Annotated[Optional[List[str]], typer.Option("--input-shape", metavar="NAME=D1,D2", help="NAME=D1,D2 for --check inputs whose other dimensions are unknown (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file (never a directory).")] = False,
    json_out: Json = False,
):
    """Freeze a checkpoint (with its .meta) or a SavedModel into a GraphDef with constants.

    For a SavedModel the outputs come from its signature, and the mapping from
    the signature's output names to the frozen graph's tensors is shown
    (`out -> Identity:0`; JSON: "signature_outputs").
    """
    from ckpttool.graph.check import parse_input_shapes
    from ckpttool.graph.freeze import freeze

    report = freeze(source, output,
                    output_nodes=[n.strip() for n in output_nodes.split(",") if n.strip()] if output_nodes else None,
                    tags=[t.strip() for t in tags.split(",") if t.strip()] if tags else None, signature=signature,
                    text=text, clear_devices=clear_devices, check=check,
                    input_shapes=parse_input_shapes(input_shape or []), overwrite=overwrite)
    render.warn_all(report.warnings)
    failed = report.check is not None and not report.check.ok
    if json_out:
        doc = asdict(report)
        doc["output_nodes"] = list(report.output_nodes)
        doc["warnings"] = list(report.warnings)
        render.emit_json("freeze", doc)
    else:
        lines = [f"wrote {report.output}: {report.nodes_before} -> {render.plural(report.nodes_after, 'node')}, "
                 f"{render.plural(report.variables_frozen, 'variable')} frozen, "
                 f"{render.human_bytes(report.bytes_written)}",
                 f"outputs: {', '.join(report.output_nodes)}"]
        if report.signature_outputs is not None:
            lines.append(f"signature {report.signature}:")
            lines.extend(f"  {key} -> {tensors}" for key, tensors in report.signature_outputs.items())
        if report.check is not None:
            verdict = "same results" if report.check.ok else "RESULTS DIFFER"
            inputs = ", ".join(f"{name}={shape}" for name, shape in report.check.inputs.items())
            details = ", ".join(f"{c.name} (max abs diff {c.max_abs_diff:.3g})" for c in report.check.outputs)
            lines.append(f"check: {verdict} on inputs {inputs or '(none)'}: {details}")
        render.print_lines(lines)
    return EXIT_NEGATIVE if failed else 0
