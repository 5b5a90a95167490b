"""`ckpttool manifest TARGET [-o FILE]`: every file's and every tensor's SHA-256 and CRC-32C, as a JSON manifest
that `verify --manifest` checks a copy against (docs/reference/manifest.md)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ckpttool.cli import render
from ckpttool.cli.options import Json, TargetArg


def command(
    target: TargetArg,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="FILE",
        help="Write the manifest to this file (atomically, creating missing directories) instead of stdout.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output file (never a directory).")] = False,
    json_out: Json = False,
):
    """Record every file (path, size, SHA-256, CRC-32C) and every tensor (name, dtype, shape, content SHA-256 and CRC-32C).

    A tensor's digest does not depend on the format: a checkpoint and its safetensors, .npz or Keras
    copy have the same ones. Without -o the manifest is printed on stdout (with schema_version and
    command at the top); `verify --manifest FILE TARGET` checks a copy against it (`--quick`: by CRC-32C).
    """
    from ckpttool.cli.progress import byte_progress
    from ckpttool.ops.destination import check_destination, files_read, refuse_writing_over_source, write_destination
    from ckpttool.ops.targets import resolve_target
    from ckpttool.ops.tensors.manifest import build_manifest
    from ckpttool.ops.tensors.verify import total_bytes

    destination = check_destination(output, overwrite) if output else None
    resolved = resolve_target(target)
    render.say_resolved(target, resolved)
    if destination:
        refuse_writing_over_source(files_read(resolved, target), [destination], "manifest")
    with byte_progress("hashing", total_bytes(resolved) if not json_out else 0, json_out) as advance:
        manifest = build_manifest(resolved, on_progress=advance)
    document = manifest.document()
    if not destination:
        render.emit_json("manifest", document)
        return 0
    import json

    try:
        data = (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a name that is not UTF-8 (kept as surrogates): escaped, read back exactly
        data = (json.dumps(document, indent=1) + "\n").encode("ascii")
    write_destination(destination, data)
    summary = {"checkpoint": manifest.checkpoint, "output": destination, "files": len(manifest.files),
               "tensors": len(manifest.tensors), "bytes": len(data)}
    if json_out:
        render.emit_json("manifest", summary)
    else:
        render.print_wrapped([f"wrote {destination}: {render.plural(len(manifest.files), 'file')} and "
                              f"{render.plural(len(manifest.tensors), 'tensor')} of {manifest.checkpoint}"])
    return 0
