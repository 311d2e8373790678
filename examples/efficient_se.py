"""An EfficientNet-style encoder: inverted residuals with squeeze-excitation (a pooled gate that
multiplies the block's channels), SiLU / Hardswish, and an ASPP-like decoder (dilated depthwise convs
whose outputs are concatenated) for the dense heads.

Squeeze-excitation ties the gate's output channels to the block's: removing a channel removes it from
both, so the pooled branch must shrink with the map it gates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgecut.server.mtl import SCENE_TASKS, MultiTaskModel, TaskSpec
from examples.heads import DenseOut, PooledClass


def conv_bn(
    cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class SqueezeExcite(nn.Module):
    """x * hardsigmoid(expand(silu(reduce(mean(x)))))."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(nn.functional.silu(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * nn.functional.hardsigmoid(gate)


class MBConvSE(nn.Module):
    """1x1 expand -> 3x3 depthwise -> squeeze-excitation -> 1x1 project; a residual add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Sequential(conv_bn(cin, hidden, 1), nn.SiLU())
        self.depthwise = nn.Sequential(conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.SiLU())
        self.se = SqueezeExcite(hidden, max(4, cin // 4))
        self.project = conv_bn(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class DilatedPyramid(nn.Module):
    """1x1 + dilated depthwise 3x3 branches (rates 1, 2, 3), concatenated, fused by a 1x1 with Hardswish."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn(cin, cin, 1)] + [conv_bn(cin, cin, 3, groups=cin, dilation=r) for r in (1, 2, 3)]
        )
        self.fuse = nn.Sequential(conv_bn(4 * cin, cout, 1), nn.Hardswish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([b(x) for b in self.branches], dim=1))


class EfficientSETrunk(nn.Module):
    """stem (s2) -> MBConv-SE stages (s4, s8) -> dilated pyramid; returns (pyramid s8 map, encoder s8 map)."""

    def __init__(self, widths: Sequence[int], pyramid: int, expand: int) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.stem = nn.Sequential(conv_bn(3, w0, 3, 2), nn.Hardswish())
        self.stages = nn.Sequential(
            MBConvSE(w0, w1, 2, expand),
            MBConvSE(w1, w1, 1, expand),
            MBConvSE(w1, w2, 2, expand),
            MBConvSE(w2, w2, 1, expand),
        )
        self.pyramid = DilatedPyramid(w2, pyramid)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        deep = self.stages(self.stem(x))
        return self.pyramid(deep), deep


class EfficientSE(MultiTaskModel):
    def __init__(
        self,
        tasks: Sequence[TaskSpec] = SCENE_TASKS,
        input_size: int = 64,
        widths: Sequence[int] = (16, 24, 48),
        pyramid: int = 32,
        expand: int = 3,
        head_width: int = 32,
    ) -> None:
        super().__init__(tasks, input_size)
        self._config = {
            "input_size": input_size,
            "widths": list(widths),
            "pyramid": pyramid,
            "expand": expand,
            "head_width": head_width,
        }
        self.trunk = EfficientSETrunk(widths, pyramid, expand)
        self.heads = nn.ModuleDict(
            {
                t.name: DenseOut(t, pyramid, head_width, input_size, index=0)
                if t.dense
                else PooledClass(t, widths[2], head_width * 2, index=1)
                for t in tasks
            }
        )

    def config(self) -> dict[str, Any]:
        return dict(self._config)
