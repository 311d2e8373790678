"""docs/benchmarks.md's *Precision: static INT8* sections are their saved rows rendered (issue 30: the goals'
verdicts and every figure come from the rows `edgecut bench precision` saved, never from a hand edit): one
on the packaged reference, one on the packaged 128 px reference (issue 29: quality at 128 x 128 measured
on a teacher trained at that size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut_bench import saved_rows
from edgecut_bench.precision import PrecisionResult
from edgecut_bench.precision_report import LEAD, SECTION, bullet, markdown, titled
from tests.unit.docs.rendered import assert_bullet_rendered, assert_section_rendered

REPO = Path(__file__).resolve().parents[3]
ROWS = [Path("benchmarks/rows/precision-rows.pkl"), Path("benchmarks/rows/precision-128-rows.pkl")]


def _rows(rows: Path) -> PrecisionResult:
    return saved_rows.load(REPO / rows, PrecisionResult, "bench precision rows")


def _render(rows: Path) -> str:
    return f"edgecut bench precision --render-from {rows}"


@pytest.mark.parametrize("rows", ROWS, ids=lambda p: p.stem)
def test_the_section_is_its_saved_rows_rendered(rows: Path) -> None:
    res = _rows(rows)
    assert_section_rendered(titled(res)[0], markdown(res), _render(rows))


@pytest.mark.parametrize("rows", ROWS, ids=lambda p: p.stem)
def test_the_summary_bullet_is_its_saved_rows_rendered(rows: Path) -> None:
    res = _rows(rows)
    assert_bullet_rendered(titled(res)[1], bullet(res), _render(rows))


@pytest.mark.parametrize("rows", ROWS, ids=lambda p: p.stem)
def test_its_rerun_command_saves_the_rows_the_section_is_checked_against(rows: Path) -> None:
    assert f"--rows {rows}" in _rows(rows).command, (
        f"rerun it with `--rows {rows}` so that this file is updated"
    )


def test_the_128_px_run_has_its_own_section_beside_the_default_references() -> None:
    default, large = (_rows(r) for r in ROWS)
    assert titled(default) == (SECTION, LEAD)
    assert large.image_size == 128 and titled(large) == (f"{SECTION} at 128x128", f"{LEAD} at 128x128")
    # the default run's files were only timed at 128: its text sends the reader to the measured quality
    assert f"*{SECTION} at 128x128* runs this bench on the packaged reference trained at 128" in markdown(
        default
    )
