"""Per-task metrics as the multi-task literature reports them, and the aggregate Δm.

segmentation: mIoU, pixel accuracy; depth: abs and rel error, δ < 1.25^k; regression: abs error and
RMSE over every value; normals: mean and median angle error, % of pixels within 11.25 / 22.5 / 30
degrees; edges: F1 at 0.5; classification: accuracy.

Δm (after Maninis et al. 2019): the relative change of each metric against a reference model, in %,
with lower-is-better metrics sign-flipped (a negative Δm means worse than the reference), averaged
first within each task over the metrics in `DELTA_M_METRICS`, then over the tasks, so every task weighs
the same however many metrics it reports (pooling every metric, as MTAN-style tables do, would give
normals' five metrics five times seg's weight per metric). Depth enters by its abs and rel errors only:
its δ < 1.25^k thresholds are reported but left out of Δm (at 0.95-0.998 on the reference model they
barely move, and would dilute depth's share).

Every metric is computed exactly from the pixels, except the median normal angle: a histogram of
0.001° bins with linear interpolation inside the bin (bounded memory on any data set), within 0.001° of
the exact median.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from edgecut.server.mtl.data import IGNORE_INDEX
from edgecut.server.mtl.metric_names import DELTA_M_METRICS, task_change
from edgecut.server.mtl.tasks import TaskSpec

_ANGLE_BINS = 180_000  # 0.001 degree bins for the median (1.4 MB of counts, whatever the data size)


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
            p, t = pred[valid], target[valid]
            # No clamp: a negative or zero depth counts its full error and fails every δ threshold.
            ratio = torch.where(p > 0, torch.maximum(p / t, t / p.clamp_min(1e-12)), torch.inf)
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
            return {
                "mean_angle": s["angle"] / n,
                "median_angle": _histogram_median(self.angle_hist, 180.0),
                "within_11.25": s["w11.25"] / n,
                "within_22.5": s["w22.5"] / n,
                "within_30": s["w30.0"] / n,
            }
        tp, fp, fn = s.get("tp", 0.0), s.get("fp", 0.0), s.get("fn", 0.0)
        prec = tp / max(tp + fp, 1)
        rec = tp / max(tp + fn, 1)
        return {"f1": 2 * prec * rec / max(prec + rec, 1e-12), "precision": prec, "recall": rec}


def _histogram_median(hist: torch.Tensor, span: float) -> float:
    """The median of the values counted in `hist` (equal bins over [0, span)), as numpy defines it
    (the mean of the two middle values for an even count), each order statistic placed by linear
    interpolation inside its bin."""
    total = int(hist.sum())
    if total == 0:
        return float("nan")
    width = span / len(hist)
    cum = torch.cumsum(hist, 0)

    def order_statistic(k: int) -> float:  # the k-th smallest value, 0-based
        b = int(torch.searchsorted(cum, k, right=True))
        below = int(cum[b - 1]) if b > 0 else 0
        return (b + (k - below + 0.5) / int(hist[b])) * width

    return (order_statistic((total - 1) // 2) + order_statistic(total // 2)) / 2


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
