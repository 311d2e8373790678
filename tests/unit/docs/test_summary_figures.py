"""Every figure in docs/benchmarks.md's Summary is backed by the section it summarises (issue 29: a Summary
written by hand outlived the runs it described).

A bullet is one of:
- rendered by its bench from the section's rows (the bench writes it with `edgecut_bench.doc.write_bullet`):
  rendered again here from the doc and compared whole (the prune bullets; the Reference model bullet
  in test_reference_section.py);
- written by hand: every figure and date in it must appear, at the digits it states, in the sections
  SOURCES names for it (`figures.unbacked`); a figure no section holds belongs in ALLOWED, with why.

A new Summary bullet fails until it is in SOURCES: say where its figures come from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgecut_bench import generality_summary, precision_report, prune_summary, quality_tables, quick_load
from tests.unit.docs.figures import bullets, figures, sections, source_text, unbacked

DOCS = Path(__file__).resolve().parents[3] / "docs"
BENCH = "benchmarks.md"

# Summary bullet -> the (file, section) its figures come from (section None: the whole file).
SOURCES: dict[str, list[tuple[str, str | None]]] = {
    "Reference model": [(BENCH, "Reference model")],
    "Reference model at 128x128": [(BENCH, "Reference model at 128x128")],
    prune_summary.QUALITY_LEAD: [(BENCH, prune_summary.SECTION)],
    prune_summary.SPEED_LEAD: [(BENCH, prune_summary.SECTION)],
    "The seed papers, reproduced": [
        (BENCH, "Paper: what we learned"),
        (BENCH, "Paper: CUT unstructured"),
        (BENCH, "Paper: structured"),
        (BENCH, "Paper: Garg reproduction"),
    ],
    generality_summary.LEAD: [(BENCH, generality_summary.SECTION)],
    generality_summary.RANKING_LEAD: [(BENCH, generality_summary.SECTION)],
    "Quality at budget": [(BENCH, "Quality at budget")],
    "Tailoring time": [(BENCH, "Tailoring time (no recovery)")],
    "Fleet service": [(BENCH, "Fleet service")],
    "Agent": [(BENCH, "Agent hot-swap")],
    "Demo": [("demo.md", "Quick model first, refined model next"), (BENCH, "Demo")],
    "Fleet under load and faults": [
        ("reliability.md", "Fleet under load and faults"),
        ("reliability.md", "Property tests"),
    ],
    "Two replicas under faults": [("reliability.md", "Two replicas under faults")],
    "Agent on arm64": [(BENCH, "Agent on arm64")],
    "Fleet sizing": [(BENCH, "Fleet sizing")],
    precision_report.LEAD: [(BENCH, precision_report.SECTION)],
    f"{precision_report.LEAD} at 128x128": [(BENCH, f"{precision_report.SECTION} at 128x128")],
    quick_load.LEAD: [(BENCH, quick_load.SECTION)],
    "Adapting to a device's images": [(BENCH, "Adapting to a device's images")],
}

# Benches that render their bullets from their section's tables: section -> renderer.
RENDERED: dict[str, Callable[[str], dict[str, str]]] = {
    prune_summary.SECTION: prune_summary.bullets,
    generality_summary.SECTION: generality_summary.bullets,
}

# Bullets rendered from a bench's saved rows and compared whole with them by a test of their own.
FROM_ROWS: dict[str, str] = {
    quality_tables.LEAD: "test_quality_section.py",
    precision_report.LEAD: "test_precision_section.py",
    f"{precision_report.LEAD} at 128x128": "test_precision_section.py",
    quick_load.LEAD: "test_quick_load_section.py",
}

# Phrases whose figures no section holds, and why they may stand (each must still occur in its bullet).
ALLOWED: dict[str, list[str]] = {}


def _doc(name: str) -> str:
    return (DOCS / name).read_text()


def _summary() -> dict[str, str]:
    return bullets(sections(_doc(BENCH))["Summary"])


def _source(lead: str) -> str:
    return source_text(DOCS, SOURCES[lead], f"SOURCES[{lead!r}]")


def test_every_summary_bullet_says_where_its_figures_come_from() -> None:
    missing = sorted(set(_summary()) - set(SOURCES))
    assert not missing, f"add the bullets {missing} to SOURCES in {Path(__file__).name}"


@pytest.mark.parametrize("lead", sorted(SOURCES))
def test_every_figure_of_a_summary_bullet_is_in_its_section(lead: str) -> None:
    summary = _summary()
    if lead not in summary:
        pytest.skip(f"no {lead!r} bullet in the Summary")
    if any(lead in render(sections(_doc(BENCH))[s]) for s, render in RENDERED.items()):
        pytest.skip("rendered from its section's tables: compared whole below")
    if lead in FROM_ROWS:
        pytest.skip(f"rendered from its saved rows: compared whole in {FROM_ROWS[lead]}")
    text = " ".join(summary[lead].split())
    for phrase in ALLOWED.get(lead, []):
        assert phrase in text, f"ALLOWED[{lead!r}] lists {phrase!r}, which the bullet no longer says"
        text = text.replace(phrase, " ")
    missing = unbacked(text, _source(lead))
    assert not missing, (
        f"Summary bullet {lead!r} states {missing}, which {SOURCES[lead]} do not hold: render it from the "
        "section's rows, or state the section's figures"
    )


@pytest.mark.parametrize("section", sorted(RENDERED))
def test_a_rendered_bullet_is_the_one_its_sections_tables_render(section: str) -> None:
    summary = _summary()
    expected = RENDERED[section](sections(_doc(BENCH))[section])
    assert expected, f"*{section}* has no table to render its Summary bullets from"
    for lead, text in expected.items():
        assert " ".join(summary.get(lead, "").split()) == text, (
            f"the Summary's {lead!r} bullet is not what its bench renders from *{section}*'s tables: rerun the "
            f"bench, or re-render the bullet with {RENDERED[section].__module__}.bullets and "
            "edgecut_bench.doc.write_bullet"
        )


def test_a_figure_is_backed_only_at_the_digits_it_states() -> None:
    source = "| l1 | 53% | 0.66 | -1.79 | 172 MB/s | 0.7717 | 6953 | 2026-12-01 |"
    assert unbacked("0.66 at 53 %, Δm −1.8 %, about 170 MB/s, 77 %, about 7,000, on 2026-12-01", source) == []
    wrong = "at or above 0.9, Δm −1.7 %, 0.662, 2026-12-02"
    assert unbacked(wrong, source) == ["0.9", "−1.7", "0.662", "2026-12-02"]
    # names and commands are not figures
    assert figures("x86_64, arm64, `edgecut bench fleet --devices 1000`, [a](docs/v2.md)") == []
