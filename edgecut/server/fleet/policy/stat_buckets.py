"""Statistics buckets (issue 31): which devices see alike enough to share one adapted model, and drift.

A summary's *point* is its input layer's per-channel mean and standard deviation (the RGB image as the
model gets it), each as log2, floored at 1/256 (one 8-bit level: a black channel stays finite). Its
*bucket* is that point rounded to a grid of `STEP` = 0.5 in log2, i.e. a factor of sqrt(2).

Why a log grid: what moves a camera's statistics is mostly multiplicative (exposure, gain, a dim room:
the issue's "dark" shift multiplies every pixel by 0.4), so a log grid gives the same relative tolerance
at every light level, where a linear grid would lump every dim camera into one bucket and split bright
ones finely. Why sqrt(2): the dark shift (x0.4) lands 2.6 steps from its clean twin, a clear move, while
the summaries of one fixed camera over its scenes (256 images each) move far less than a step; a finer
grid would build one model per device, a coarser one would give a dim garage the daylight model.

Why the input layer only: it is what the camera sees and the same under every model, so a point stays
comparable after the model it was measured with is replaced by its adaptation (whose deeper statistics
differ by design). The cost: sensor noise barely moves it (sigma 0.08 on scenes of std ~0.25 raises the
std by ~5 %), so a noisy camera shares its clean twin's bucket until its brightness differs too.

Drift: a device's latest point against the one its model was adapted to, in grid steps (the largest
coordinate's move; 1.0 = one bucket's width). A device is re-adapted when its bucket changed *and* it
drifted more than `MOVE` steps: a device whose statistics sit on a bucket's edge does not flap between
two buckets (and two builds) on noise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from edgecut import norm_stats
from edgecut.v1 import fleet_pb2 as pb

STEP = 0.5  # log2 units per bucket: a factor of sqrt(2)
MOVE = 0.75  # steps a device must drift, beyond changing bucket, before it is adapted again
FLOOR = 1.0 / 256
LIMIT = 16  # grid cells either side of 1.0: far beyond any image in [0, 1]


def point(summary: pb.StatsSummary) -> list[float]:
    """log2 of the input layer's per-channel mean, then of its per-channel standard deviation.

    Raises norm_stats.StatsError when the summary has no input layer (not one a device sends)."""
    layers = norm_stats.from_proto(summary)
    if norm_stats.INPUT not in layers:
        raise norm_stats.StatsError(f"the summary has no {norm_stats.INPUT!r} layer")
    mean, var = layers[norm_stats.INPUT]
    std = np.sqrt(np.maximum(var.astype(np.float64), 0.0))
    return [math.log2(max(float(v), FLOOR)) for v in (*np.abs(mean.astype(np.float64)), *std)]


def bucket(p: Sequence[float]) -> str:
    """The grid cell of point `p`: the rounded means, then the rounded deviations ("-3/-3/-3|-4/-4/-4")."""
    cells = [max(-LIMIT, min(LIMIT, round(v / STEP))) for v in p]
    half = len(cells) // 2
    return "/".join(map(str, cells[:half])) + "|" + "/".join(map(str, cells[half:]))


def bucket_id(label: str) -> str:
    """A short fixed-length name of a bucket for job keys (the 64-character key column)."""
    return hashlib.sha256(label.encode()).hexdigest()[:12]


def drift(adapted_to: Sequence[float], latest: Sequence[float]) -> float:
    """How far `latest` moved from `adapted_to`, in grid steps (the largest coordinate's move)."""
    if len(adapted_to) != len(latest) or not latest:
        return math.inf
    return max(abs(a - b) for a, b in zip(adapted_to, latest, strict=True)) / STEP


def moved(adapted_to: Sequence[float], latest: Sequence[float]) -> bool:
    """Whether a device adapted at `adapted_to` now sees enough else to be adapted again."""
    return bucket(adapted_to) != bucket(latest) and drift(adapted_to, latest) > MOVE
