"""MobileNetV2-style encoder (inverted residuals: 1x1 expand, 3x3 depthwise, 1x1 project, residual adds)
with an FPN decoder (lateral 1x1 convs, top-down upsample + add, 3x3 smoothing).

Dense heads read the FPN's finest map (stride 4); image-level heads pool the encoder's deepest map,
so a device with image-level tasks only gets no FPN at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.server.mtl import SCENE_TASKS, MultiTaskModel, TaskSpec
from examples.heads import DenseOut, PooledClass


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetFPNTrunk(nn.Module):
    """stem (s2) -> stages at strides 4, 8, 16 -> FPN; returns (FPN stride-4 map, encoder stride-16 map)."""

    def __init__(self, widths: Sequence[int], fpn: int, expand: int, blocks: int) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = conv_bn(3, w0, 3, 2)
        self.first = InvertedResidual(w0, w0, 1, 1)
        self.stages = nn.ModuleList(
            nn.Sequential(
                *[InvertedResidual(a if i == 0 else b, b, 2 if i == 0 else 1, expand) for i in range(blocks)]
            )
            for a, b in ((w0, w1), (w1, w2), (w2, w3))
        )
        self.lateral = nn.ModuleList(nn.Conv2d(w, fpn, 1) for w in (w1, w2, w3))
        self.smooth = conv_bn(fpn, fpn, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.first(self.stem(x))
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        top = self.lateral[2](feats[2])
        for level in (1, 0):
            lat = self.lateral[level](feats[level])
            top = lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
        return self.smooth(top), feats[2]


class MobileNetFPN(MultiTaskModel):
    def __init__(
        self,
        tasks: Sequence[TaskSpec] = SCENE_TASKS,
        input_size: int = 64,
        widths: Sequence[int] = (16, 24, 32, 64),
        fpn: int = 32,
        expand: int = 4,
        blocks: int = 2,
        head_width: int = 32,
    ) -> None:
        super().__init__(tasks, input_size)
        self._config = {
            "input_size": input_size,
            "widths": list(widths),
            "fpn": fpn,
            "expand": expand,
            "blocks": blocks,
            "head_width": head_width,
        }
        self.trunk = MobileNetFPNTrunk(widths, fpn, expand, blocks)
        self.heads = nn.ModuleDict(
            {
                t.name: DenseOut(t, fpn, head_width, input_size, index=0)
                if t.dense
                else PooledClass(t, widths[3], head_width * 2, index=1)
                for t in tasks
            }
        )

    def config(self) -> dict[str, Any]:
        return dict(self._config)
