"""A multi-task model small enough to check scores and masks by hand."""

from __future__ import annotations

import torch
from torch import nn

from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.tasks import TaskSpec


class LinearHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2, bias=False)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.fc(feats[-1])


class LinearMTL(MultiTaskModel):
    """x (3 x size x size) -> shared Linear(3 size^2 -> 2) -> one Linear(2 -> 2) head per task."""

    def __init__(self, tasks: tuple[str, ...], size: int) -> None:
        super().__init__([TaskSpec(t, "classification", 2) for t in tasks], size)
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 2, bias=False))
        self.heads = nn.ModuleDict({t: LinearHead() for t in tasks})
