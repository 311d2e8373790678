"""`edgecut bench paper --quick` end to end, as a user runs it: a quick-trained model in a tmp dir,
one command (two seeds in two worker processes), its sections and Summary bullet in the markdown,
and the Garg plot. A bench smoke run like those of tests/e2e/test_bench_smoke.py: it runs in
`make test-bench` (EDGECUT_BENCH_SMOKE=1; CI runs it too), not in `make test`, where it took 25-36 s."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgecut.server.cut.methods import MASK_METHODS
from edgecut_bench.paper_report import SECTIONS, SUMMARY_LEAD
from tests.support.bench_smoke import SMOKE, section

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.bench,
    SMOKE,
]


def _edgecut(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "edgecut.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_bench_paper_quick(tmp_path: Path) -> None:
    data = tmp_path / "data"
    train = _edgecut("train", "--quick", "--data-dir", str(data), timeout=120)
    assert train.returncode == 0, train.stderr
    out, plot = tmp_path / "benchmarks.md", tmp_path / "garg.png"
    out.write_text("# Benchmarks\n\n## Summary\n\n- **Agent**: fast.\n\n## Agent hot-swap\n\nkept\n")
    run = _edgecut(
        "bench", "paper", "--quick", "--data-dir", str(data), "--out", str(out), "--plot", str(plot),
        timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    doc = out.read_text()
    for title in SECTIONS:
        assert f"## {title}\n" in doc
    assert "## Agent hot-swap\n\nkept\n" in doc  # another command's section is left alone
    summary = section(doc, "Summary")
    assert summary.startswith("## Summary\n\n- **Agent**: fast.\n") and f"- **{SUMMARY_LEAD}** (" in summary
    flat = " ".join(summary.split())
    assert "2 seeds" in flat and "wins / no difference / losses" in flat and "median" in flat

    unstructured = section(doc, "Paper: CUT unstructured")
    structured = section(doc, "Paper: structured")
    for name, m in MASK_METHODS.items():
        assert len(re.findall(rf"^\| {re.escape(name)} \(", unstructured, re.M)) == 2  # 2 quick sparsities
        expected = 1 if m.protocol == "matched" else 0  # the papers' keep table has no channel analogue
        assert len(re.findall(rf"^\| {re.escape(name)} \(", structured, re.M)) == expected
    assert re.search(r"^\| edgecut default cut-vote \(", structured, re.M)  # the default names itself
    assert re.search(r"\| [+-]\d+\.\d\d ± \d+\.\d\d \|$", unstructured, re.M)  # Δm: mean ± sd over seeds
    assert "mean over 2 seeds" in unstructured

    # The 1-task guard: CUT's vote on a single task keeps part of the trunk; the published v = 2 keeps none.
    guard = re.search(
        r"v = min\(2, 1\) = 1 keeps \*\*([\d.]+)%\*\*.*published v = 2 keeps ([\d.]+)%", unstructured
    )
    assert guard is not None
    assert float(guard.group(1)) > 0.0 and float(guard.group(2)) == 0.0
    assert re.search(r"CUT-masked one at \d+% sparsity .* in \*\*[\d.]+ ms\*\*", unstructured)

    kept = section(doc, "Paper: kept share per layer")
    assert re.search(r"^\| \*\*trunk\*\* \| \d+ \|", kept, re.M)
    assert re.search(r"^\| `trunk\.stem\.0` \|", kept, re.M) and "cut 90%: depth's own" in kept

    garg = section(doc, "Paper: Garg reproduction")
    assert "Finding 1" in garg and "Finding 2" in garg and f"]({plot.name})" in garg
    assert (
        len(re.findall(r"^\| (garg-taylor|cosprune) \| \d+ \| \d", garg, re.M)) == 4
    )  # 2 criteria x 2 rounds
    # Equal training: per row, the iterative arm's steps (its dense start's included) = the retrained arm's.
    budgets = re.findall(
        r"^\| (?:garg-taylor|cosprune) \| \d+ \| \d+ \| \d+ \| [\d.]+k \| (\d+) / (\d+) \|", garg, re.M
    )
    assert len(budgets) == 4 and all(a == b for a, b in budgets)
    assert re.search(r"^\| dense, from scratch \|", garg, re.M)
    # Each task alone on each criterion's most pruned architecture (quick: tasks seg, depth).
    assert len(re.findall(r"^\| (garg-taylor|cosprune) \| 2 \| (seg|depth) \|", garg, re.M)) == 4
    assert "Single-task models of the same size" in garg
    learned = section(doc, "Paper: what we learned")
    assert "*Does the vote beat the union?*" in learned and "*edgecut's default*" in learned
    assert "W / N / L" in learned and "paired t-test" in learned and "magnitude" in learned
    assert "Single-task models of the same size" in learned
    assert "DiSparse's own pre-trained recipe (disparse-pt)" in flat
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The saved rows re-render the same sections without a run; a file that is not rows is one clear error.
    rows = data / "bench" / "paper-rows.pkl"
    again = tmp_path / "again.md"
    render = _edgecut(
        "bench", "paper", "--render-from", str(rows), "--out", str(again), "--plot", str(plot), timeout=120
    )
    assert render.returncode == 0, render.stderr[-3000:]
    for title in SECTIONS:
        assert section(again.read_text(), title) == section(doc, title)
    bad = _edgecut("bench", "paper", "--render-from", str(plot), "--out", str(again), timeout=60)
    assert bad.returncode == 2 and "cannot read bench paper rows from" in bad.stderr
    assert "Traceback" not in bad.stderr
