"""`ckpttool export-json SRC`: a graph (MetaGraphDef, SavedModel, GraphDef) as JSON or pbtxt (uses TensorFlow)."""
from __future__ import annotations

import enum
import json
import sys
from typing import Annotated, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.options import Json


class ExportFormat(str, enum.Enum):
    json = "json"
    pbtxt = "pbtxt"


# The MetaGraphDef parts graph/export.py knows (its PARTS; tests keep the two in step).
Part = enum.Enum("Part", {name: name for name in ("graph", "saver", "signatures", "collections", "meta_info")},
                 type=str)


def command(
    source: Annotated[str, typer.Argument(metavar="SRC", help="A .meta, a checkpoint prefix or directory, a .pb GraphDef or a SavedModel.",
                                          show_default=False)],
    format_: Annotated[ExportFormat, typer.Option("--format", help="json (proto field names) or pbtxt.")] = ExportFormat.json,
    part: Annotated[Optional[Part], typer.Option("--part", help="Only one part of the meta graph.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", help="Write to this file (atomically, creating missing directories) instead of stdout.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file (never a directory).")] = False,
    json_out: Json = False,
):
    """Print a graph as JSON (field names as in the proto) or pbtxt, whole or one part.

    With --json: a report document (schema_version, command, source, kind,
    part, format) holding the export under "message", or, with -o, the path
    and size written. An Any of a type TensorFlow does not know (a session
    bundle's serving signatures) appears as {"@type", "value": {"base64"}}.
    """
    from ckpttool.ops.destination import check_destination, refuse_writing_over_source, write_destination
    from ckpttool.graph.export import export_graph

    destination = check_destination(output, overwrite) if output else None
    export = export_graph(source, fmt=format_.value, part=part.value if part else None)
    if destination:
        refuse_writing_over_source([source, export.source], [destination], "export-json")
    report = {"source": export.source, "kind": export.kind, "part": export.part, "format": export.format}
    if destination:
        data = export.text.encode("utf-8")
        write_destination(destination, data)
        if json_out:
            render.emit_json("export-json", {**report, "output": destination, "bytes": len(data)})
        else:  # like every other writer: what was written where
            render.print_wrapped([f"wrote {destination}: {export.part or 'the whole ' + export.kind} as "
                                  f"{export.format}, {render.human_bytes(len(data))}"])
    elif json_out:
        body = json.loads(export.text) if export.format == "json" else export.text
        render.emit_json("export-json", {**report, "message": body})
    else:
        sys.stdout.write(export.text)
    return 0
