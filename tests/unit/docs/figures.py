"""Figures in prose, and whether a section backs them: what tests/unit/docs/test_summary_figures.py needs.

A figure is a number as a reader sees it: `−1.8 %`, `1.48×`, `7,000`, a range `8–12 s` (two figures),
a date `2026-12-01`. It is *backed* by a text when the text holds a number that rounds to it at the
figure's own digits (`0.867` by 0.8670, `−1.8` by -1.79, `170` by 172, `77 %` by 0.7717); signs are
ignored (prose says "loses 2.6 %" for a Δm of -2.63). Dates must appear as they are. Numbers inside
`code spans` and link targets are commands and paths, not figures.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

MINUS = "\u2212"
DASHES = "\u2013\u2014"  # – and —, between two numbers: a range
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
# A number not glued to a word (x86_64, arm64, v2, seg1 are names): optional sign, thousands groups,
# decimals. `64x64` is two numbers, like "64 x 64".
NUMBER = re.compile(
    r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?=[kMx\u00d7]?(?:[^\w.]|\.(?!\d)|$))"
)
CODE = re.compile(r"`[^`]*`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")


@dataclass(frozen=True)
class Figure:
    literal: str  # as written
    value: float  # absolute value
    decimals: int  # digits after the point as written

    def backed_by(self, values: list[float]) -> bool:
        for x in values:
            for candidate in (x, x * 100):  # a share written as a percentage (0.7717 -> 77 %)
                if math.isclose(round(candidate, self.decimals), self.value, abs_tol=1e-9):
                    return True
                if self._rounded_integer(candidate):
                    return True
        return False

    def _rounded_integer(self, x: float) -> bool:
        """`170` or `7,000` stands for a figure rounded to its last non-zero digit (172, 6953); only from 100
        up, where the trailing zeros cannot be a count of something."""
        if self.decimals or self.value < 100:
            return False
        digits = str(int(self.value))
        zeros = len(digits) - len(digits.rstrip("0"))
        return zeros > 0 and math.isclose(round(x, -zeros), self.value)


def prose(text: str) -> str:
    """The text without code spans and link targets."""
    return LINK_TARGET.sub("]", CODE.sub(" ", text))


def figures(text: str) -> list[Figure]:
    """Every figure of `text` (dates excluded: see `dates`)."""
    text = DATE.sub(" ", prose(text))
    # a dash or hyphen right after a digit joins a range: "8–12", "7.4-9.2" (never a minus sign)
    text = re.sub(rf"(?<=\d)\s*[{DASHES}-]\s*(?=[\d{MINUS}+-])", " ", text)
    text = re.sub(r"(?<=\d)[x\u00d7](?=\d)", " ", text)  # 64x64
    found = []
    for m in NUMBER.finditer(text):
        literal = m.group(0)
        digits = literal.lstrip("+-" + MINUS).replace(",", "")
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        found.append(Figure(literal, float(digits), decimals))
    return found


def values(text: str) -> list[float]:
    """Every number of `text` at full precision, absolute (a source to back figures with)."""
    return [f.value for f in figures(text)]


def dates(text: str) -> list[str]:
    return DATE.findall(prose(text))


def sections(markdown: str) -> dict[str, str]:
    """`## Title` -> the section's text (to the next `## `)."""
    parts = re.split(r"^## (.+)\n", markdown, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def bullets(section: str) -> dict[str, str]:
    """`- **Lead** text` (wrapped lines joined) -> text, for each bullet of a section."""
    found: dict[str, str] = {}
    lead = None
    for line in section.split("\n"):
        m = re.match(r"- \*\*(.+?)\*\*(.*)", line)
        if m:
            lead = m.group(1)
            found[lead] = m.group(2).strip()
        elif lead and line.startswith("  "):
            found[lead] += " " + line.strip()
        else:
            lead = None
    return found


def unbacked(text: str, source: str) -> list[str]:
    """The figures and dates of `text` that `source` does not back, as written."""
    pool = values(source)
    missing = [f.literal for f in figures(text) if not f.backed_by(pool)]
    return missing + [d for d in dates(text) if d not in source]


def source_text(root: Path, places: list[tuple[str, str | None]], who: str) -> str:
    """The text of each (file under `root`, `## section` of it or None for the whole file), joined; a
    section that is gone fails naming `who` (the table entry that names it)."""
    parts = []
    for name, title in places:
        text = (root / name).read_text()
        if title is not None:
            assert title in sections(text), f"{who} names {name}'s section {title!r}, which is gone"
            text = sections(text)[title]
        parts.append(text)
    return "\n".join(parts)
