"""Checking a new model without labels (issue 31): compare it with the model it replaced on the recent
real inputs the agent holds in memory (edgecut/agent/adapt.py), and say when it is clearly worse.

- **Agreement**: per task, the share of predictions the two models agree on: the same arg-max class per
  pixel (segmentation) or per image (classification); for regression outputs (depth, normals, edges,
  ...), values within a quarter of the old model's standard deviation of each other. Averaged over tasks.
- **Entropy**: the mean softmax entropy of the class outputs, divided by log(classes) so it lies in
  [0, 1] whatever the class count; a model that got less sure of what it sees is suspect.

A new model is *clearly worse* when its agreement with the old one falls below `min_agreement` or its
entropy rises above the old one's by more than `max_entropy_rise`; the agent then rolls it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from edgecut.model_meta import ModelMeta

CLASS_KINDS = ("segmentation", "classification")
REGRESSION_TOLERANCE = 0.25  # of the old model's standard deviation, per output
MIN_IMAGES = 4  # fewer recent inputs than this say nothing


class Model(Protocol):
    """What the check needs of a loaded model (runtime.LoadedModel)."""

    @property
    def meta(self) -> ModelMeta: ...

    def run(self, image: np.ndarray) -> Mapping[str, np.ndarray]: ...


@dataclass(frozen=True)
class ProxyResult:
    images: int = 0
    agreement: float = 1.0
    entropy_new: float = 0.0
    entropy_old: float = 0.0
    note: str = ""  # why the check did not run ("" = it ran)

    def worse(self, min_agreement: float, max_entropy_rise: float) -> str:
        """Why the new model is clearly worse ("" = it is not, or the check did not run)."""
        if self.note:
            return ""
        if self.agreement < min_agreement:
            return (
                f"it agrees with the model it replaced on {self.agreement:.1%} of {self.images} recent "
                f"inputs' predictions (at least {min_agreement:.0%} needed)"
            )
        rise = self.entropy_new - self.entropy_old
        if rise > max_entropy_rise:
            return (
                f"its prediction entropy on {self.images} recent inputs rose from {self.entropy_old:.2f} "
                f"to {self.entropy_new:.2f} (at most +{max_entropy_rise:.2f} allowed)"
            )
        return ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entropy(logits: np.ndarray) -> float:
    """Mean softmax entropy over axis 1, divided by log(classes)."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    h = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    return float(h.mean() / np.log(logits.shape[1]))


def compare(new: Model, old: Model, images: np.ndarray) -> ProxyResult:
    """The proxy values of `new` against `old` on `images` (a batch of recent real inputs)."""
    if len(images) < MIN_IMAGES:
        return ProxyResult(len(images), note=f"only {len(images)} recent inputs (at least {MIN_IMAGES})")
    if new.meta.tasks != old.meta.tasks or new.meta.input.shape != old.meta.input.shape:
        return ProxyResult(len(images), note="the models serve other tasks or inputs: not comparable")
    a, b = new.run(images), old.run(images)
    agree: list[float] = []
    h_new: list[float] = []
    h_old: list[float] = []
    for task in new.meta.tasks:
        x, y = np.asarray(a[task]), np.asarray(b[task])
        if new.meta.outputs[task].kind in CLASS_KINDS and x.ndim >= 2 and x.shape[1] > 1:
            agree.append(float((x.argmax(axis=1) == y.argmax(axis=1)).mean()))
            h_new.append(_entropy(x))
            h_old.append(_entropy(y))
        else:
            tolerance = REGRESSION_TOLERANCE * float(y.std()) + 1e-6
            agree.append(float((np.abs(x - y) <= tolerance).mean()))
    return ProxyResult(
        len(images),
        float(np.mean(agree)),
        float(np.mean(h_new)) if h_new else 0.0,
        float(np.mean(h_old)) if h_old else 0.0,
    )
