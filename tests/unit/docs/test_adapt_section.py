"""docs/benchmarks.md's *Adapting to a device's images* section is its saved rows rendered (issue 31: the
goals' verdicts and every figure come from the rows `edgecut bench adapt` saved, never from a hand edit)."""

from __future__ import annotations

from pathlib import Path

from edgecut_bench import saved_rows
from edgecut_bench.adapt import AdaptResult
from edgecut_bench.adapt_report import SECTION, markdown
from tests.unit.docs.figures import sections

REPO = Path(__file__).resolve().parents[3]
ROWS = Path("benchmarks/rows/adapt-rows.pkl")
RENDER = f"edgecut bench adapt --render-from {ROWS}"


def _rows() -> AdaptResult:
    return saved_rows.load(REPO / ROWS, AdaptResult, "bench adapt rows")


def test_the_section_is_its_saved_rows_rendered() -> None:
    doc = sections((REPO / "docs" / "benchmarks.md").read_text())
    assert SECTION in doc, f"docs/benchmarks.md has no {SECTION!r} section: run `{RENDER}`"
    assert doc[SECTION].strip() == markdown(_rows()).strip(), f"the section is not its rows': run `{RENDER}`"


def test_its_rerun_command_saves_the_rows_the_section_is_checked_against() -> None:
    assert f"--rows {ROWS}" in _rows().command, f"rerun it with `--rows {ROWS}` so that this file is updated"


def test_the_full_run_covers_what_issue_31_asks() -> None:
    res = _rows()
    assert len(res.cfg.seeds) >= 3 and {0.5, 0.3} <= set(res.cfg.budgets)
    assert {"dark", "noise", "blur", "cast", "zoom", "all"} <= {r.shift for r in res.rows}
