"""Rich progress bars on a terminal, silence in CI and pipes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)
"""Progress, notes and errors: stderr, so that results piped from stdout stay clean."""
results = Console()
"""What a command produces (tables, summaries): stdout."""


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI") and not os.environ.get("DSATKIT_QUIET")


class RateColumn(ProgressColumn):
    """Items per second, in the unit the task names (`unit="texts"`)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "it")
        return Text(f"{task.speed:,.0f} {unit}/s" if task.speed else "", style="cyan")


_active: Progress | None = None


@contextmanager
def progress() -> Iterator[Progress]:
    """A progress display; disabled (no output at all) when stderr is not an interactive terminal.

    Nested calls share the outermost display (rich allows one live display at a time), so a stage's
    bar shows up under the bar of the run that called it.
    """
    global _active
    if _active is not None:
        yield _active
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        RateColumn(),
        TimeRemainingColumn(),  # the ETA, for tasks that know their total
    ]
    with Progress(*columns, console=console, disable=not interactive()) as p:
        _active = p
        try:
            yield p
        finally:
            _active = None
