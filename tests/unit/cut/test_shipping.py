"""The shipping rule: a candidate replaces the current model only when a paired bootstrap over the
validation images puts its Δm gain's 95 % lower bound above 0; per-image statistics resample to the
metrics TaskMeter computes."""

from __future__ import annotations

import pytest
import torch

from edgecut.server.cut.shipping import judge, resampled_delta_m
from edgecut.server.mtl.metrics import TaskMeter, delta_m
from edgecut.server.mtl.samples import SampleStats
from edgecut.server.mtl.tasks import TaskSpec

N = 256
DEPTH = TaskSpec("depth", "depth", 1)
SEG = TaskSpec("seg", "segmentation", 4)
NORMALS = TaskSpec("normals", "normals", 3)


def _depth_stats(pred: torch.Tensor, target: torch.Tensor) -> dict[str, SampleStats]:
    st = SampleStats(DEPTH)
    for i in range(0, N, 64):  # in batches, as the validation loader feeds them
        st.update(pred[i : i + 64], target[i : i + 64])
    return {"depth": st}


@pytest.fixture(scope="module")
def scenes() -> tuple[torch.Tensor, torch.Tensor]:
    """Depth targets (a few pixels unmeasured) and a current model's predictions with per-image error."""
    g = torch.Generator().manual_seed(0)
    target = 1 + 4 * torch.rand(N, 1, 8, 8, generator=g)
    target[:, :, 0, 0] = 0  # no measurement
    noise = torch.randn(N, 1, 8, 8, generator=g) * torch.rand(N, 1, 1, 1, generator=g)  # hard and easy images
    return target, target + 0.5 * noise


REFERENCE = {"depth": {"abs_err": 0.1, "rel_err": 0.03}}


def test_a_candidate_equal_to_the_current_model_is_not_shipped(scenes) -> None:
    target, pred = scenes
    current = _depth_stats(pred, target)
    verdict = judge(_depth_stats(pred.clone(), target), current, REFERENCE, current_delta_m=0.0)
    assert verdict.paired and verdict.gain == 0.0 and verdict.lower == 0.0
    assert not verdict.ship
    assert (
        verdict.describe("refinement 1") == "refinement 1: +0.00 points, 95 % lower bound +0.00: not shipped"
    )


def test_a_clearly_better_candidate_is_shipped(scenes) -> None:
    target, pred = scenes
    better = target + 0.7 * (pred - target)  # 30 % less error on every image
    verdict = judge(_depth_stats(better, target), _depth_stats(pred, target), REFERENCE, 0.0)
    assert verdict.ship and 0 < verdict.lower < verdict.gain
    assert verdict.describe("refinement 2").endswith(": shipped")
    assert verdict.extras() == {"ship_gain": verdict.gain, "ship_lower_bound": verdict.lower, "shipped": 1.0}


def test_a_tiny_noisy_gain_is_not_shipped(scenes) -> None:
    """0.5 % less error overall, but each image 30 % better or worse: the images do not agree on it."""
    target, pred = scenes
    half = N // 2
    target, pred = torch.cat([target[:half]] * 2), torch.cat([pred[:half]] * 2)  # each image twice
    scale = torch.cat([torch.full((half, 1, 1, 1), 1.3), torch.full((half, 1, 1, 1), 0.7)]) * 0.995
    noisy = target + (pred - target) * scale
    verdict = judge(_depth_stats(noisy, target), _depth_stats(pred, target), REFERENCE, 0.0)
    assert verdict.gain > 0 and verdict.lower < 0
    assert not verdict.ship


def test_the_verdict_is_deterministic(scenes) -> None:
    target, pred = scenes
    cand, cur = _depth_stats(pred * 0.99, target), _depth_stats(pred, target)
    assert judge(cand, cur, REFERENCE, 0.0) == judge(cand, cur, REFERENCE, 0.0)


def test_without_the_current_models_images_the_rule_is_unpaired_and_more_cautious(scenes) -> None:
    target, pred = scenes
    better = target + 0.9 * (pred - target)
    cand, cur = _depth_stats(better, target), _depth_stats(pred, target)
    paired = judge(cand, cur, REFERENCE, 0.0)
    before = float(resampled_delta_m(cur, REFERENCE, torch.ones(1, N))[0])
    unpaired = judge(cand, None, REFERENCE, before)
    assert not unpaired.paired and unpaired.gain == pytest.approx(paired.gain)
    assert unpaired.lower < paired.lower


def test_resampling_every_image_once_gives_the_metrics_of_the_whole_set() -> None:
    """mIoU and the error sums are recomputed from per-image counts, not averaged per image."""
    g = torch.Generator().manual_seed(2)
    specs = {"seg": SEG, "depth": DEPTH, "normals": NORMALS}
    batches = []
    for _ in range(4):
        seg_t = torch.randint(0, 4, (16, 8, 8), generator=g)
        seg_t[:, 0] = 255  # ignored pixels
        normals_t = torch.nn.functional.normalize(torch.randn(16, 3, 8, 8, generator=g), dim=1)
        normals_t[:, :, 0] = 0  # unmeasured
        batches.append(
            (
                {
                    "seg": torch.randn(16, 4, 8, 8, generator=g),
                    "depth": torch.rand(16, 1, 8, 8, generator=g) * 3,
                    "normals": torch.randn(16, 3, 8, 8, generator=g),
                },
                {"seg": seg_t, "depth": torch.rand(16, 1, 8, 8, generator=g) * 3 + 0.5, "normals": normals_t},
            )
        )
    meters = {t: TaskMeter(s) for t, s in specs.items()}
    stats = {t: SampleStats(s) for t, s in specs.items()}
    for pred, target in batches:
        for t in specs:
            meters[t].update(pred[t], target[t])
            stats[t].update(pred[t], target[t])
    ones = torch.ones(1, 64)
    for t in specs:
        whole, resampled = meters[t].result(), stats[t].resampled(ones)
        for k, v in resampled.items():
            tol = 0.1 if k == "median_angle" else 1e-6 * abs(whole[k])  # 0.1° bins; float32 sums
            assert float(v[0]) == pytest.approx(whole[k], abs=tol), (t, k)
    reference = {t: {k: v * 1.1 for k, v in meters[t].result().items()} for t in specs}
    exact = delta_m({t: m.result() for t, m in meters.items()}, reference, specs)
    assert float(resampled_delta_m(stats, reference, ones)[0]) == pytest.approx(exact, abs=0.01)
