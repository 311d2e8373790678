"""docs/benchmarks.md's *Generality* section and its two Summary bullets are the saved rows of the runs in
benchmarks/rows/generality/ rendered (a run split by seed keeps one file per seed there; issue 29)."""

from __future__ import annotations

from pathlib import Path

from edgecut.server.paths import PACKAGED_REFERENCE
from edgecut_bench import generality, generality_report, generality_summary
from tests.unit.docs.rendered import assert_bullet_rendered, assert_section_rendered, saved_runs

REPO = Path(__file__).resolve().parents[3]
ROWS = Path("benchmarks/rows/generality")
RENDER = f"edgecut bench generality --render-from {ROWS}/*.pkl"


def _rows() -> generality.GeneralityResult:
    runs = saved_runs(ROWS, generality.GeneralityResult, "bench generality rows", "edgecut bench generality")
    return generality.merged(runs)


def test_the_section_is_its_saved_rows_rendered() -> None:
    res = _rows()
    assert_section_rendered(generality_summary.SECTION, generality_report.markdown(res, res.command), RENDER)


def test_the_summary_bullets_are_its_saved_rows_rendered() -> None:
    res = _rows()
    text = generality_report.markdown(res, res.command)
    for lead, bullet in generality_summary.bullets(text).items():
        assert_bullet_rendered(lead, bullet, RENDER)
    assert res.ranking, "the rows hold no ranking comparison: run with --ranking"
    assert_bullet_rendered(generality_report.RANKING_LEAD, generality_report.ranking_summary(res), RENDER)


def test_the_ranking_compared_on_the_packaged_reference() -> None:
    res = _rows()
    assert (REPO / res.cfg.reference).resolve() == PACKAGED_REFERENCE.resolve(), (
        "rerun the ranking on the packaged reference"
    )
