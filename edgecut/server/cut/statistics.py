"""The statistics companion of a tailored model (issue 31), and installing what it measured.

A device cannot re-estimate BatchNorm statistics with the model it serves: the exported ONNX folds each
BatchNorm into its convolution, and statistics measured in one pass of that model are wrong past the
first layer (each layer's inputs depend on the earlier layers already being adapted). The statistics
model is the same network in which every BatchNorm normalises with the statistics of the batch it is
given and reports them: one pass over a batch of the device's images yields what server-side
re-estimation (recover.recalibrate_batchnorm) would measure on them. Its outputs are named as
edgecut/norm_stats.py says ("<layer>.mean", "<layer>.var", and "input.*" for the RGB image).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from edgecut.norm_stats import INPUT, MEAN, VAR, Layers, StatsError
from edgecut.server.cut.export import OPSET
from edgecut.server.mtl.contract import MultiTaskModel

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=dims)
    return mean, (x - mean.view(1, -1, *[1] * (x.dim() - 2))).pow(2).mean(dim=dims)


class _BatchStatsNorm(nn.Module):
    """A BatchNorm that normalises with its batch's own mean and (biased) variance and records them."""

    def __init__(
        self,
        bn: nn.BatchNorm1d | nn.BatchNorm2d,
        name: str,
        sink: dict[str, tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        super().__init__()
        self.bn, self.name, self.sink = bn, name, sink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = _moments(x)
        self.sink[self.name] = (mean, var)
        shape = (1, -1, *[1] * (x.dim() - 2))
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.bn.eps)
        if self.bn.affine:
            y = y * self.bn.weight.view(shape) + self.bn.bias.view(shape)
        return y


class StatisticsModel(nn.Module):
    """`model` (copied) with batch-statistics normalisation; forward returns the statistics in `names`
    order, mean then variance for each layer, the input's first."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.net = copy.deepcopy(model).eval()
        self.input_size = model.input_size
        self._sink: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, m in list(self.net.named_modules()):
            if isinstance(m, _BN):
                parent, _, leaf = name.rpartition(".")
                setattr(
                    self.net.get_submodule(parent) if parent else self.net,
                    leaf,
                    _BatchStatsNorm(m, name, self._sink),
                )
        with torch.no_grad():  # a probe run: the layers the selected tasks read, in the order they run
            self.net(torch.rand(2, 3, self.input_size, self.input_size))
        self.layers = [INPUT, *self._sink]
        if len(self.layers) == 1:
            raise StatsError(f"{type(model).__name__} has no BatchNorm layer: there is nothing to adapt")

    @property
    def output_names(self) -> list[str]:
        return [name + suffix for name in self.layers for suffix in (MEAN, VAR)]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._sink.clear()
        self.net(image)
        found = {INPUT: _moments(image), **self._sink}
        return tuple(t for name in self.layers for t in found[name])


def export_statistics_model(model: MultiTaskModel, path: Path) -> Path:
    """Write `model`'s statistics model to `path` (ONNX, input "image" with any batch size)."""
    stats = StatisticsModel(model)
    x = torch.rand(4, 3, model.input_size, model.input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            stats,
            (x,),
            str(path),
            input_names=["image"],
            output_names=stats.output_names,
            dynamic_axes={"image": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def install_statistics(model: MultiTaskModel, layers: Layers) -> int:
    """Set `model`'s BatchNorm running statistics to `layers` (AdaBN); returns how many layers it set.
    A layer of another width than the model's raises StatsError: the statistics are of another model."""
    done = 0
    for name, m in model.named_modules():
        if isinstance(m, _BN) and name in layers:
            mean, var = layers[name]
            if mean.size != m.num_features:
                raise StatsError(f"layer {name!r} has {m.num_features} channels, the statistics {mean.size}")
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.as_tensor(mean, dtype=m.running_mean.dtype))
            m.running_var.copy_(torch.as_tensor(var, dtype=m.running_var.dtype))
            done += 1
    return done
