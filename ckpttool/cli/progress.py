"""Progress bars for long reads and long runs over many directories: only when stderr is a terminal
and --json (or --quiet) is off; rich is imported only then."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

ProgressCallback = Callable[[int], None]


def showing(json_out: bool) -> bool:
    """Whether a bar would show (worth computing its total)."""
    return not json_out and sys.stderr.isatty()


@contextlib.contextmanager
def byte_progress(description: str, total: int, json_out: bool) -> Iterator[ProgressCallback | None]:
    """Yield a callback taking bytes done since the last call, or None when no bar should show."""
    if not showing(json_out) or total <= 0:
        yield None
        return
    from rich.progress import BarColumn, Progress, TimeRemainingColumn

    from ckpttool.cli.render import console

    with Progress("{task.description}", BarColumn(), *_columns(), TimeRemainingColumn(),
                  console=console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.advance(task, done)


@contextlib.contextmanager
def count_progress(description: str, total: int, quiet: bool) -> Iterator[ProgressCallback | None]:
    """One bar counting items done (run directories), or None when no bar should show."""
    if not showing(quiet) or total <= 0:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ckpttool.cli.render import console

    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.advance(task, done)


def bar_texts(completed: float, total: float | None, speed: float | None) -> tuple[str, str]:
    """The bar's `done/total` and speed, in the units of the tables (ckpttool.text.format_size:
    KiB, MiB, GiB), not Rich's decimal GB."""
    from ckpttool.text import format_size

    done = format_size(int(completed)) + (f"/{format_size(int(total))}" if total else "")
    return done, (f"{format_size(int(speed))}/s" if speed else "?/s")


def _columns():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class _Done(ProgressColumn):
        def render(self, task):
            return Text(bar_texts(task.completed, task.total, None)[0], style="progress.download")

    class _Speed(ProgressColumn):
        def render(self, task):
            return Text(bar_texts(0, None, task.finished_speed or task.speed)[1], style="progress.data.speed")

    return _Done(), _Speed()
