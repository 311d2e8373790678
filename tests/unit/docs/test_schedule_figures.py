"""The engine's schedules and limits as the docs state them are the engine's (issue 29: docs/benchmarks.md said the
refinements run "400 and then 800 steps" long after the second became 640).

Each fact is a sentence template and the code that fills it; a changed constant fails here until the
sentence says the new value (the message names the file and the sentence)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgecut.server.cut.balance import DEFAULT_SHARE, MAX_BOOST
from edgecut.server.cut.export import OPSET
from edgecut.server.cut.quantise import QuantOptions
from edgecut.server.cut.refine import REFINEMENTS
from edgecut.server.cut.scratch import ScratchOptions
from edgecut.server.spec import MIN_DELTA_M

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _refinement_steps() -> tuple[int, ...]:
    return tuple(r.steps for r in REFINEMENTS)


FACTS: list[tuple[str, str, Callable[[], tuple[object, ...]]]] = [
    ("models.md", "with longer distillations ({}, then {} steps)", _refinement_steps),
    ("benchmarks.md", "refinements continue from its weights for {} and then {} steps", _refinement_steps),
    ("models.md", "for {:g} epochs of the training data", lambda: (ScratchOptions().epochs,)),
    (
        "models.md",
        "cut to the steps that fit in `scratch_seconds` ({:g} s)",
        lambda: (ScratchOptions().seconds,),
    ),
    (
        "models.md",
        "runs at most {:g} % slower than that model's architecture",
        lambda: (round((ScratchOptions().max_slowdown - 1) * 100, 1),),
    ),
    ("models.md", "falls below {:g} % fails instead of shipping", lambda: (MIN_DELTA_M,)),
    ("models.md", "Operators ONNX opset {} exports", lambda: (OPSET,)),
    (
        "models.md",
        "by one plus its shortfall in shares of {:g} %, at most {:g}x",
        lambda: (DEFAULT_SHARE * 100, MAX_BOOST),
    ),
    (
        "models.md",
        "calibrated on {} of the build's calibration images",
        lambda: (QuantOptions().calib_images,),
    ),
    (
        "models.md",
        "must stay within {:g} point. Where",
        lambda: (QuantOptions().threshold,),
    ),
    (
        "models.md",
        "output over {} calibration images) and the worst is kept in fp32",
        lambda: (QuantOptions().probe_images,),
    ),
    ("models.md", "until every task passes or {} nodes are fp32", lambda: (QuantOptions().max_excluded,)),
]


@pytest.mark.parametrize(("doc", "template", "values"), FACTS, ids=[f"{d}: {t}" for d, t, _ in FACTS])
def test_the_docs_state_the_engines_schedules(
    doc: str, template: str, values: Callable[[], tuple[object, ...]]
) -> None:
    text = " ".join((DOCS / doc).read_text().split())
    expected = template.format(*values())
    assert expected in text, f"docs/{doc} should say {expected!r} (the engine's value); update that sentence"
