"""A MobileViT-style hybrid: inverted-residual conv stages, then a block that reads the map as tokens
(LayerNorm, multi-head self-attention, a token MLP, residual adds) and folds them back into a map.

The attention block is what plain-CNN pruning gets wrong: its Linear layers run on N x tokens x C
(the channel axis is the last one, not dim 1), and multi-head attention only stays valid when every
head loses the same channel positions. Dense heads read the stride-8 map after the transformer;
image-level heads pool the stride-16 map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgecut.server.mtl import SCENE_TASKS, MultiTaskModel, TaskSpec
from examples.heads import DenseOut, PooledClass


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class MV2(nn.Module):
    """MobileNetV2 inverted residual with SiLU."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(
            conv_bn(cin, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, cout, 1, act=False),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer on N x tokens x dim: attention and a token MLP, each with a residual add."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MobileViTBlock(nn.Module):
    """local 3x3 -> 1x1 to `dim` -> tokens (one per position) -> transformer -> map -> 1x1 back ->
    concat with the input -> 3x3 fuse."""

    def __init__(self, channels: int, dim: int, heads: int, mlp: int, depth: int) -> None:
        super().__init__()
        self.local = conv_bn(channels, channels, 3)
        self.to_tokens = nn.Conv2d(channels, dim, 1, bias=False)
        self.layers = nn.Sequential(*[TransformerLayer(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.from_tokens = conv_bn(dim, channels, 1)
        self.fuse = conv_bn(2 * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        y = self.to_tokens(self.local(x))
        tokens = self.norm(self.layers(y.flatten(2).transpose(1, 2)))
        y = tokens.transpose(1, 2).reshape(n, -1, h, w)
        return self.fuse(torch.cat([x, self.from_tokens(y)], dim=1))


class MobileViTTrunk(nn.Module):
    """stem (s2) -> MV2 (s4) -> MV2 (s8) -> MobileViT block -> MV2 (s16); returns (stride-8, stride-16)."""

    def __init__(
        self, widths: Sequence[int], dim: int, heads: int, mlp: int, depth: int, expand: int
    ) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = conv_bn(3, w0, 3, 2)
        self.down = nn.Sequential(MV2(w0, w1, 2, expand), MV2(w1, w1, 1, expand), MV2(w1, w2, 2, expand))
        self.vit = MobileViTBlock(w2, dim, heads, mlp, depth)
        self.deep = MV2(w2, w3, 2, expand)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.vit(self.down(self.stem(x)))
        return mid, self.deep(mid)


class MobileViT(MultiTaskModel):
    def __init__(
        self,
        tasks: Sequence[TaskSpec] = SCENE_TASKS,
        input_size: int = 64,
        widths: Sequence[int] = (16, 24, 32, 64),
        dim: int = 48,
        heads: int = 4,
        mlp: int = 96,
        depth: int = 1,
        expand: int = 2,
        head_width: int = 32,
    ) -> None:
        super().__init__(tasks, input_size)
        self._config = {
            "input_size": input_size,
            "widths": list(widths),
            "dim": dim,
            "heads": heads,
            "mlp": mlp,
            "depth": depth,
            "expand": expand,
            "head_width": head_width,
        }
        self.trunk = MobileViTTrunk(widths, dim, heads, mlp, depth, expand)
        self.heads = nn.ModuleDict(
            {
                t.name: DenseOut(t, widths[2], head_width, input_size, index=0)
                if t.dense
                else PooledClass(t, widths[3], head_width * 2, index=1)
                for t in tasks
            }
        )

    def config(self) -> dict[str, Any]:
        return dict(self._config)
