"""`edgecut bench fleet` end to end on a small fleet: every device served, nothing lost, figures written."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.cli import main

pytestmark = pytest.mark.integration


def test_bench_fleet_small_run_writes_its_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reliability.md"
    code = main(
        [
            "bench",
            "fleet",
            "--devices",
            "12",
            "--processes",
            "2",
            "--build-s",
            "0.2",
            "--no-faults",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    text = out.read_text()
    assert "## Fleet under load and faults" in text and "12 of 12" in text and "lost: 0" in text
    assert "builds: **5** for 5 distinct needs" in text
