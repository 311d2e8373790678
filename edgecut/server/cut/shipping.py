"""When a refinement or the from-scratch candidate replaces the model a build key serves: only when it
is better beyond the validation set's noise, measured, not a constant margin.

A paired bootstrap over the validation images: both models' per-image statistics (mtl/samples.py) on
the same images, resampled together (the same draws for both), Δm of each against the full model
recomputed per resample, and the gain's one-sided lower bound at `confidence` (the 5th percentile of
the gains for 95 %). Ship when that bound is above 0. A candidate equal to the current model gains 0 in
every resample and is never shipped; a gain of a few tenths of a point that two equally good runs also
show (two same-architecture runs differed by 1.76 points) is not shipped either, unless the images
agree on it. Seeded: the same models and images always give the same decision.

Without the current model's per-image statistics (its saved weights are gone), the rule is unpaired:
the point gain minus sqrt(2) times the candidate's own bootstrap spread at that confidence (two
independent measurements of equal noise), more cautious than the paired bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from edgecut.server.mtl.metric_names import DELTA_M_METRICS, LOWER_IS_BETTER
from edgecut.server.mtl.samples import SampleStats

RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0


@dataclass(frozen=True)
class Verdict:
    """The candidate's Δm gain over the current model in points, its lower bound, and the decision."""

    gain: float
    lower: float
    confidence: float
    paired: bool

    @property
    def ship(self) -> bool:
        return self.lower > 0

    def describe(self, what: str) -> str:
        """E.g. "refinement 2: +0.41 points, 95 % lower bound +0.12: shipped"."""
        how = "" if self.paired else " (unpaired)"
        return (
            f"{what}: {self.gain:+.2f} points, {100 * self.confidence:g} % lower bound{how} "
            f"{self.lower:+.2f}: {'shipped' if self.ship else 'not shipped'}"
        )

    def extras(self) -> dict[str, float]:
        return {"ship_gain": self.gain, "ship_lower_bound": self.lower, "shipped": float(self.ship)}


def resampled_delta_m(
    stats: Mapping[str, SampleStats], reference: Mapping[str, Mapping[str, float]], weights: torch.Tensor
) -> torch.Tensor:
    """Δm (%) against `reference` for each resample (row of `weights`), as mtl.metrics.delta_m averages:
    each task's Δm metrics first, then the tasks."""
    per_task = []
    for task, st in stats.items():
        values, ref = st.resampled(weights), reference[task]
        changes = [
            (-1.0 if k in LOWER_IS_BETTER else 1.0) * (values[k] - ref[k]) / abs(ref[k])
            for k in DELTA_M_METRICS[st.spec.kind]
            if k in values and k in ref and ref[k] != 0 and not math.isnan(ref[k])
        ]
        if changes:
            per_task.append(torch.stack(changes).mean(0))
    if not per_task:
        return torch.zeros(weights.shape[0], dtype=torch.float64)
    return 100.0 * torch.stack(per_task).mean(0)


def _draws(n: int, resamples: int, seed: int) -> torch.Tensor:
    """`resamples` x `n` counts: how often each image is drawn in each bootstrap resample (row 0: all once)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (resamples, n), generator=g)
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones(resamples, n, dtype=torch.float64))
    return torch.cat([torch.ones(1, n, dtype=torch.float64), counts])


def judge(
    candidate: Mapping[str, SampleStats],
    current: Mapping[str, SampleStats] | None,
    reference: Mapping[str, Mapping[str, float]],
    current_delta_m: float,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Verdict:
    """The verdict on replacing the current model by `candidate` (per-image statistics on the same
    validation images, in the same order). `current_delta_m` is the current model's recorded Δm: used
    only when its per-image statistics are missing (`current` None: the unpaired rule)."""
    n = next(iter(candidate.values())).n if candidate else 0
    if n == 0:
        return Verdict(math.nan, -math.inf, confidence, current is not None)
    w = _draws(n, resamples, seed)
    cand = resampled_delta_m(candidate, reference, w)
    q = 1.0 - confidence
    if current is not None:
        if any(current[t].n != n for t in candidate if t in current):
            raise ValueError("the candidate and the current model were measured on different images")
        gains = cand - resampled_delta_m(current, reference, w)
        lower = float(torch.quantile(gains[1:], q))
        return Verdict(float(gains[0]), lower, confidence, True)
    gain = float(cand[0]) - current_delta_m
    spread = float(cand[0] - torch.quantile(cand[1:], q))
    return Verdict(gain, gain - math.sqrt(2) * spread, confidence, False)
