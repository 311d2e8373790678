"""The Summary bullets bench prune and bench generality render from their sections' tables."""

from __future__ import annotations

from pathlib import Path

from edgecut_bench import generality_summary, prune_summary
from edgecut_bench.doc import tables, write_bullet

PRUNE = """Selected tasks: **seg, depth** of the reference model. recovery = 50 steps of distillation.

| method | removed | params | MMACs | ORT ms | speed-up | speed-up / MAC cut | Δm % | Δm % (rec.) | tailor s |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| full model | 0% | 100.0k | 80.00 | 2.00 | 1.00 | 1.00 | 0.00 | 0.00 | - |
| l1 | 30% | 70.0k | 56.00 | 1.50 | 1.33 | 0.93 | -10.00 | -2.00 | 1.0 |
| l1 | 53% | 47.0k | 40.00 | 1.52 | 1.32 | 0.66 | -20.00 | -5.00 | 1.0 |
| cut-vote | 31% | 69.0k | 56.00 | 1.40 | 1.43 | 1.00 | -8.00 | -1.80 | 1.0 |
| cut-vote | 50% | 50.0k | 40.00 | 1.00 | 2.00 | 1.00 | -25.00 | -2.30 | 1.0 |
"""


def test_the_prune_bullets_state_the_spread_and_its_lowest_method_and_gaps_not_wins() -> None:
    found = prune_summary.bullets(PRUNE)
    speed = found[prune_summary.SPEED_LEAD]
    # l1 at 53 % runs 0.66 of its MAC cut: the bullet says so (it once claimed >= 0.7 for every method)
    assert "speed-up per MAC cut 0.93–1.00 at 30–31 % removed (lowest: l1); 0.66–1.00 at 50–53 %" in speed
    assert (
        "cut-vote at 50 % removed runs 2.00× faster than the unpruned model for a 2.00× MAC cut (1.00)"
        in speed
    )
    quality = found[prune_summary.QUALITY_LEAD]
    assert "tasks seg, depth" in quality and "same 50-step recovery at 30–31 / 50–53 %" in quality
    assert "l1 −2.00 / −5.00 %; cut-vote −1.80 / −2.30 %" in quality
    assert "30–31 %: cut-vote (by 0.20 pp over l1)" in quality and "One run, one seed" in quality


def test_a_section_without_its_table_renders_no_bullet() -> None:
    assert prune_summary.bullets("no table here") == {}
    assert generality_summary.bullets("| a | b |\n|---|---|\n| 1 | 2 |\n") == {}


GENERALITY = """| architecture | tasks | budget | params | MMACs | ORT ms | speed-up | task metrics | Δm % |
|---|---|---|---:|---:|---:|---:|---|---:|
| unet | count, largest | macs=0.5 | 41k → 21k → 8k | 17.43 → 3.98 → 1.90 | 0.09 → 0.09 | 1.00x | x | +0.35 ± 0.20 |
| resnet | seg, depth | macs=0.3 | 10k → 10k → 3k | 10.00 → 10.00 → 3.00 | 1.00 → 0.50 | 2.00x | x | −4.10 ± 1.00 |

| tasks | params kept (plain → per MAC) | MACs kept (plain → per MAC) | Δm % plain | Δm % per MAC | better by |
|---|---:|---:|---:|---:|---:|
| seg, depth | 23% → 31% | 47% → 48% | -3.01 | -2.93 | +0.09 pp |
| count, seg | 19% → 28% | 46% → 48% | -5.33 | -5.50 | -0.17 pp |
"""


def test_the_generality_bullets_read_means_over_seeds_and_name_the_worst_case() -> None:
    found = generality_summary.bullets(GENERALITY)
    main = found[generality_summary.LEAD]
    assert "2 architectures: unet, resnet; 2 tailorings at macs=0.5 and macs=0.3" in main
    assert "keep 0.30 to 0.48 of the decomposed model's MACs" in main
    assert "run 1.00 to 2.00× faster in onnxruntime (slowest: unet count+largest at macs=0.5)" in main
    assert "Δm after recovery is -4.10 to +0.35 % (worst: resnet seg+depth at macs=0.3)" in main
    assert (
        "Decomposition alone dropped what a pair does not read: unet count+largest at macs=0.5 17.43 → 3.98"
        in main
    )
    # the ranking bullet comes from the rows and the paired test (generality_report.ranking_summary)
    assert generality_summary.RANKING_LEAD not in found


def test_tables_reads_every_pipe_table_and_write_bullet_puts_a_rendered_bullet_in_the_summary(
    tmp_path: Path,
) -> None:
    assert [len(t) for t in tables(GENERALITY)] == [2, 2]
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Summary\n\n- **Real speed** old 0.7.\n- **Agent** kept.\n")
    write_bullet(
        doc, "Summary", prune_summary.SPEED_LEAD, prune_summary.bullets(PRUNE)[prune_summary.SPEED_LEAD]
    )
    text = doc.read_text()
    assert "old 0.7" not in text and "- **Agent** kept." in text and "(lowest: l1)" in text
