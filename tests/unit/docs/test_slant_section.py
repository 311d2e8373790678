"""docs/benchmarks.md's *Slant on the gallery* table is the saved training records in benchmarks/rows/slant/
rendered: the claim that balanced losses and longer training do not lift slant rests on them."""

from __future__ import annotations

import json

from edgecut_bench.slant_runs import FOLDER, table
from tests.unit.docs.rendered import BENCH_DOC, REPO, sections

SECTION = "Slant on the gallery (issue 29)"


def test_the_table_is_the_saved_training_records_rendered() -> None:
    text = sections(BENCH_DOC.read_text())[SECTION]
    assert table(REPO / FOLDER) in text, "run `PYTHONPATH=benchmarks python -m edgecut_bench.slant_runs`"


def test_what_the_section_says_is_what_the_records_show() -> None:
    """Every run leaves slant at or above the trivial baseline's error, balanced runs weigh slant more than
    depth, and the fixed-length runs end at the baseline rather than below it."""
    records = {p.name: json.loads(p.read_text()) for p in (REPO / FOLDER).glob("*.metrics.json")}
    assert {n.split("-")[0] for n in records} >= {"mobilevit"} and len(records) >= 4
    for name, r in records.items():
        assert r["metrics"]["slant"]["abs_err"] >= r["trivial_baseline"]["slant"]["abs_err"], name
        if "-balanced-" in name:
            assert r["task_weights"]["slant"] > r["task_weights"]["depth"], name
    fixed = [r for n, r in records.items() if not n.endswith("-stopped.metrics.json")]
    assert fixed and all(len(r["curve"]) == r["config"]["epochs"] for r in fixed)
