"""bench quick-load's report: a busy build below the server's quick floor is said to be held back (the
device keeps its model), and bad arguments are one sentence."""

from __future__ import annotations

import pytest

from edgecut.errors import ConfigError
from edgecut_bench.quick_load import QuickLoadResult, QuickRow, markdown
from edgecut_bench.quick_load_cli import _task_sets


def _result(busy_delta_m: float) -> QuickLoadResult:
    res = QuickLoadResult("reference.pt", 0.5, 2, "x86_64", "2026-12-07", "60 steps", 12.0, -25.0)
    res.rows = [
        QuickRow(("seg", "depth"), 0, 12.2, 51, 60, -2.7, 1.1, 0.21),
        QuickRow(("seg", "depth"), 2, 22.7, 2, 60, busy_delta_m, 2.0, None),
    ]
    return res


def _row(text: str, load: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| seg + depth | {load} |"))


def test_a_busy_build_below_the_floor_is_held_back_and_one_above_is_not() -> None:
    held = markdown(_result(-128.3))
    assert "yes: held back" in _row(held, "2 cores busy") and "| no |" in _row(held, "quiet")
    assert "1 of 1 busy builds fall below the floor" in held
    passed = markdown(_result(-20.0))
    assert "held back" not in passed and "every one above the floor" in passed


def test_a_build_without_an_int8_variant_shows_none() -> None:
    text = markdown(_result(-20.0))
    assert "| 1.1 | 0.21 |" in _row(text, "quiet") and "| 2.0 | - |" in _row(text, "2 cores busy")


def test_task_sets_parse_and_an_empty_one_is_refused() -> None:
    assert _task_sets("seg,depth;seg, depth ,normals") == (("seg", "depth"), ("seg", "depth", "normals"))
    with pytest.raises(ConfigError, match="--task-sets"):
        _task_sets("seg,depth;;")
