"""docs/benchmarks.md's *Quality at budget* section and its Summary bullet are the saved rows of the runs in
benchmarks/rows/quality/ rendered (issue 29: the section outlived the teacher and the baselines it was
measured with). A run split over seeds or cases keeps one file per run there."""

from __future__ import annotations

from pathlib import Path

from edgecut_bench import quality, quality_tables, saved_rows
from edgecut_bench.quality_report import SECTION, markdown
from tests.unit.docs.rendered import assert_bullet_rendered, assert_section_rendered, saved_runs

REPO = Path(__file__).resolve().parents[3]
ROWS = Path("benchmarks/rows/quality")
RENDER = f"edgecut bench quality --render-from {ROWS}/*.pkl"


def _rows() -> quality.QualityResult:
    return quality.merged(
        saved_runs(ROWS, quality.QualityResult, "bench quality rows", "edgecut bench quality")
    )


def test_the_section_is_its_saved_rows_rendered() -> None:
    res = _rows()
    # the CLI adds the plot's line (--plot) after the rendered body
    assert_section_rendered(SECTION, markdown(res, res.command), RENDER, then_more=True)


def test_the_summary_bullet_is_its_saved_rows_rendered() -> None:
    assert_bullet_rendered(quality_tables.LEAD, quality_tables.summary(_rows()), RENDER)


def test_every_run_saved_its_rows_where_the_section_reads_them() -> None:
    for f in sorted((REPO / ROWS).glob("*.pkl")):
        res = saved_rows.load(f, quality.QualityResult, "bench quality rows")
        assert f"--rows {ROWS}/{f.name}" in res.command, f"{f.name}: its command saves its rows elsewhere"
