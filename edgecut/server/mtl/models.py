"""Reference multi-task models in the style of the seeds' NYUv2 set-ups.

`resnet-mtl`: a ResNet-style shared encoder (residual BasicBlocks + BatchNorm, output stride 8) and
per task a small decoder head that fuses the deepest features with a stride-4 skip (dense tasks) or
pools them (image-level tasks). `densecat-mtl`: the same idea with DenseNet-style concatenating
blocks, so the engine is shown to work on a second block shape (concat skips, no residual adds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.tasks import SCENE_TASKS, TaskSpec


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.down(x))


class ResNetTrunk(nn.Module):
    """stem (stride 2) -> layer1 (s1) -> layer2 (s2) -> layer3 (s2); returns (layer2 @ 1/4, layer3 @ 1/8)."""

    def __init__(self, widths: Sequence[int], blocks: int = 2) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = conv_bn(3, w0, 3, 2)
        self.layer1 = nn.Sequential(*[BasicBlock(w0 if i == 0 else w1, w1) for i in range(blocks)])
        self.layer2 = nn.Sequential(
            *[BasicBlock(w1 if i == 0 else w2, w2, 2 if i == 0 else 1) for i in range(blocks)]
        )
        self.layer3 = nn.Sequential(
            *[BasicBlock(w2 if i == 0 else w3, w3, 2 if i == 0 else 1) for i in range(blocks)]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer1(self.stem(x))
        skip = self.layer2(x)
        return skip, self.layer3(skip)


class DenseHead(nn.Module):
    """Deep features -> conv -> upsample x2 -> concat skip -> conv -> 1x1 -> bilinear to the input size."""

    def __init__(self, deep: int, skip: int, hidden: int, out: int, size: int, unit_norm: bool) -> None:
        super().__init__()
        self.reduce = conv_bn(deep, hidden)
        self.fuse = conv_bn(hidden + skip, hidden)
        self.out = nn.Conv2d(hidden, out, 1)
        self.size = size
        self.unit_norm = unit_norm

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        skip, deep = feats[0], feats[-1]
        y = F.interpolate(self.reduce(deep), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        y = self.out(self.fuse(torch.cat([y, skip], dim=1)))
        y = F.interpolate(y, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return F.normalize(y, dim=1) if self.unit_norm else y


class ClassHead(nn.Module):
    """Global pooling of the deepest features -> MLP -> class logits."""

    def __init__(self, deep: int, hidden: int, out: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(deep, hidden)
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(torch.flatten(self.pool(feats[-1]), 1))))


def make_heads(tasks: Sequence[TaskSpec], deep: int, skip: int, hidden: int, size: int) -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            t.name: DenseHead(deep, skip, hidden, t.channels, size, unit_norm=t.kind == "normals")
            if t.dense
            else ClassHead(deep, hidden * 2, t.channels)
            for t in tasks
        }
    )


class ResNetMTL(MultiTaskModel):
    """The reference model: a ResNet-style encoder (output stride 8) and one small decoder head per task."""

    arch = "resnet-mtl"  # its name in checkpoints and on the command line (plugins.BUILTIN)

    def __init__(
        self,
        tasks: Sequence[TaskSpec] = SCENE_TASKS,
        input_size: int = 64,
        widths: Sequence[int] = (32, 32, 64, 128),
        head_width: int = 48,
        blocks: int = 2,
    ) -> None:
        super().__init__(tasks, input_size)
        self._config = {
            "input_size": input_size,
            "widths": list(widths),
            "head_width": head_width,
            "blocks": blocks,
        }
        self.trunk = ResNetTrunk(widths, blocks)
        self.heads = make_heads(tasks, widths[3], widths[2], head_width, input_size)

    def config(self) -> dict[str, Any]:
        return dict(self._config)


class DenseBlock(nn.Module):
    """DenseNet-style: each layer's output is concatenated onto its input (no residual add)."""

    def __init__(self, cin: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([conv_bn(cin + i * growth, growth) for i in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class DenseCatTrunk(nn.Module):
    def __init__(self, width: int, growth: int, layers: int) -> None:
        super().__init__()
        self.stem = conv_bn(3, width, 3, 2)
        self.block1 = DenseBlock(width, growth, layers)
        c1 = width + layers * growth
        self.trans1 = conv_bn(c1, width * 2, 3, 2)
        self.block2 = DenseBlock(width * 2, growth, layers)
        c2 = width * 2 + layers * growth
        self.trans2 = conv_bn(c2, width * 4, 3, 2)
        self.out_channels = (c2, width * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.block2(self.trans1(self.block1(self.stem(x))))
        return skip, self.trans2(skip)


class DenseCatMTL(MultiTaskModel):
    """DenseNet-style concatenating blocks (no residual adds) with the reference's heads."""

    arch = "densecat-mtl"

    def __init__(
        self,
        tasks: Sequence[TaskSpec] = SCENE_TASKS,
        input_size: int = 64,
        width: int = 16,
        growth: int = 12,
        layers: int = 3,
        head_width: int = 32,
    ) -> None:
        super().__init__(tasks, input_size)
        self._config = {
            "input_size": input_size,
            "width": width,
            "growth": growth,
            "layers": layers,
            "head_width": head_width,
        }
        self.trunk = DenseCatTrunk(width, growth, layers)
        skip, deep = self.trunk.out_channels
        self.heads = make_heads(tasks, deep, skip, head_width, input_size)

    def config(self) -> dict[str, Any]:
        return dict(self._config)
