"""Quantisation-aware training: a model computes as its static INT8 export will (quantise.py), so a
recovery can learn weights that lose little when onnxruntime quantises them.

Inside `quantisation_aware(model, images)`:
- every Conv2d / Linear weight is rounded per output channel to 255 symmetric levels, what onnxruntime's
  per-channel QInt8 weights do. BatchNorm is frozen (eval mode), so folding it into the convolution
  scales each output channel by a constant and leaves that rounding the same;
- every Conv2d / Linear input is rounded to 256 levels over the range calibration measured (the
  99.999th percentiles of `images`' activations, as the engine's calibration does), what the QDQ
  activations before each layer do.
Rounding passes gradients straight through inside the range (torch's fake-quantise operators). On exit
the rounded weights are kept (they lie on the grid onnxruntime will use) and the hooks are removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

PERCENTILE = 99.999  # quantise.PERCENTILE's activation ranges
_SAMPLE = 1 << 20  # values kept per layer to find its range (a random subset of large activations)
_LAYERS = (nn.Conv2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Weights(nn.Module):
    """A weight rounded per output channel to the int8 levels of its largest magnitude."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = (weight.detach().abs().flatten(1).amax(1) / 127).clamp_min(1e-8)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


def _uint8(low: float, high: float) -> tuple[float, int]:
    """Scale and zero point of 256 levels over [low, high] (a range always holding 0, as onnxruntime's)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / 255, 1e-8)
    return scale, int(min(255, max(0, round(-low / scale))))


def input_ranges(
    model: nn.Module, images: torch.Tensor, batch: int = 32
) -> dict[nn.Module, tuple[float, int]]:
    """Per Conv2d / Linear of `model` (in eval mode), the scale and zero point of its input on `images`."""
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
    seen: dict[nn.Module, list[np.ndarray]] = {m: [] for m in layers}
    rng = np.random.default_rng(0)

    def keep(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        values = args[0].detach().flatten().numpy()
        if len(values) > _SAMPLE // 4:
            values = values[rng.integers(0, len(values), _SAMPLE // 4)]
        seen[module].append(values)

    handles = [m.register_forward_pre_hook(keep) for m in layers]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(images), batch):
                model(images[start : start + batch])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    ranges = {}
    for module, parts in seen.items():
        if not parts:  # a layer the forward pass never reached
            continue
        values = np.concatenate(parts)
        if len(values) > _SAMPLE:
            values = values[rng.integers(0, len(values), _SAMPLE)]
        low, high = np.percentile(values, [100 - PERCENTILE, PERCENTILE])
        ranges[module] = _uint8(float(low), float(high))
    return ranges


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers to eval mode (their running statistics fixed) while the rest trains."""
    for m in model.modules():
        if isinstance(m, _NORMS):
            m.eval()


@contextmanager
def quantisation_aware(model: nn.Module, images: torch.Tensor) -> Iterator[None]:
    """`model` computes in fake int8 (module docstring) until the block ends; its weights then stay rounded.

    `images`: calibration images (N x 3 x H x W) for the activation ranges. A model in training mode keeps
    its BatchNorm frozen inside the block (call `freeze_batchnorm` again after another `train()`)."""
    ranges = input_ranges(model, images)
    if model.training:
        freeze_batchnorm(model)

    def rounded(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        scale, zero = ranges[module]
        return (torch.fake_quantize_per_tensor_affine(args[0], scale, zero, 0, 255), *args[1:])

    layers = [m for m in model.modules() if isinstance(m, _LAYERS) and m in ranges]
    handles = [m.register_forward_pre_hook(rounded) for m in layers]
    for m in layers:
        parametrize.register_parametrization(m, "weight", _Weights())
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m in layers:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
