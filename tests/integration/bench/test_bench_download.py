from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.doc_sections import write_section
from edgecut_bench import download as bench_download

pytestmark = pytest.mark.integration


def test_bench_measures_a_real_download_and_writes_only_its_section(tmp_path: Path) -> None:
    rows = bench_download.run(512 * 1024, [64 * 1024], repeats=2)
    assert len(rows) == 1 and len(rows[0].seconds) == 2 and all(s > 0 for s in rows[0].seconds)
    assert rows[0].median_mb_s > 0
    body = bench_download.table(rows, "edgecut bench download --size-mb 0.5")
    assert body.startswith("`DownloadModel` throughput") and "| 64 KiB | 2 |" in body

    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\n## Agent hot-swap\n\nagent table\n\n## Fleet service\n\nold\n\n## Pruning\n\np\n"
    )
    write_section(doc, bench_download.SECTION, body)
    text = doc.read_text()
    assert "agent table" in text and "## Pruning\n\np\n" in text and "old" not in text
    assert text.count("## Fleet service") == 1
