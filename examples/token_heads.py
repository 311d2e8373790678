"""A patch-embedding conv trunk whose output is a sequence of tokens (N x tokens x C), read by
transformer-style heads: each head runs its own attention layer and token MLP on the tokens, then a
per-token Linear (dense tasks: folded back into a map) or a pooled one (image-level tasks).

Every Linear here runs on N x tokens x C; with the test's sizes the token count equals the width, the
case where scoring channels on dim 1 goes wrong without an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.server.mtl import SCENE_TASKS, MultiTaskModel, TaskSpec
from examples.mobilevit import TransformerLayer, conv_bn


class TokenTrunk(nn.Module):
    """4x4 patch embedding (stride 4) -> two 3x3 conv blocks -> tokens -> one transformer layer."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.patches = conv_bn(3, dim, 4, 4)
        self.mix = nn.Sequential(conv_bn(dim, dim, 3, groups=dim), conv_bn(dim, dim, 1))
        self.layer = TransformerLayer(dim, heads, mlp)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        y = self.patches(x)
        y = y + self.mix(y)
        return (self.layer(y.flatten(2).transpose(1, 2)),)


class TokenHead(nn.Module):
    """tokens -> transformer layer -> LayerNorm -> Linear + GELU -> Linear to the task's channels, per
    token (dense: folded into a grid and resized to the input) or on the mean token (image-level)."""

    def __init__(self, spec: TaskSpec, dim: int, heads: int, hidden: int, size: int) -> None:
        super().__init__()
        self.layer = TransformerLayer(dim, heads, 2 * hidden)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, spec.channels)
        self.dense = spec.dense
        self.size = size
        self.unit_norm = spec.kind == "normals"

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        tokens = self.norm(self.layer(feats[0]))
        if not self.dense:
            return self.out(F.gelu(self.fc(tokens.mean(dim=1))))
        y = self.out(F.gelu(self.fc(tokens)))  # N x tokens x channels
        n, t, c = y.shape
        side = int(t**0.5)
        y = y.transpose(1, 2).reshape(n, c, side, side)
        y = F.interpolate(y, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return F.normalize(y, dim=1) if self.unit_norm else y


class TokenHeads(MultiTaskModel):
    def __init__(
        self,
        tasks: Sequence[TaskSpec] = SCENE_TASKS,
        input_size: int = 64,
        dim: int = 64,
        heads: int = 4,
        mlp: int = 128,
        head_width: int = 32,
    ) -> None:
        super().__init__(tasks, input_size)
        self._config = {
            "input_size": input_size,
            "dim": dim,
            "heads": heads,
            "mlp": mlp,
            "head_width": head_width,
        }
        self.trunk = TokenTrunk(dim, heads, mlp)
        self.heads = nn.ModuleDict({t.name: TokenHead(t, dim, heads, head_width, input_size) for t in tasks})

    def config(self) -> dict[str, Any]:
        return dict(self._config)
