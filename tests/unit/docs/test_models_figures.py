"""Every measured figure in docs/models.md is backed by where it was measured (issue 29: figures in prose
outlived the runs they came from).

A paragraph of docs/models.md (a bullet counts as one) that states a figure with decimals (`-2.27 %`,
`12.2 s`, `1.51x`) must name its source in SOURCES: a section of docs/benchmarks.md rendered from a
bench's saved rows, or the code that records the measurement beside the choice it justifies (a constant's
comment, a test's docstring). Every such figure must then appear in that source at the digits the page
states (tests/unit/docs/figures.py); a figure no source holds (an example of a log line) goes in ALLOWED
with why. Whole numbers are left out: on this page they are settings (steps, images, limits), which
test_schedule_figures.py holds to the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.docs.figures import figures, source_text, unbacked

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "models.md"

# A phrase that starts the paragraph -> where its figures come from: (file, section of docs/benchmarks.md
# or None for the whole file).
SOURCES: dict[str, list[tuple[str, str | None]]] = {
    "`report.model` is the tailored model": [],  # its one figure pair is ALLOWED below
    "- **The quick model's floor**": [],
    "- **Refinements**": [("edgecut/server/cut/refine.py", None)],
    "- **The quick build's clock.**": [("docs/benchmarks.md", "Quick build on a busy machine")],
    "Every model the engine builds": [
        ("edgecut/server/cut/quantise.py", None),
        ("tests/unit/cut/test_quantise.py", None),
    ],
    "- **Time**: making and checking": [("docs/benchmarks.md", "Quick build on a busy machine")],
    "In the fleet this runs as a refinement": [("edgecut/server/fleet/settings.py", None)],  # a setting
}

# Figures that no source holds, each with why it may stand (the phrase must still be on the page).
ALLOWED: dict[str, list[str]] = {
    # issue 29's report of the old default (a 120 s limit), the reason steps decide now
    "`report.model` is the tailored model": ["once gave Δm -6.44 % with 200 steps and -11.22 %"],
    # an example of the message a device is shown
    "- **The quick model's floor**": ['("quick model -63.7 % below the -25 % floor'],
    # an example of the log line
    "- **Refinements**": ['("refinement 2: +0.41 points, 95 % lower bound +0.12'],
    # an example of an INT8 variant's note
    "Every model the engine builds": ['"int8 vs fp32: depth -0.09, seg\n+0.11 points"'],
}


def paragraphs() -> list[str]:
    """The page's paragraphs outside code blocks, each bullet on its own."""
    text = re.sub(r"^```.*?^```", "", DOC.read_text(), flags=re.S | re.M)
    return [p.strip("\n") for p in re.split(r"\n\s*\n|\n(?=- )", text) if p.strip()]


def measured(paragraph: str) -> list[str]:
    return [f.literal for f in figures(paragraph) if f.decimals]


def _anchor(paragraph: str) -> str | None:
    return next((a for a in SOURCES if paragraph.startswith(a)), None)


def _source(anchor: str) -> str:
    return source_text(REPO, SOURCES[anchor], f"SOURCES[{anchor!r}]")


def test_every_paragraph_with_a_measured_figure_names_its_source() -> None:
    missing = [p[:80] for p in paragraphs() if measured(p) and _anchor(p) is None]
    assert not missing, f"paragraphs of {DOC.name} state figures with no source in SOURCES: {missing}"


@pytest.mark.parametrize("anchor", sorted(SOURCES))
def test_every_measured_figure_is_in_its_source(anchor: str) -> None:
    found = [p for p in paragraphs() if p.startswith(anchor)]
    assert len(found) == 1, f"{len(found)} paragraphs of {DOC.name} start with {anchor!r}"
    text = found[0]
    for phrase in ALLOWED.get(anchor, []):
        assert phrase in text, f"ALLOWED[{anchor!r}] lists {phrase!r}, which the page no longer says"
        text = text.replace(phrase, " ")
    source = _source(anchor)
    missing = [f for f in unbacked(" ".join(measured(text)), source) if "." in f]
    assert not missing, f"{DOC.name} ({anchor!r}) states {missing}, which {SOURCES[anchor]} do not hold"
