"""Issue 31: statistics buckets (which devices share an adapted model) and the drift rule (when a device
is adapted again), from summaries built as a device builds them."""

from __future__ import annotations

import numpy as np
import pytest

from edgecut import norm_stats
from edgecut.server.fleet.policy import stat_buckets
from edgecut.v1 import fleet_pb2 as pb


def _summary(scale: float, seed: int = 0, noise: float = 0.0) -> pb.StatsSummary:
    """The input layer of 64 scenes-like images (smooth gradients plus texture), times `scale`."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, 32)
    base = 0.5 * (x[None, :] + x[:, None]) / 1.0
    images = np.clip(
        base[None, None] * rng.uniform(0.6, 1.0, (64, 3, 1, 1)) + rng.normal(0, 0.1, (64, 3, 32, 32)), 0, 1
    )
    images = np.clip(images * scale + rng.normal(0, noise, images.shape), 0, 1)
    mean = images.mean(axis=(0, 2, 3))
    var = images.var(axis=(0, 2, 3))
    layers = {norm_stats.INPUT: (mean.astype(np.float32), var.astype(np.float32))}
    return norm_stats.to_proto(layers, "dev", "m" * 64, 64, 1, 0)


def test_one_camera_stays_in_its_bucket_and_a_dim_one_moves_out() -> None:
    day = [stat_buckets.point(_summary(1.0, seed)) for seed in range(5)]
    assert len({stat_buckets.bucket(p) for p in day}) == 1  # other scenes, same camera: one bucket
    assert all(not stat_buckets.moved(day[0], p) for p in day)
    dim = stat_buckets.point(_summary(0.4))  # the dark shift
    assert stat_buckets.bucket(dim) != stat_buckets.bucket(day[0])
    assert stat_buckets.moved(day[0], dim) and stat_buckets.moved(dim, day[0])
    assert stat_buckets.drift(day[0], dim) > 2.0  # x0.4 is 2.6 steps of sqrt(2)
    assert stat_buckets.drift(day[0], day[1]) < 0.5


def test_a_device_on_a_bucket_edge_is_not_adapted_again_for_a_small_move() -> None:
    edge = [-2.26, -2.26, -2.26, -3.0, -3.0, -3.0]  # -4.52 steps: rounds to -5
    across = [v + 0.04 for v in edge]  # -4.44 steps: rounds to -4, another bucket
    assert stat_buckets.bucket(edge) != stat_buckets.bucket(across)
    assert not stat_buckets.moved(edge, across)  # hysteresis: no build for noise on an edge
    far = [v + 0.5 for v in edge]
    assert stat_buckets.moved(edge, far)


def test_buckets_are_short_names_and_black_images_stay_finite() -> None:
    black = norm_stats.to_proto(
        {norm_stats.INPUT: (np.zeros(3, np.float32), np.zeros(3, np.float32))}, "dev", "m" * 64, 16, 1, 0
    )
    p = stat_buckets.point(black)
    assert all(np.isfinite(p)) and stat_buckets.bucket(p) == "-16/-16/-16|-16/-16/-16"
    assert len(stat_buckets.bucket_id(stat_buckets.bucket(p))) == 12
    assert stat_buckets.drift(p, p[:3]) == float("inf")


def test_a_summary_without_an_input_layer_is_refused() -> None:
    msg = norm_stats.to_proto(
        {"bn": (np.ones(4, np.float32), np.ones(4, np.float32))}, "d", "m" * 64, 16, 1, 0
    )
    with pytest.raises(norm_stats.StatsError, match="input"):
        stat_buckets.point(msg)
