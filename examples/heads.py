"""Task heads the gallery models share: every head takes the trunk's tuple of feature maps.

A head picks the features it reads by position; edgecut traces which positions the kept heads read,
so a device that keeps only image-level tasks drops the trunk parts that only dense heads use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.server.mtl import TaskSpec


class DenseOut(nn.Module):
    """features[index] -> 3x3 conv + BN + ReLU -> 1x1 to the task's channels -> bilinear to the input size."""

    def __init__(self, spec: TaskSpec, cin: int, hidden: int, size: int, index: int = 0) -> None:
        super().__init__()
        self.index = index
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU()
        )
        self.out = nn.Conv2d(hidden, spec.channels, 1)
        self.size = size
        self.unit_norm = spec.kind == "normals"

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        y = self.out(self.body(feats[self.index]))
        y = F.interpolate(y, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return F.normalize(y, dim=1) if self.unit_norm else y


class PooledClass(nn.Module):
    """features[index] -> global average pool -> Linear + ReLU -> Linear to the class logits."""

    def __init__(self, spec: TaskSpec, cin: int, hidden: int, index: int = -1) -> None:
        super().__init__()
        self.index = index
        self.fc1 = nn.Linear(cin, hidden)
        self.fc2 = nn.Linear(hidden, spec.channels)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(feats[self.index].mean(dim=(2, 3)))))
