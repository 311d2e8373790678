"""docs/benchmarks.md's *Quick build on a busy machine* section is its saved rows rendered (docs/models.md's
*The quick build's clock* quotes it: tests/unit/docs/test_models_figures.py)."""

from __future__ import annotations

from pathlib import Path

from edgecut_bench import saved_rows
from edgecut_bench.quick_load import LEAD, SECTION, QuickLoadResult, bullet, markdown
from edgecut_bench.quick_load_cli import ROWS
from tests.unit.docs.figures import bullets, sections

REPO = Path(__file__).resolve().parents[3]
RENDER = f"edgecut bench quick-load --render-from {ROWS}"


def _rows() -> QuickLoadResult:
    return saved_rows.load(REPO / ROWS, QuickLoadResult, "bench quick-load rows")


def test_the_section_is_its_saved_rows_rendered() -> None:
    doc = sections((REPO / "docs" / "benchmarks.md").read_text())
    assert SECTION in doc, f"docs/benchmarks.md has no {SECTION!r} section: run `{RENDER}`"
    assert doc[SECTION].strip() == markdown(_rows()).strip(), f"the section is not its rows': run `{RENDER}`"


def test_the_summary_bullet_is_its_saved_rows_rendered() -> None:
    summary = bullets(sections((REPO / "docs" / "benchmarks.md").read_text())["Summary"])
    assert summary.get(LEAD) == " ".join(bullet(_rows()).split()), f"run `{RENDER}`"
