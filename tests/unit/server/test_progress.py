"""Long work shows progress when the output is not a terminal (logs, pipes, CI), not only at the end."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from edgecut.server import progress


def test_plain_lines_appear_while_the_work_runs_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # a line per step, so the test needs no clock
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    seen_during = []
    with progress.progress_bar("training", total=4, console=console) as advance:
        for step in range(4):
            advance(1, loss=f"{1.0 / (step + 1):.2f}")
            seen_during.append(out.getvalue().count("\n"))
    lines = out.getvalue().splitlines()
    assert seen_during == [1, 2, 3, 4]  # printed as it went, not at the end
    assert lines[0].startswith("training: 1/4 (25%) loss=1.00")
    assert lines[-1].startswith("training: 4/4 (100%) loss=0.25") and len(lines) == 4


def test_a_final_line_says_where_it_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LINE_EVERY_S", 3600.0)
    out = io.StringIO()
    with progress.progress_bar("rendering 8 scenes", total=8, console=Console(file=out)) as advance:
        for _ in range(8):
            advance()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rendering 8 scenes: 8/8 (100%)")


def test_a_resumed_job_counts_only_this_runs_pace_in_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    # a training resumed at 90 of 100 steps, one step a second: 9 s left, not the 0.1 s that counting the
    # first run's 90 steps as done in this run's second would promise
    now = [0.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    out = io.StringIO()
    with progress.progress_bar(
        "training", total=100, console=Console(file=out, width=200), start=90
    ) as advance:
        now[0] += 1.0
        advance(1)
    first = out.getvalue().splitlines()[0]
    assert first.startswith("training: 91/100 (91%)") and first.endswith("0:00:01 elapsed, ~0:00:09 left")
