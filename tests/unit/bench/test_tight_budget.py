"""The tight-budget diagnosis (issue 27): each task's change after pruning and after recovery, and its
distillation loss on calibration and held-out images, with the options it was run with."""

from __future__ import annotations

from pathlib import Path

from edgecut_bench import tight_budget


def test_the_diagnosis_reports_every_task_after_pruning_and_after_recovery(tmp_path: Path) -> None:
    lines = tight_budget.run(
        tight_budget.parser().parse_args(
            [
                *("--tasks", "seg,count", "--calib", "32", "--val", "16", "--steps", "1"),
                *(
                    "--augment",
                    "flip",
                    "--priority",
                    "count=2",
                    "--weight",
                    "count=3",
                    "--cache-dir",
                    str(tmp_path),
                ),
            ]
        )
    )
    assert lines[0].startswith("seg+count macs=0.3 seed=0 augment=flip") and "{'count': 2.0}" in lines[0]
    assert "weights=['count=3']" in lines[0]
    stages = [line.split(":")[0] for line in lines[1:]]
    assert stages == [
        "after pruning + BatchNorm",
        "after 1 recovery steps",
        "distillation loss, calibration images",
        "distillation loss, held-out images",
    ]
    for line in lines[1:]:
        assert "seg " in line and "count " in line
