"""Progress bars for long reads: only when stderr is a terminal and --json is off."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

ProgressCallback = Callable[[int], None]


@contextlib.contextmanager
def byte_progress(description: str, total: int, json_out: bool) -> Iterator[ProgressCallback | None]:
    """Yield a callback taking bytes done since the last call, or None when no bar should show."""
    if json_out or not sys.stderr.isatty() or total <= 0:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from ckpttool.cli.render import console

    with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                  console=console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.advance(task, done)
