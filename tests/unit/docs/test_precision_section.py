"""docs/benchmarks.md's *Precision: static INT8* section is its saved rows rendered (issue 30: the goals'
verdicts and every figure come from the rows `edgecut bench precision` saved, never from a hand edit)."""

from __future__ import annotations

from pathlib import Path

from edgecut_bench import saved_rows
from edgecut_bench.precision import PrecisionResult
from edgecut_bench.precision_report import LEAD, SECTION, bullet, markdown
from tests.unit.docs.rendered import assert_bullet_rendered, assert_section_rendered

REPO = Path(__file__).resolve().parents[3]
ROWS = Path("benchmarks/rows/precision-rows.pkl")
RENDER = f"edgecut bench precision --render-from {ROWS}"


def _rows() -> PrecisionResult:
    return saved_rows.load(REPO / ROWS, PrecisionResult, "bench precision rows")


def test_the_section_is_its_saved_rows_rendered() -> None:
    assert_section_rendered(SECTION, markdown(_rows()), RENDER)


def test_the_summary_bullet_is_its_saved_rows_rendered() -> None:
    assert_bullet_rendered(LEAD, bullet(_rows()), RENDER)


def test_its_rerun_command_saves_the_rows_the_section_is_checked_against() -> None:
    assert f"--rows {ROWS}" in _rows().command, f"rerun it with `--rows {ROWS}` so that this file is updated"
