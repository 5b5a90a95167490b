"""Option definitions shared by every command, so they are spelled and
documented the same way everywhere."""
from __future__ import annotations

from typing import Annotated

import typer

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print bare names, one per line.")]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Walk a tree of run directories.")]
DryRun = Annotated[bool, typer.Option("--dry-run", "-n", help="Show what would be done; change nothing.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking (needed when not interactive).")]
Directory = Annotated[str, typer.Argument(metavar="DIR", help="A checkpoint directory.", show_default=False)]
TargetArg = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="A checkpoint prefix, one of its files, a run directory (its latest checkpoint) or a SavedModel.",
        show_default=False,
    ),
]
