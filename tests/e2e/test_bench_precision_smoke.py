"""`edgecut bench precision` end to end at its smallest size, as a user runs it: the engine's lineage, the
user's and edgecut's static INT8, every file scored and timed at two sizes, the section written with its
goals, the rows saved and rendered again to the same section. Runs in `make test-bench`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.bench_smoke import OTHER, SMOKE, run_bench, section

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.bench,
    SMOKE,
]
SMALL = (
    "--task-sets seg,depth --budgets 0.5 --scratch-epochs 0.05 --scratch-seconds 5 --train-scenes 32 "
    "--calib-scenes 32 --val-scenes 16 --recovery-steps 2 --refine-steps 2 --seeds 0,1 --calib-images 8 "
    "--large 96 --rounds 2 --runs 3"
)
RUN_S = 420.0


@pytest.mark.timeout(2 * RUN_S + 60)
def test_bench_precision_writes_its_section_and_renders_it_again_from_its_rows(tmp_path: Path) -> None:
    out, rows = tmp_path / "bench.md", tmp_path / "rows.pkl"
    out.write_text(OTHER)
    run_bench(
        "precision",
        [*f"--data-dir {tmp_path / 'data'} {SMALL} --rows {rows} --out {out}".split()],
        RUN_S,
    )
    doc = out.read_text()
    assert OTHER in doc  # only its own section is rewritten
    body = section(doc, "Precision: static INT8")
    for model in (
        "full fp32",
        "full + ORT static INT8, S8S8 (onnxruntime's defaults)",
        "full + ORT static INT8, U8S8 (unsigned activations)",
        "edgecut macs 0.5 fp32",
        "edgecut macs 0.5 INT8",
    ):
        assert re.search(rf"^\| {re.escape(model)} \| [\d.]+ \| .*\d", body, re.M), (
            f"no {model!r} row:\n{body}"
        )
    assert "*seg + depth, 96 x 96*" in body and "quality at 96 is **not measured**" in body
    assert re.search(r"^\| macs 0.5 INT8 .* \| \*\*(met|missed by .+)\*\* \|$", body, re.M), body
    assert re.search(r"^\| INT8 loses .* \| \*\*(met|missed by .+)\*\* \|$", body, re.M), body

    summary = section(doc, "Summary")
    assert re.search(r"^- \*\*Precision\*\* .*\d", summary, re.M), f"no Precision bullet:\n{summary}"

    again = tmp_path / "again.md"
    again.write_text(OTHER)
    run_bench("precision", ["--render-from", str(rows), "--out", str(again)], 120.0)
    assert section(again.read_text(), "Precision: static INT8") == body
    assert section(again.read_text(), "Summary") == summary
