"""docs/benchmarks.md's *Quality at budget* section and its Summary bullet are the saved rows of the runs in
benchmarks/rows/quality/ rendered (issue 29: the section outlived the teacher and the baselines it was
measured with). A run split over seeds or cases keeps one file per run there."""

from __future__ import annotations

from pathlib import Path

from edgecut_bench import quality, quality_tables, saved_rows
from edgecut_bench.quality_report import SECTION, markdown
from tests.unit.docs.figures import bullets, sections

REPO = Path(__file__).resolve().parents[3]
ROWS = Path("benchmarks/rows/quality")
RENDER = f"edgecut bench quality --render-from {ROWS}/*.pkl"


def _rows() -> quality.QualityResult:
    files = sorted((REPO / ROWS).glob("*.pkl"))
    assert files, f"no rows in {ROWS}: run `edgecut bench quality --rows {ROWS}/NAME.pkl`"
    return quality.merged([saved_rows.load(f, quality.QualityResult, "bench quality rows") for f in files])


def test_the_section_is_its_saved_rows_rendered() -> None:
    doc = sections((REPO / "docs" / "benchmarks.md").read_text())
    res = _rows()
    expected = markdown(res, res.command)
    # the plot's line is the CLI's (--plot), after the rendered body
    assert doc[SECTION].strip().startswith(expected.strip()), f"the section is not its rows': run `{RENDER}`"


def test_the_summary_bullet_is_its_saved_rows_rendered() -> None:
    summary = bullets(sections((REPO / "docs" / "benchmarks.md").read_text())["Summary"])
    assert summary.get(quality_tables.LEAD) == " ".join(quality_tables.summary(_rows()).split()), (
        f"run `{RENDER}`"
    )


def test_every_run_saved_its_rows_where_the_section_reads_them() -> None:
    for f in sorted((REPO / ROWS).glob("*.pkl")):
        res = saved_rows.load(f, quality.QualityResult, "bench quality rows")
        assert f"--rows {ROWS}/{f.name}" in res.command, f"{f.name}: its command saves its rows elsewhere"
