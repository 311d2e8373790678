from __future__ import annotations

from pathlib import Path

from edgecut.agent.bench_swap import SECTION, write_section


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Pruning\n\nkeep me\n")
    write_section(doc, f"{SECTION}\n\nfirst\n")
    write_section(doc, f"{SECTION}\n\nsecond\n")
    text = doc.read_text()
    assert text.count(SECTION) == 1 and "second" in text and "first" not in text
    assert "## Pruning\n\nkeep me" in text
    doc.write_text(f"# B\n\n{SECTION}\n\nold\n\n## Later\n\nalso keep\n")
    write_section(doc, f"{SECTION}\n\nnew\n")
    assert doc.read_text() == f"# B\n\n{SECTION}\n\nnew\n## Later\n\nalso keep\n"
