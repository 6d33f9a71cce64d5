"""Rich progress bars on a terminal; plain log lines in CI, cron and pipes; silence with DSATKIT_QUIET."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)
"""Progress, notes and errors: stderr, so that results piped from stdout stay clean."""
results = Console()
"""What a command produces (tables, summaries): stdout."""


LOG_EVERY_S = 30.0
"""Where there are no bars, seconds between two lines about a task still running
(DSATKIT_PROGRESS_EVERY overrides it)."""


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI") and not quiet()


def quiet() -> bool:
    return bool(os.environ.get("DSATKIT_QUIET"))


class RateColumn(ProgressColumn):
    """Items per second, in the unit the task names (`unit="texts"`)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "it")
        return Text(f"{task.speed:,.0f} {unit}/s" if task.speed else "", style="cyan")


class LogProgress(Progress):
    """A progress display for logs (CI, cron, a pipe): no bars, but plain lines on stderr, each with
    the task's count, elapsed time and rate: one when a task ends (or the display closes on it), and
    one every `every_s` seconds while it runs. A task that counted nothing makes no line.

        14:03:12 mining: 150,000 conversations, 31.2 s, 4,808 conversations/s
        14:03:40 mining: done, 250,000 conversations in 58.9 s, 4,244 conversations/s
    """

    def __init__(self, *columns: ProgressColumn, every_s: float = LOG_EVERY_S, **kwargs):
        super().__init__(*columns, disable=True, **kwargs)
        self.every_s = every_s
        self._logged_at: dict[TaskID, float] = {}  # when each task's last line was written
        self._log_lock = threading.Lock()  # tasks advance from several threads
        self._failed = False  # whether the display closes on an exception (a task cut short)

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        self._failed = exc_type is not None
        super().__exit__(exc_type, exc_val, exc_tb)

    def stop(self) -> None:
        for task in self.tasks:
            self._log(task.id, closing=True)
        super().stop()

    def _log(self, task_id: TaskID, closing: bool = False) -> None:
        task = next((t for t in self.tasks if t.id == task_id), None)
        if task is None or task.start_time is None or not task.completed:
            return
        now = self.get_time()
        ended = task.finished or closing
        with self._log_lock:
            last = self._logged_at.get(task_id, task.start_time)
            if last == _ENDED or (not ended and now - last < self.every_s):
                return
            self._logged_at[task_id] = _ENDED if ended else now
        done = task.finished or (ended and task.total is None and not self._failed)
        console.print(_log_line(task, now, ended, done), highlight=False, markup=False, soft_wrap=True)


_ENDED = float("inf")
"""LogProgress._logged_at of a task whose last line is written."""


def _log_line(task: Task, now: float, ended: bool, done: bool) -> str:
    unit = task.fields.get("unit", "it")
    elapsed = task.finished_time if task.finished_time is not None else now - (task.start_time or now)
    count = f"{task.completed:,.0f}" + ("" if task.total is None or done else f"/{task.total:,.0f}")
    if ended:
        said = f"{'done' if done else 'stopped'}, {count} {unit} in {elapsed:.1f} s"
    else:
        said = f"{count} {unit}, {elapsed:.1f} s"
        if task.total is not None and elapsed > 0:
            said += f", ~{(task.total - task.completed) * elapsed / task.completed:.0f} s left"
    rate = f", {task.completed / elapsed:,.0f} {unit}/s" if elapsed > 0 else ""
    return f"{time.strftime('%H:%M:%S')} {task.description}: {said}{rate}"


_active: Progress | None = None


@contextmanager
def progress() -> Iterator[Progress]:
    """A progress display: rich bars on an interactive terminal; else plain log lines (LogProgress),
    or nothing at all with DSATKIT_QUIET set.

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
    if interactive() or quiet():
        display = Progress(*columns, console=console, disable=not interactive())
    else:
        every_s = float(os.environ.get("DSATKIT_PROGRESS_EVERY") or LOG_EVERY_S)
        display = LogProgress(*columns, console=console, every_s=every_s)
    with display as p:
        _active = p
        try:
            yield p
        finally:
            _active = None
