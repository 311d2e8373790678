"""A ResNeXt-style encoder (grouped 3x3 convs, GroupNorm) shared by dense tasks and several image-level
tasks: grouped convs and GroupNorm only stay valid when every group loses the same channels.

Dense heads fuse the deep map with a stride-4 skip (each head has its own small decoder); image-level
heads pool the deep map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.server.mtl import SCENE_TASKS, MultiTaskModel, TaskSpec
from examples.heads import PooledClass


class NeXtBlock(nn.Module):
    """1x1 -> grouped 3x3 (optionally strided) -> 1x1, GroupNorm after each, residual add."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = cout
        self.reduce = nn.Conv2d(cin, mid, 1, bias=False)
        self.gn1 = nn.GroupNorm(groups, mid)
        self.grouped = nn.Conv2d(mid, mid, 3, stride, 1, groups=groups, bias=False)
        self.gn2 = nn.GroupNorm(groups, mid)
        self.expand = nn.Conv2d(mid, cout, 1, bias=False)
        self.gn3 = nn.GroupNorm(groups, cout)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(groups, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.gn1(self.reduce(x)))
        y = F.relu(self.gn2(self.grouped(y)))
        return F.relu(self.gn3(self.expand(y)) + self.down(x))


class GroupedTrunk(nn.Module):
    """stem (s2) -> stage1 (s2, stride 4) -> stage2 (s2, stride 8); returns (stride-4, stride-8) maps."""

    def __init__(self, widths: Sequence[int], groups: int) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, 2, 1, bias=False), nn.GroupNorm(groups, w0), nn.ReLU())
        self.stage1 = nn.Sequential(NeXtBlock(w0, w1, 2, groups), NeXtBlock(w1, w1, 1, groups))
        self.stage2 = nn.Sequential(NeXtBlock(w1, w2, 2, groups), NeXtBlock(w2, w2, 1, groups))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.stage1(self.stem(x))
        return skip, self.stage2(skip)


class FuseHead(nn.Module):
    """deep -> 1x1 -> upsample -> concat skip -> 3x3 -> 1x1 -> bilinear to the input size."""

    def __init__(self, spec: TaskSpec, deep: int, skip: int, hidden: int, size: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(deep, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU())
        self.fuse = nn.Sequential(
            nn.Conv2d(hidden + skip, hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU()
        )
        self.out = nn.Conv2d(hidden, spec.channels, 1)
        self.size = size
        self.unit_norm = spec.kind == "normals"

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        skip, deep = feats
        y = F.interpolate(self.reduce(deep), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        y = self.out(self.fuse(torch.cat([y, skip], dim=1)))
        y = F.interpolate(y, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return F.normalize(y, dim=1) if self.unit_norm else y


class GroupedHydra(MultiTaskModel):
    def __init__(
        self,
        tasks: Sequence[TaskSpec] = SCENE_TASKS,
        input_size: int = 64,
        widths: Sequence[int] = (32, 64, 128),
        groups: int = 4,
        head_width: int = 32,
    ) -> None:
        super().__init__(tasks, input_size)
        self._config = {
            "input_size": input_size,
            "widths": list(widths),
            "groups": groups,
            "head_width": head_width,
        }
        self.trunk = GroupedTrunk(widths, groups)
        self.heads = nn.ModuleDict(
            {
                t.name: FuseHead(t, widths[2], widths[1], head_width, input_size)
                if t.dense
                else PooledClass(t, widths[2], 2 * head_width, index=1)
                for t in tasks
            }
        )

    def config(self) -> dict[str, Any]:
        return dict(self._config)
