"""Per-image metric statistics, and the metrics of any resampling of the images (for the bootstrap).

Most metrics are ratios of sums (mIoU of confusion counts, depth error of error sums over valid
pixels), not means of per-image values, so a resampled metric is recomputed from the resampled sums:
each image keeps its own counts (`SampleStats`: one row per image), a resample is a weight per image
(how often it was drawn), and `resampled(weights)` gives every Δm metric for every resample at once
(a matrix product per statistic). Equal weights of 1 give the metrics of the whole set, as TaskMeter
computes them, except the median normal angle: per image it keeps a histogram of 0.1° bins (256
images x 1,800 bins), so its resampled medians are within 0.1° of exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from edgecut.server.mtl.data import IGNORE_INDEX
from edgecut.server.mtl.tasks import TaskSpec

MEDIAN_BINS = 1800  # 0.1 degree bins for the resampled median angle


@dataclass
class SampleStats:
    """One task's statistics per image: `rows[name]` is an N x D tensor (N images, in data order)."""

    spec: TaskSpec
    rows: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def _add(self, **stats: torch.Tensor) -> None:
        for name, value in stats.items():
            self.rows.setdefault(name, []).append(value.double().reshape(value.shape[0], -1))

    @property
    def n(self) -> int:
        first = next(iter(self.rows.values()), [])
        return sum(len(t) for t in first)

    def matrix(self, name: str) -> torch.Tensor:
        return torch.cat(self.rows[name])

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch's images (the same statistics TaskMeter sums, kept per image)."""
        kind, b = self.spec.kind, target.shape[0]
        if kind == "segmentation":
            k = self.spec.channels
            labels, t = pred.argmax(1).reshape(b, -1), target.reshape(b, -1).long()
            keep = t != IGNORE_INDEX
            cells = torch.where(keep, t * k + labels, k * k)  # ignored pixels land in a spare cell
            counts = torch.zeros(b, k * k + 1, dtype=torch.float64)
            counts.scatter_add_(1, cells, torch.ones_like(cells, dtype=torch.float64))
            self._add(confusion=counts[:, : k * k])
        elif kind == "classification":
            self._add(correct=(pred.argmax(1) == target.long()).double(), n=torch.ones(b))
        elif kind == "depth":
            valid = target > 0
            p, t = pred.double(), target.double().clamp_min(1e-12)
            err = torch.where(valid, (p - t).abs(), 0.0)
            self._add(
                abs=err.reshape(b, -1).sum(1),
                rel=(err / t).reshape(b, -1).sum(1),
                n=valid.reshape(b, -1).sum(1),
            )
        elif kind == "regression":
            err = (pred.double() - target.double()).reshape(b, -1)
            self._add(abs=err.abs().sum(1), sq=err.pow(2).sum(1), n=torch.full((b,), float(err.shape[1])))
        elif kind == "normals":
            valid = target.abs().sum(1) > 0
            cos = F.cosine_similarity(pred, target, dim=1).clamp(-1, 1)
            angle = torch.rad2deg(torch.acos(cos)).double()
            within = {f"w{th}": ((angle < th) & valid).reshape(b, -1).sum(1) for th in (11.25, 22.5, 30.0)}
            bins = (angle / 180 * MEDIAN_BINS).long().clamp(0, MEDIAN_BINS - 1)
            hist = torch.zeros(b, MEDIAN_BINS + 1, dtype=torch.float64)
            cells = torch.where(valid, bins, MEDIAN_BINS).reshape(b, -1)
            hist.scatter_add_(1, cells, torch.ones_like(cells, dtype=torch.float64))
            self._add(
                angle=torch.where(valid, angle, 0.0).reshape(b, -1).sum(1),
                n=valid.reshape(b, -1).sum(1),
                hist=hist[:, :MEDIAN_BINS],
                **within,
            )
        elif kind == "edges":
            p, t = (pred > 0).reshape(b, -1), (target > 0.5).reshape(b, -1)
            self._add(tp=(p & t).sum(1), fp=(p & ~t).sum(1), fn=(~p & t).sum(1))
        else:
            raise ValueError(f"no metrics for task kind {kind!r}")

    def resampled(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """The Δm metrics for each resample: `weights` is R x N (times each image was drawn); every
        value returned is a tensor of R."""
        # histograms in float32 (integer counts below 2**24: exact, and the largest product by far)
        s = {
            name: (weights.float() @ self.matrix(name).float()).double()
            if name == "hist"
            else weights.double() @ self.matrix(name)
            for name in self.rows
        }
        kind = self.spec.kind
        if kind == "segmentation":
            k = self.spec.channels
            cm = s["confusion"].view(-1, k, k)
            inter = cm.diagonal(dim1=1, dim2=2)
            union = cm.sum(1) + cm.sum(2) - inter
            present = union > 0
            iou = torch.where(present, inter / union.clamp_min(1e-12), 0.0)
            miou = iou.sum(1) / present.sum(1).clamp_min(1)
            return {"miou": miou, "pixel_acc": inter.sum(1) / cm.sum((1, 2)).clamp_min(1)}
        if kind == "classification":
            return {"accuracy": s["correct"][:, 0] / s["n"][:, 0].clamp_min(1)}
        n = s["n"][:, 0].clamp_min(1) if "n" in s else None
        if kind == "depth":
            assert n is not None
            return {"abs_err": s["abs"][:, 0] / n, "rel_err": s["rel"][:, 0] / n}
        if kind == "regression":
            assert n is not None
            return {"abs_err": s["abs"][:, 0] / n, "rmse": (s["sq"][:, 0] / n).sqrt()}
        if kind == "normals":
            assert n is not None
            return {
                "mean_angle": s["angle"][:, 0] / n,
                "median_angle": _medians(s["hist"], 180.0),
                **{f"within_{th:g}": s[f"w{th}"][:, 0] / n for th in (11.25, 22.5, 30.0)},
            }
        tp, fp, fn = s["tp"][:, 0], s["fp"][:, 0], s["fn"][:, 0]
        prec, rec = tp / (tp + fp).clamp_min(1), tp / (tp + fn).clamp_min(1)
        return {"f1": 2 * prec * rec / (prec + rec).clamp_min(1e-12)}


def _medians(hist: torch.Tensor, span: float) -> torch.Tensor:
    """The median of each row's histogram (equal bins over [0, span)), placed inside its bin linearly."""
    total = hist.sum(1, keepdim=True)
    cum = hist.cumsum(1)
    half = total / 2
    b = torch.searchsorted(cum, half).clamp_max(hist.shape[1] - 1)
    below = torch.where(b > 0, cum.gather(1, (b - 1).clamp_min(0)), 0.0)
    inside = (half - below) / hist.gather(1, b).clamp_min(1e-12)
    return ((b + inside) * span / hist.shape[1]).squeeze(1)


def sample_stats(
    model: torch.nn.Module, specs: dict[str, TaskSpec], data: torch.utils.data.Dataset, batch_size: int = 64
) -> dict[str, SampleStats]:
    """Every task's per-image statistics of `model` on `data` (eval mode, in data order)."""
    from edgecut.server.mtl.data import batches

    stats = {name: SampleStats(spec) for name, spec in specs.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches(data, batch_size):
                out = model(batch["image"])
                for name, st in stats.items():
                    st.update(out[name], batch[name])
    finally:
        model.train(was_training)
    return stats
