"""Feature distillation: the pruned student matches the original model's trunk outputs (the features
the kept heads read), not only its final outputs.

The student is a pruned copy of the teacher, so each trunk output has the same spatial shape and
fewer channels. Where the widths differ, a learned 1x1 adapter (a Conv2d for feature maps, a Linear
for vectors and for token sequences, N x tokens x C, whose channels are the last axis) maps the
student's channels to the teacher's; it is initialised by least squares on the
first batch, so the loss starts at what the kept channels can already explain. The adapters live
here, outside the student: they are trained beside it and dropped afterwards, never exported.

The loss per feature is the mean squared error divided by the teacher feature's variance, so trunk
outputs of different scales weigh alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _as_tuple(out: object) -> tuple[torch.Tensor, ...]:
    items = out if isinstance(out, tuple | list) else (out,)
    return tuple(t for t in items if isinstance(t, torch.Tensor))


@contextmanager
def trunk_outputs(model: nn.Module) -> Iterator[list[tuple[torch.Tensor, ...]]]:
    """Inside the block, each forward of `model` appends its trunk's outputs to the yielded list."""
    seen: list[tuple[torch.Tensor, ...]] = []

    def keep(_m: nn.Module, _i: object, out: object) -> None:
        seen.append(_as_tuple(out))

    trunk = getattr(model, "trunk", None)
    if not isinstance(trunk, nn.Module):
        raise ValueError(f"{type(model).__name__} has no `trunk` module to distil features from")
    hook = trunk.register_forward_hook(keep)
    try:
        yield seen
    finally:
        hook.remove()


def _channels_axis(t: torch.Tensor) -> int:
    return -1 if t.dim() == 3 else 1  # tokens carry their channels last


def _comparable(s: torch.Tensor, t: torch.Tensor) -> bool:
    if s.dim() not in (2, 3, 4) or s.dim() != t.dim():
        return False
    return s.movedim(_channels_axis(s), -1).shape[:-1] == t.movedim(_channels_axis(t), -1).shape[:-1]


@torch.no_grad()
def _least_squares(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W (Ct x Cs), b (Ct) minimising ||W s + b - t|| over every position of the batch."""
    xs = s.movedim(_channels_axis(s), -1)
    xt = t.movedim(_channels_axis(t), -1)
    xs, xt = xs.reshape(-1, xs.shape[-1]).double(), xt.reshape(-1, xt.shape[-1]).double()
    ones = torch.ones(xs.shape[0], 1, dtype=xs.dtype)
    sol = torch.linalg.lstsq(torch.cat([xs, ones], 1), xt, rcond=None).solution  # (Cs+1) x Ct
    return sol[:-1].T.float().contiguous(), sol[-1].float()


class FeatureAdapters(nn.Module):
    """One adapter per trunk output whose width differs (identity where it does not; skipped where
    the shapes cannot be compared)."""

    def __init__(self, student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.maps = nn.ModuleDict()
        self.used: list[int] = []
        for i, (s, t) in enumerate(zip(student, teacher, strict=False)):
            if not _comparable(s, t):
                continue
            self.used.append(i)
            if s.shape[_channels_axis(s)] == t.shape[_channels_axis(t)]:
                continue
            w, b = _least_squares(s.detach(), t.detach())
            layer: nn.Conv2d | nn.Linear
            if s.dim() == 4:
                layer = nn.Conv2d(s.shape[1], t.shape[1], 1)
                layer.weight.data.copy_(w[:, :, None, None])
            else:
                layer = nn.Linear(s.shape[-1], t.shape[-1])
                layer.weight.data.copy_(w)
            assert layer.bias is not None
            layer.bias.data.copy_(b)
            self.maps[str(i)] = layer

    def loss(self, student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]) -> torch.Tensor:
        parts = []
        for i in self.used:
            s, t = student[i], teacher[i].detach()
            mapped = self.maps[str(i)](s) if str(i) in self.maps else s
            parts.append((mapped - t).pow(2).mean() / t.var().clamp_min(1e-6))
        return sum(parts, torch.zeros(())) / max(1, len(parts))
