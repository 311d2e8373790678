"""docs/benchmarks.md's *Layer widths* section is its saved rows rendered (the engine's step of 16 rests
on it: edgecut/server/cut/groups.py, ROUND_TO)."""

from __future__ import annotations

from pathlib import Path

from edgecut.server.cut.groups import ROUND_TO
from edgecut_bench import saved_rows
from edgecut_bench.widths import SECTION, WidthsResult, markdown, slower_than_wider
from edgecut_bench.widths_cli import ROWS
from tests.unit.docs.figures import sections

REPO = Path(__file__).resolve().parents[3]
RENDER = f"edgecut bench widths --render-from {ROWS}"


def _rows() -> WidthsResult:
    return saved_rows.load(REPO / ROWS, WidthsResult, "bench widths rows")


def test_the_section_is_its_saved_rows_rendered() -> None:
    doc = sections((REPO / "docs" / "benchmarks.md").read_text())
    assert SECTION in doc, f"docs/benchmarks.md has no {SECTION!r} section: run `{RENDER}`"
    assert doc[SECTION].strip() == markdown(_rows()).strip(), f"the section is not its rows': run `{RENDER}`"


def test_the_engine_step_never_lands_on_a_width_the_rows_show_slower_than_the_step() -> None:
    """Every width the rows show slower in INT8 than a wider one lies below the step the engine uses."""
    slow = slower_than_wider(_rows(), "int8")
    assert ROUND_TO not in slow and all(w < ROUND_TO or w % ROUND_TO for w in slow), slow
