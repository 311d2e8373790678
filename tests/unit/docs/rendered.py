"""A docs/benchmarks.md section or Summary bullet is what its bench renders from saved rows (the tests of
each bench's section call these with its own renderer)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from edgecut_bench import saved_rows
from tests.unit.docs.figures import bullets, sections

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[3]
BENCH_DOC = REPO / "docs" / "benchmarks.md"


def assert_section_rendered(title: str, expected: str, render: str, then_more: bool = False) -> None:
    """The section `title` is `expected` (`then_more`: followed by lines the CLI adds, e.g. a plot)."""
    doc = sections(BENCH_DOC.read_text())
    assert title in doc, f"docs/benchmarks.md has no {title!r} section: run `{render}`"
    found, want = doc[title].strip(), expected.strip()
    assert found.startswith(want) if then_more else found == want, (
        f"the section is not its rows': run `{render}`"
    )


def assert_bullet_rendered(lead: str, expected: str, render: str) -> None:
    summary = bullets(sections(BENCH_DOC.read_text())["Summary"])
    assert summary.get(lead) == " ".join(expected.split()), f"the Summary's {lead!r} bullet: run `{render}`"


def saved_runs(rows: Path, kind: type[T], what: str, command: str) -> list[T]:
    """Every run's rows saved in the repository folder `rows` (a run split over seeds keeps a file each)."""
    files = sorted((REPO / rows).glob("*.pkl"))
    assert files, f"no rows in {rows}: run `{command} --rows {rows}/NAME.pkl`"
    return [saved_rows.load(f, kind, what) for f in files]
