"""Per-task metrics as the multi-task literature reports them, and the aggregate Δm.

segmentation: mIoU, pixel accuracy; depth: abs and rel error, δ < 1.25^k; regression: abs error and
RMSE over every value; normals: mean and median angle error, % of pixels within 11.25 / 22.5 / 30
degrees; edges: F1 at 0.5; classification: accuracy.

Δm (Maninis et al. 2019, as used by MTAN and the seed papers): the mean over every metric of the
relative change against a reference model, in %, with lower-is-better metrics sign-flipped, so a
negative Δm means worse than the reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from edgecut.server.mtl.data import IGNORE_INDEX
from edgecut.server.mtl.metric_names import DELTA_M_METRICS, task_change
from edgecut.server.mtl.tasks import TaskSpec

_ANGLE_BINS = 1800  # 0.1 degree resolution for the median


class TaskMeter:
    """Accumulates one task's statistics over batches; `result()` gives its metrics."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.n = 0.0
        self.sums: dict[str, float] = {}
        self.confusion = torch.zeros(spec.channels, spec.channels, dtype=torch.int64)
        self.angle_hist = torch.zeros(_ANGLE_BINS, dtype=torch.int64)

    def _add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        kind = self.spec.kind
        if kind == "segmentation":
            labels = pred.argmax(1).flatten()
            t = target.flatten().long()
            keep = t != IGNORE_INDEX
            k = self.spec.channels
            self.confusion += torch.bincount(t[keep] * k + labels[keep], minlength=k * k).view(k, k)
        elif kind == "classification":
            self._add("correct", float((pred.argmax(1) == target.long()).sum()))
            self.n += target.numel()
        elif kind == "depth":
            valid = target > 0
            p, t = pred[valid].clamp_min(1e-3), target[valid]
            ratio = torch.maximum(p / t, t / p)
            self._add("abs", float((p - t).abs().sum()))
            self._add("rel", float(((p - t).abs() / t).sum()))
            for k in (1, 2, 3):
                self._add(f"d{k}", float((ratio < 1.25**k).sum()))
            self.n += float(valid.sum())
        elif kind == "regression":
            err = pred.float() - target.float()
            self._add("abs", float(err.abs().sum()))
            self._add("sq", float(err.pow(2).sum()))
            self.n += float(err.numel())
        elif kind == "normals":
            valid = target.abs().sum(1) > 0
            cos = F.cosine_similarity(pred, target, dim=1)[valid].clamp(-1, 1)
            angle = torch.rad2deg(torch.acos(cos))
            self._add("angle", float(angle.sum()))
            for th in (11.25, 22.5, 30.0):
                self._add(f"w{th}", float((angle < th).sum()))
            bins = (angle / 180 * _ANGLE_BINS).long().clamp(0, _ANGLE_BINS - 1)
            self.angle_hist += torch.bincount(bins, minlength=_ANGLE_BINS)
            self.n += float(valid.sum())
        elif kind == "edges":
            p = pred > 0  # logit > 0  <=>  probability > 0.5
            t = target > 0.5
            self._add("tp", float((p & t).sum()))
            self._add("fp", float((p & ~t).sum()))
            self._add("fn", float((~p & t).sum()))
        else:
            raise ValueError(f"no metrics for task kind {kind!r}")

    def result(self) -> dict[str, float]:
        kind, s = self.spec.kind, self.sums
        if kind == "segmentation":
            cm = self.confusion.double()
            inter = cm.diag()
            union = cm.sum(0) + cm.sum(1) - inter
            present = union > 0
            miou = float((inter[present] / union[present]).mean()) if present.any() else 0.0
            return {"miou": miou, "pixel_acc": float(inter.sum() / cm.sum().clamp_min(1))}
        if kind == "classification":
            return {"accuracy": s.get("correct", 0.0) / max(self.n, 1)}
        if kind == "depth":
            n = max(self.n, 1)
            return {
                "abs_err": s["abs"] / n,
                "rel_err": s["rel"] / n,
                "delta1": s["d1"] / n,
                "delta2": s["d2"] / n,
                "delta3": s["d3"] / n,
            }
        if kind == "regression":
            n = max(self.n, 1)
            return {"abs_err": s.get("abs", 0.0) / n, "rmse": math.sqrt(s.get("sq", 0.0) / n)}
        if kind == "normals":
            n = max(self.n, 1)
            cum = torch.cumsum(self.angle_hist, 0)
            median_bin = int(torch.searchsorted(cum, cum[-1] / 2.0))
            return {
                "mean_angle": s["angle"] / n,
                "median_angle": (median_bin + 0.5) * 180 / _ANGLE_BINS,
                "within_11.25": s["w11.25"] / n,
                "within_22.5": s["w22.5"] / n,
                "within_30": s["w30.0"] / n,
            }
        tp, fp, fn = s.get("tp", 0.0), s.get("fp", 0.0), s.get("fn", 0.0)
        prec = tp / max(tp + fp, 1)
        rec = tp / max(tp + fn, 1)
        return {"f1": 2 * prec * rec / max(prec + rec, 1e-12), "precision": prec, "recall": rec}


def delta_m(
    metrics: dict[str, dict[str, float]],
    reference: dict[str, dict[str, float]],
    specs: dict[str, TaskSpec] | None = None,
) -> float:
    """Δm in % over the tasks in `metrics` (each task's metrics averaged first, then the tasks)."""
    per_task: list[float] = []
    for task, values in metrics.items():
        ref = reference[task]
        keys: Iterable[str] | None = DELTA_M_METRICS[specs[task].kind] if specs else None
        change = task_change(values, ref, keys)
        if change is not None:
            per_task.append(change)
    return 100.0 * sum(per_task) / len(per_task) if per_task else 0.0
