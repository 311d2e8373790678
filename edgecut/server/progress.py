"""One progress helper for every long job: rendering, training, scoring, pruning, benchmarks.

On a terminal it is a rich progress bar. Elsewhere (a log file, a pipe, CI) a bar would show nothing
until the end, so a plain line is printed every `LINE_EVERY_S` seconds instead, and one at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LINE_EVERY_S = 5.0


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


@contextmanager
def progress_bar(
    description: str,
    total: float,
    enabled: bool = True,
    console: Console | None = None,
    start: float = 0.0,
) -> Iterator[Callable[..., None]]:
    """Yields `advance(n=1, **fields)`; a no-op when disabled (tests, library use). `start`: the share of
    `total` done before this run (a resumed job), shown as done but not counted in the time left."""
    if not enabled:
        yield lambda n=1, **_: None
        return
    console = console or Console()
    if not console.is_terminal:
        lines = _Lines(description, total, console, start)
        yield lines.advance
        if lines.shown != lines.done:
            lines.line()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False, console=console) as progress:
        task = progress.add_task(description, total=total, completed=int(start), info="")

        def advance(n: float = 1, **fields: object) -> None:
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            progress.update(task, advance=n, info=info)

        yield advance


class _Lines:
    """`description: done/total (pct) fields, elapsed, ~left`, a line every LINE_EVERY_S and one at the end."""

    def __init__(self, description: str, total: float, console: Console, start: float = 0.0) -> None:
        self.description, self.total, self.console = description, total, console
        self.t0 = time.monotonic()
        self.next_line = self.t0 + LINE_EVERY_S
        self.start = self.done = start
        self.info = ""
        self.shown = -1.0  # `done` at the last line printed

    def advance(self, n: float = 1, **fields: object) -> None:
        self.done += n
        if fields:
            self.info = " ".join(f"{k}={v}" for k, v in fields.items())
        if time.monotonic() >= self.next_line:
            self.next_line = time.monotonic() + LINE_EVERY_S
            self.line()

    def line(self) -> None:
        self.shown = self.done
        elapsed = time.monotonic() - self.t0
        share = self.done / self.total if self.total else 1.0
        # the pace of this run only: work a resumed job did before it took none of this run's time
        this_run = self.done - self.start
        left = (
            f", ~{_clock(elapsed * (self.total - self.done) / this_run)} left"
            if this_run > 0 and share < 1
            else ""
        )
        info = f" {self.info}" if self.info else ""
        self.console.print(
            f"{self.description}: {self.done:g}/{self.total:g} ({share:.0%}){info}, "
            f"{_clock(elapsed)} elapsed{left}",
            highlight=False,
            soft_wrap=True,
        )
