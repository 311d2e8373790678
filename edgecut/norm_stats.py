"""A device's normalisation statistics (issue 31): what the agent accumulates, what it sends, what the
server reads back. Shared by the agent (numpy only, no torch) and the server.

The statistics model (edgecut/server/cut/statistics.py) takes a batch of images and returns, for every
BatchNorm layer, the per-channel mean and variance of that layer's input over the batch, each layer
normalised with its own batch statistics (exactly what re-estimating BatchNorm on the server does).
Its outputs are named "<layer>.mean" and "<layer>.var"; "input" is the RGB image itself.

`Accumulator` merges batches into population statistics by the law of total variance (the variance
of every channel over all inputs seen, not the average of the batches' variances), in float64 and in
O(channels) memory. `to_proto` / `from_proto` carry them as float16 in a `StatsSummary`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgecut.v1 import fleet_pb2 as pb

INPUT = "input"  # the image's own RGB statistics, beside the normalisation layers'
MEAN, VAR = ".mean", ".var"
_F16_MAX = float(np.finfo(np.float16).max)

Layers = dict[str, tuple[np.ndarray, np.ndarray]]  # layer -> (per-channel mean, per-channel variance)


class StatsError(ValueError):
    """A summary or a statistics model's outputs that cannot be statistics (one sentence)."""


def layer_names(outputs: Mapping[str, object]) -> list[str]:
    """The layers a statistics model's outputs cover, in their order."""
    names = [n[: -len(MEAN)] for n in outputs if n.endswith(MEAN)]
    missing = [n for n in names if n + VAR not in outputs]
    if missing or not names:
        raise StatsError(
            f"not a statistics model: no variance for {missing[0]!r}"
            if missing
            else "not a statistics model: no '<layer>.mean' output"
        )
    return names


class Accumulator:
    """Running per-channel statistics over every batch added."""

    def __init__(self) -> None:
        self.images = 0
        self._sum: dict[str, np.ndarray] = {}  # sum over batches of n * mean
        self._sq: dict[str, np.ndarray] = {}  # sum over batches of n * (var + mean^2)

    def add(self, outputs: Mapping[str, np.ndarray], images: int) -> None:
        """One run of the statistics model over `images` inputs (its outputs by name)."""
        if images <= 0:
            raise StatsError("a batch of statistics needs at least one image")
        names = layer_names(outputs)
        for name in names:
            mean = np.asarray(outputs[name + MEAN], dtype=np.float64).reshape(-1)
            var = np.asarray(outputs[name + VAR], dtype=np.float64).reshape(-1)
            if mean.shape != var.shape or not (np.isfinite(mean).all() and np.isfinite(var).all()):
                raise StatsError(f"layer {name!r}: mean and variance must be finite and of one length")
            if name in self._sum and self._sum[name].shape != mean.shape:
                raise StatsError(f"layer {name!r} changed width from {self._sum[name].size} to {mean.size}")
            self._sum[name] = self._sum.get(name, 0.0) + images * mean
            self._sq[name] = self._sq.get(name, 0.0) + images * (var + mean * mean)
        self.images += images

    def layers(self) -> Layers:
        """Per layer: the mean and the (population) variance over every image added."""
        if not self.images:
            return {}
        out: Layers = {}
        for name, s in self._sum.items():
            mean = s / self.images
            out[name] = (mean, np.maximum(self._sq[name] / self.images - mean * mean, 0.0))
        return out

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


def to_proto(
    layers: Layers, device_id: str, artifact_id: str, images: int, sequence: int, sent_unix_ms: int
) -> pb.StatsSummary:
    msg = pb.StatsSummary(
        device_id=device_id,
        artifact_id=artifact_id,
        images=images,
        sequence=sequence,
        sent_unix_ms=sent_unix_ms,
    )
    for name, (mean, var) in layers.items():
        msg.layers.add(
            layer=name,
            mean=np.clip(mean, -_F16_MAX, _F16_MAX).astype("<f2").tobytes(),
            var=np.clip(var, 0.0, _F16_MAX).astype("<f2").tobytes(),
        )
    return msg


def from_proto(msg: pb.StatsSummary) -> Layers:
    """The layers of a received summary; a malformed one raises StatsError (one sentence)."""
    out: Layers = {}
    for item in msg.layers:
        if not item.layer or item.layer in out:
            raise StatsError(f"summary layer {item.layer!r} is empty or repeated")
        if len(item.mean) != len(item.var) or len(item.mean) % 2 or not item.mean:
            raise StatsError(
                f"summary layer {item.layer!r}: mean and variance are not float16 vectors of one length"
            )
        mean = np.frombuffer(item.mean, dtype="<f2").astype(np.float64)
        var = np.frombuffer(item.var, dtype="<f2").astype(np.float64)
        if not (np.isfinite(mean).all() and np.isfinite(var).all()) or (var < 0).any():
            raise StatsError(f"summary layer {item.layer!r} holds values that are not statistics")
        out[item.layer] = (mean, var)
    return out
