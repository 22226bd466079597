"""Rich progress bars with ETA for every long loop."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int, completed: int = 0):
    """Yields `advance(n)`; shows done/total, elapsed and ETA."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=console, transient=False) as prog:
        task = prog.add_task(description, total=total, completed=completed)
        yield lambda n=1: prog.advance(task, n)
