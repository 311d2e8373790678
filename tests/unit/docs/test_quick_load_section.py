"""docs/benchmarks.md's *Quick build on a busy machine* section is its saved rows rendered (docs/models.md's
*The quick build's clock* quotes it: tests/unit/docs/test_models_figures.py)."""

from __future__ import annotations

from pathlib import Path

from edgecut_bench import saved_rows
from edgecut_bench.quick_load import LEAD, SECTION, QuickLoadResult, bullet, markdown
from edgecut_bench.quick_load_cli import ROWS
from tests.unit.docs.rendered import assert_bullet_rendered, assert_section_rendered

REPO = Path(__file__).resolve().parents[3]
RENDER = f"edgecut bench quick-load --render-from {ROWS}"


def _rows() -> QuickLoadResult:
    return saved_rows.load(REPO / ROWS, QuickLoadResult, "bench quick-load rows")


def test_the_section_is_its_saved_rows_rendered() -> None:
    assert_section_rendered(SECTION, markdown(_rows()), RENDER)


def test_the_summary_bullet_is_its_saved_rows_rendered() -> None:
    assert_bullet_rendered(LEAD, bullet(_rows()), RENDER)
