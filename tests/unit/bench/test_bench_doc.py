from __future__ import annotations

import argparse
from pathlib import Path

from edgecut.doc_sections import write_section
from edgecut_bench.swap import SECTION, render

RESULT = {
    "requests": 2400,
    "failed": 0,
    "rate": 119.6,
    "swaps": 20,
    "during_n": 150,
    "during_p50": 1.21,
    "during_p99": 4.5,
    "outside_n": 2250,
    "outside_p50": 0.98,
    "outside_p99": 3.2,
    "swap_p50_ms": 35,
    "swap_max_ms": 80,
    "startup_s": 0.66,
    "rss_idle_mb": 90,
    "rss_after_mb": 95,
    "import_s": 0.41,
    "model_kb": 4,
}
ARGS = argparse.Namespace(rate=120.0, swaps=20, clients=4, ort_threads=1)


def test_render_gives_the_body_without_its_heading() -> None:
    body = render(RESULT, ARGS)
    assert body.startswith("Measured by `edgecut bench swap --rate 120 --swaps 20 --clients 4` on ")
    assert "two 4 KB three-task test models" in body  # no --models: says it used the built-in ones
    assert "## " not in body and body.endswith(
        "| import time of all agent modules (median of 3, fresh interpreter) | 0.41 s |\n"
    )
    assert "| requests sent / failed | 2400 / 0 |" in body


def test_the_section_is_written_through_benchdoc_and_only_it_changes(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n## {SECTION}\n\nold\n\n## Fleet service\n\nkeep me\n")
    body = render(RESULT, ARGS)
    write_section(doc, SECTION, body)
    write_section(doc, SECTION, body)  # a rerun replaces, never duplicates
    assert doc.read_text() == f"# Benchmarks\n\n## {SECTION}\n\n{body}\n## Fleet service\n\nkeep me\n"
    fresh = tmp_path / "new.md"
    write_section(fresh, SECTION, body)
    assert fresh.read_text() == f"# Benchmarks\n\n## {SECTION}\n\n{body}"


def test_write_bullet_replaces_one_summary_bullet_and_keeps_the_rest(tmp_path: Path) -> None:
    from edgecut_bench.doc import write_bullet

    doc = tmp_path / "b.md"
    doc.write_text(
        "# Benchmarks\n\n## Summary\n\n- **Agent**: fast.\n- **The seed papers, reproduced** (old run):\n"
        "  12 of 12, one seed.\n- **Demo**: 4 agents.\n\n## Paper: what we learned\n\nold\n"
    )
    write_bullet(doc, "Summary", "The seed papers, reproduced", "(3 seeds): 2 / 9 / 1. " + "word " * 40)
    text = doc.read_text()
    assert "one seed" not in text and text.count("The seed papers, reproduced") == 1
    assert "- **Agent**: fast.\n- **The seed papers, reproduced** (3 seeds): 2 / 9 / 1." in text
    assert "word\n  word" in text  # wrapped, continuation lines indented
    assert "\n- **Demo**: 4 agents.\n\n## Paper: what we learned\n\nold\n" in text
    write_bullet(doc, "Summary", "Fleet", "new bullet.")  # not there yet: appended to the list
    assert "- **Demo**: 4 agents.\n- **Fleet** new bullet.\n\n## Paper" in doc.read_text()
