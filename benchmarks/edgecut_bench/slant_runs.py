"""The training runs that tried to lift slant on the gallery models that leave it at the trivial baseline
(issue 29): each run's metrics.json, saved in benchmarks/rows/slant/, rendered as the table that
docs/benchmarks.md shows (tests/unit/docs/test_slant_section.py renders it again from the files).

A file is named `<architecture>-<plain|balanced|alone>-<stopped|N>.metrics.json`: the six tasks' training
losses summed as they are or balanced (`edgecut train --balance-tasks`), or slant alone (`--tasks slant`,
a single-task model of the same architecture); stopped by the validation loss or run for a fixed N
epochs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

FOLDER = Path("benchmarks/rows/slant")
_NAME = re.compile(r"(?P<arch>.+)-(?P<losses>plain|balanced|alone)-(?P<length>stopped|\d+)\.metrics\.json$")


def _training(losses: str, length: str, record: dict[str, Any]) -> str:
    how = {"plain": "summed losses", "balanced": "balanced losses", "alone": "slant alone"}[losses]
    cfg = record["config"]
    if length == "stopped":
        return f"{how}, stopped after {cfg['patience']} epochs without a better validation loss"
    return f"{how}, {length} epochs (one-cycle rate)"


def _count_curve(record: dict[str, Any]) -> str:
    """Where the image-level count task's validation loss bottomed out and where it ended (the runs
    that record each task's validation loss per epoch)."""
    losses = [p["val_loss.count"] for p in record["curve"] if "val_loss.count" in p]
    if not losses:
        return "not recorded" if "count" in record["metrics"] else "-"
    low = min(range(len(losses)), key=losses.__getitem__)
    return f"{losses[low]:.2f} ({low + 1}) → {losses[-1]:.2f}"


def table(folder: Path = FOLDER) -> str:
    lines = [
        "| model | training | epochs run | epoch kept | slant abs_err | trivial | slant's weight / depth's "
        "| count's validation loss: lowest (epoch) → last |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    runs = []
    for path in folder.glob("*.metrics.json"):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(
                f"{path.name}: not <architecture>-<plain|balanced|alone>-<stopped|N>.metrics.json"
            )
        order = ("plain", "balanced", "alone").index(m["losses"])
        runs.append((m["arch"], m["length"] != "stopped", order, path, m))
    for *_, path, m in sorted(runs, key=lambda r: r[:3]):
        record = json.loads(path.read_text())
        weights = record.get("task_weights") or {}
        ratio = (
            f"{weights['slant'] / weights['depth']:.1f}"
            if weights
            else "1"
            if "depth" in record["metrics"]
            else "-"
        )
        lines.append(
            f"| {m['arch']} | {_training(m['losses'], m['length'], record)} | {len(record['curve'])} "
            f"| {record['best_epoch'] or len(record['curve'])} | {record['metrics']['slant']['abs_err']:.4f} "
            f"| {record['trivial_baseline']['slant']['abs_err']:.4f} | {ratio} | {_count_curve(record)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
