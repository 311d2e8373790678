"""docs/benchmarks.md's five *Paper* sections and their Summary bullet are the saved rows of one
`edgecut bench paper` run rendered (issue 29: the sections outlived the teacher they were measured on)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from edgecut.server.mtl import checkpoint
from edgecut.server.paths import PACKAGED_REFERENCE
from edgecut_bench import paper, paper_report
from tests.unit.docs.rendered import assert_bullet_rendered, assert_section_rendered

REPO = Path(__file__).resolve().parents[3]
ROWS = Path("benchmarks/rows/paper-rows.pkl")
RENDER = f"edgecut bench paper --render-from {ROWS}"


@cache  # one load of the rows and the checkpoint for all the tests below
def _rendered() -> tuple[paper.PaperResult, dict[str, str]]:
    assert (REPO / ROWS).exists(), f"no rows at {ROWS}: run `edgecut bench paper --rows {ROWS}`"
    res = paper.load_rows(REPO / ROWS)
    # the run names its base model by a path inside the repository, so a fresh clone can render it
    assert not res.cfg.checkpoint.is_absolute(), "the rows name their base model outside the repository"
    specs = checkpoint.load(REPO / res.cfg.checkpoint).task_specs
    return res, paper_report.sections(res, specs, "paper_garg.png")


@pytest.mark.parametrize("title", paper_report.SECTIONS)
def test_each_paper_section_is_the_saved_rows_rendered(title: str) -> None:
    _, sections = _rendered()
    assert_section_rendered(title, sections[title], RENDER)


def test_the_summary_bullet_is_the_saved_rows_rendered() -> None:
    res, _ = _rendered()
    assert_bullet_rendered(paper_report.SUMMARY_LEAD, paper_report.summary_bullet(res), RENDER)


def test_the_rows_were_measured_on_the_packaged_reference() -> None:
    res, _ = _rendered()
    assert (REPO / res.cfg.checkpoint).resolve() == PACKAGED_REFERENCE.resolve(), (
        "rerun on the packaged reference"
    )
