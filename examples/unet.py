"""A depthwise-separable U-Net: the decoder joins the encoder by *concatenated* skips, each followed by
a depthwise conv (which ties both concat inputs into one channel group), plus a task-specific branch
before one dense head and image-level heads on the pooled bottleneck.

This is the model shape of edgecut issue 16: the engine must prune each concat input down to its own
floor, and a device with only image-level tasks must drop the whole decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.server.mtl import SCENE_TASKS, MultiTaskModel, TaskSpec
from examples.heads import DenseOut, PooledClass


class SeparableConv(nn.Module):
    """3x3 depthwise (optionally strided) -> BN -> 1x1 pointwise -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.dw_bn = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pw_bn(self.pw(F.relu(self.dw_bn(self.dw(x))))))


class Up(nn.Module):
    """Upsample x2, concatenate the encoder's skip, then a separable conv over the concatenation."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv = SeparableConv(cin + skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class UNetTrunk(nn.Module):
    """Returns (decoder output at full resolution, bottleneck at stride 8)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.down1 = SeparableConv(w, 2 * w, 2)
        self.down2 = SeparableConv(2 * w, 4 * w, 2)
        self.down3 = SeparableConv(4 * w, 8 * w, 2)
        self.up3 = Up(8 * w, 4 * w, 4 * w)
        self.up2 = Up(4 * w, 2 * w, 2 * w)
        self.up1 = Up(2 * w, w, w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e0 = self.stem(x)
        e1 = self.down1(e0)
        e2 = self.down2(e1)
        bottleneck = self.down3(e2)
        d = self.up1(self.up2(self.up3(bottleneck, e2), e1), e0)
        return d, bottleneck


class BranchHead(nn.Module):
    """A task-specific branch: its own path from the bottleneck, concatenated with the decoder output."""

    def __init__(self, spec: TaskSpec, width: int, deep: int, size: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(deep, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.mix = SeparableConv(2 * width, width)
        self.out = nn.Conv2d(width, spec.channels, 1)
        self.unit_norm = spec.kind == "normals"

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        d, deep = feats
        b = F.interpolate(self.branch(deep), size=d.shape[-2:], mode="bilinear", align_corners=False)
        y = self.out(self.mix(torch.cat([d, b], dim=1)))
        return F.normalize(y, dim=1) if self.unit_norm else y


class DepthwiseUNet(MultiTaskModel):
    def __init__(
        self,
        tasks: Sequence[TaskSpec] = SCENE_TASKS,
        input_size: int = 64,
        width: int = 16,
        head_width: int = 16,
        branch_task: str | None = None,
    ) -> None:
        super().__init__(tasks, input_size)
        # The branch goes before the first dense task that is not segmentation, unless named.
        dense = [t.name for t in tasks if t.dense]
        branch = branch_task or next((t.name for t in tasks if t.dense and t.kind != "segmentation"), None)
        self._config = {
            "input_size": input_size,
            "width": width,
            "head_width": head_width,
            "branch_task": branch,
        }
        self.trunk = UNetTrunk(width)
        heads: dict[str, nn.Module] = {}
        for t in tasks:
            if t.name == branch and t.name in dense:
                heads[t.name] = BranchHead(t, width, 8 * width, input_size)
            elif t.dense:
                heads[t.name] = DenseOut(t, width, head_width, input_size, index=0)
            else:
                heads[t.name] = PooledClass(t, 8 * width, 2 * head_width, index=1)
        self.heads = nn.ModuleDict(heads)

    def config(self) -> dict[str, Any]:
        return dict(self._config)
