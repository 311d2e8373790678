"""No kept task loses most of what it relies on: a floor on each task's share of its own importance.

Ranking channels by fused importance per MAC serves the budget well on average, but at tight budgets
it starves a task whose head costs almost nothing (a classification head on pooled features): the
trunk channels only that task needs are cheap to vote away, because the fusion sees one task against
the dense one and the cost division sees the dense decoder's compute. Measured on the issue-27 user's
model at macs 0.3: dense pairs -0.35 %, image-level pairs -20 % / -29 %.

Measured on the packaged reference at macs 0.3 (200 distillation steps, 300 held-out synthetic
scenes; x86_64, 2 shared cores), the floor did not help: seg + count Δm -9.43 % without it,
-11.05 % at 0.9, -9.27 % at 0.99; normals + count -15.61 %, -16.69 %, -18.04 % (count's accuracy moved
within noise). So it is off by default (`TailorOptions.task_floor` = 0); docs/benchmarks.md,
*Generality*, compares it on the gallery's image-level pairs.

`TaskShares` tracks, per task, the importance (its own scores, summed over every channel still in
the model) it had before pruning and has now; a removal step skips any unit that would take a task
below `floor` times its start (`refused` counts the units it held back in the current step). When the
guard is what stopped the pruner short of the budget (it refused units and nothing else could go), the
floor is lowered step by step, with a WARNING naming what each task kept (the CLI shows warnings), so a
budget that could be met before still is. When the layers' own minimum widths stop the pruner and the
guard refused nothing, the floor stays as asked: lowering it could not help, and the build reports the
budget as impossible instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

RELAX_STEP = 0.1


@dataclass
class TaskShares:
    floor: float  # 0 = off
    start: torch.Tensor | None = None  # T: each task's importance before any removal
    refused: int = 0  # units the guard held back in the current removal step

    def spare(self, now: torch.Tensor) -> torch.Tensor | None:
        """T: how much importance each task may still lose (None when the guard is off)."""
        if self.floor <= 0:
            return None
        if self.start is None:
            self.start = now.clone()
        self.refused = 0
        return now - self.floor * self.start

    def relax(self, tasks: list[str], now: torch.Tensor) -> bool:
        """Lower the floor one step after it stopped the pruner; False when it is off or was not what
        stopped it (it refused nothing: the layers are at their minimum widths)."""
        if self.floor <= 0 or self.refused == 0:
            return False
        kept = now / self.start.clamp_min(1e-30) if self.start is not None else now
        self.floor = max(0.0, round(self.floor - RELAX_STEP, 6))
        logger.warning(
            "the budget needs more than the per-task importance floor allows (kept %s); floor lowered to %.2f",
            ", ".join(f"{t} {float(k):.0%}" for t, k in zip(tasks, kept, strict=True)),
            self.floor,
        )
        return True
