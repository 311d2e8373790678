"""The quantity whose sensitivity scores a channel: the task's labelled loss, or (label-free) the
distance to the original pre-trained model's output.

Why the label-free objective is second order: at the trained weights the pruned-to-be model *is*
the original, so the distillation loss is at its minimum and its gradient is exactly zero; a
first-order Taylor score would rank nothing. Removing channel c changes the task output by about
J_c a_c (J the output's Jacobian w.r.t. the channel's activation a_c), so the distillation loss
after removal is about ||J_c a_c||^2 (the Gauss-Newton term). It is estimated without labels and
without forming J by Hutchinson's trick: for random r ~ N(0, I), E[(r . J_c a_c)^2] = ||J_c a_c||^2,
and r . J_c a_c is a directional derivative one backward pass gives for every channel at once.

`Objective.terms()` returns the scalars to differentiate; `squared` tells the criterion to average
the squares of the resulting first-order terms (label-free) instead of taking their magnitude.
`order` overrides that pairing, so the target (labels vs. the original's outputs) and the order
(magnitude of the first-order term vs. its square) can be compared one at a time: label-free at
"first" order is the mean magnitude |w * d(r . f)/dw| of the output change along random directions r
(the same order as the labelled |w * dL/dw|).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

from edgecut.server.cut.methods import Order, Target
from edgecut.server.mtl.data import Batch
from edgecut.server.mtl.losses import distill_loss, label_loss
from edgecut.server.mtl.tasks import TaskSpec

TARGETS: tuple[Target, ...] = ("distill", "labels")


@dataclass(frozen=True)
class Objective:
    specs: dict[str, TaskSpec]
    target: Target = "distill"
    projections: int = 2
    seed: int = 0
    order: Order | None = None  # None: "second" for distill (its gradient is zero), "first" for labels

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"unknown scoring target {self.target!r}: choose distill or labels")
        if self.order not in (None, "first", "second"):
            raise ValueError(f"unknown order {self.order!r}: choose first or second")

    @property
    def squared(self) -> bool:
        return (self.order or ("second" if self.target == "distill" else "first")) == "second"

    def terms(self, task: str, pred: torch.Tensor, batch: Batch, batch_index: int) -> list[torch.Tensor]:
        if self.target == "labels":
            return [label_loss(self.specs[task], pred, batch[task])]
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/{batch_index}/{task}".encode()))
        scale = 1.0 / math.sqrt(pred[0].numel())  # per-example output size, so tasks start comparable
        return [(pred * torch.randn(pred.shape, generator=g)).sum() * scale for _ in range(self.projections)]

    def summed(self, pred: dict[str, torch.Tensor], batch: Batch, batch_index: int) -> list[torch.Tensor]:
        """The selected tasks' terms added up, unweighted (Garg et al.'s single-task criterion)."""
        per_task = [self.terms(t, p, batch, batch_index) for t, p in pred.items()]
        return [sum(ts, torch.zeros(())) for ts in zip(*per_task, strict=True)]


@torch.no_grad()
def with_teacher(batch: Batch, teacher: torch.nn.Module) -> Batch:
    """Attach the original model's outputs to a batch as `teacher:<task>` (for recovery)."""
    out = dict(batch)
    for task, y in teacher(batch["image"]).items():
        out[f"teacher:{task}"] = y
    return out


def recovery_loss(
    specs: dict[str, TaskSpec],
    pred: dict[str, torch.Tensor],
    batch: Batch,
    target: Target,
    weights: dict[str, float] | None = None,
) -> torch.Tensor:
    w = weights or {}
    parts = [
        w.get(t, 1.0)
        * (
            distill_loss(specs[t], p, batch[f"teacher:{t}"])
            if target == "distill"
            else label_loss(specs[t], p, batch[t])
        )
        for t, p in pred.items()
    ]
    return sum(parts, torch.zeros(()))
