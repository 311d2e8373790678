"""Per-task metrics on cases computed by hand, Δm's sign convention, and the trivial baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgecut.server.mtl.data import TensorSamples
from edgecut.server.mtl.evaluate import trivial_baseline
from edgecut.server.mtl.metrics import TaskMeter, delta_m
from edgecut.server.mtl.tasks import SCENE_TASKS, TaskSpec, by_name

SPECS = by_name(SCENE_TASKS)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _seg_logits(labels: list[int], classes: int) -> torch.Tensor:
    """One row of pixels, N=1: labels -> 1 x C x 1 x W one-hot logits."""
    return F.one_hot(torch.tensor(labels), classes).T.float().view(1, classes, 1, -1)


def _angle_vectors(degrees: list[float], scale: float = 1.0) -> torch.Tensor:
    """1 x 3 x 1 x W vectors at `degrees` from +z, in the x-z plane."""
    r = torch.deg2rad(torch.tensor(degrees))
    return (torch.stack([torch.sin(r), torch.zeros_like(r), torch.cos(r)]) * scale).view(1, 3, 1, -1)


def test_segmentation_miou_and_pixel_accuracy_by_hand() -> None:
    spec = TaskSpec("seg", "segmentation", 3)
    # target: 0 0 1 1 2 ignore; predicted: 0 1 1 1 0 2
    # confusion (rows target): [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # IoU: class 0 = 1 / (2 + 2 - 1) = 1/3, class 1 = 2 / (2 + 3 - 2) = 2/3, class 2 = 0 / 1 = 0
    target = torch.tensor([[[0, 0, 1, 1, 2, 255]]])
    pred = _seg_logits([0, 1, 1, 1, 0, 2], 3)
    m = TaskMeter(spec)
    m.update(pred, target)
    r = m.result()
    assert r["miou"] == pytest.approx(1 / 3) and r["pixel_acc"] == pytest.approx(3 / 5)

    # the same pixels over two batches give the same result
    m2 = TaskMeter(spec)
    m2.update(pred[..., :3], target[..., :3])
    m2.update(pred[..., 3:], target[..., 3:])
    assert m2.result() == r

    # a class that is neither predicted nor present does not enter the mean
    m4 = TaskMeter(TaskSpec("seg", "segmentation", 4))
    m4.update(_seg_logits([0, 1, 1, 1, 0, 2], 4), target)
    assert m4.result()["miou"] == pytest.approx(1 / 3)


def test_depth_errors_and_thresholds_by_hand() -> None:
    m = TaskMeter(SPECS["depth"])
    target = torch.tensor([2.0, 4.0, 0.0]).view(1, 1, 1, 3)  # the third pixel is not measured
    pred = torch.tensor([1.1, 4.8, 7.0]).view(1, 1, 1, 3)
    m.update(pred, target)
    r = m.result()
    # |err| = 0.9, 0.8; rel = 0.45, 0.2; max ratio = 1.818, 1.2
    assert r["abs_err"] == pytest.approx(0.85) and r["rel_err"] == pytest.approx(0.325)
    assert r["delta1"] == 0.5 and r["delta2"] == 0.5 and r["delta3"] == 1.0


def test_normal_angles_by_hand() -> None:
    m = TaskMeter(SPECS["normals"])
    target = torch.zeros(1, 3, 1, 6)
    target[:, 2, :, :5] = 1.0  # the sixth pixel is not measured (all zero)
    pred = _angle_vectors([5, 15, 25, 40, 60, 90], scale=2.0)  # length does not matter
    m.update(pred, target)
    r = m.result()
    assert r["mean_angle"] == pytest.approx(29.0, abs=1e-3)
    assert r["median_angle"] == pytest.approx(25.0, abs=0.1)
    assert r["within_11.25"] == pytest.approx(1 / 5)
    assert r["within_22.5"] == pytest.approx(2 / 5)
    assert r["within_30"] == pytest.approx(3 / 5)


@pytest.mark.parametrize("n", [10_001, 10_000])  # odd: the middle value; even: the mean of the two
def test_median_angle_equals_numpy_on_a_known_set(n: int) -> None:
    g = torch.Generator().manual_seed(0)
    degrees = (torch.rand(n, generator=g, dtype=torch.float64) * 40).tolist()
    target = torch.zeros(1, 3, 1, n)
    target[:, 2] = 1.0
    pred = _angle_vectors(degrees)
    m = TaskMeter(SPECS["normals"])
    m.update(pred[..., : n // 3], target[..., : n // 3])  # over two batches, as evaluation runs
    m.update(pred[..., n // 3 :], target[..., n // 3 :])
    exact = np.median(np.degrees(np.arccos(np.clip(pred[0, 2, 0].double().numpy(), -1, 1))))
    assert m.result()["median_angle"] == pytest.approx(float(exact), abs=1e-3)


def test_a_negative_depth_prediction_counts_its_full_error() -> None:
    m = TaskMeter(SPECS["depth"])
    target = torch.tensor([2.0, 2.0]).view(1, 1, 1, 2)
    m.update(torch.tensor([-1.0, 2.0]).view(1, 1, 1, 2), target)
    r = m.result()
    # |-1 - 2| = 3 (not the 1.999 of a prediction clamped to 1e-3), rel 1.5; the negative pixel fails δ
    assert r["abs_err"] == pytest.approx(1.5) and r["rel_err"] == pytest.approx(0.75)
    assert r["delta1"] == r["delta2"] == r["delta3"] == 0.5


def test_edge_f1_by_hand() -> None:
    m = TaskMeter(SPECS["edges"])
    target = torch.tensor([1, 1, 1, 1, 0, 0, 0.0]).view(1, 1, 1, 7)
    logits = torch.tensor([3, 2, -1, -2, 4, -3, -5.0]).view(1, 1, 1, 7)  # tp 2, fn 2, fp 1, tn 2
    m.update(logits, target)
    r = m.result()
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(1 / 2)
    assert r["f1"] == pytest.approx(4 / 7)


def test_classification_accuracy_by_hand() -> None:
    m = TaskMeter(SPECS["count"])
    logits = F.one_hot(torch.tensor([0, 2, 4, 1]), 5).float()
    m.update(logits, torch.tensor([0, 2, 4, 3]))
    assert m.result() == {"accuracy": 0.75}


def test_delta_m_is_positive_when_better_with_lower_is_better_flipped() -> None:
    specs = {"seg": SPECS["seg"], "depth": SPECS["depth"]}
    ref = {"seg": {"miou": 0.5, "pixel_acc": 0.8}, "depth": {"abs_err": 1.0, "rel_err": 0.2, "delta1": 0.5}}
    model = {
        "seg": {"miou": 0.6, "pixel_acc": 0.8},
        "depth": {"abs_err": 0.9, "rel_err": 0.25, "delta1": 0.9},
    }
    # seg: (+20 % + 0 %) / 2 = +10 %; depth: (+10 % (error fell) - 25 % (error rose)) / 2 = -7.5 %
    assert delta_m(model, ref, specs) == pytest.approx((10.0 - 7.5) / 2)
    assert delta_m(ref, ref, specs) == 0.0
    worse = {"seg": {"miou": 0.4, "pixel_acc": 0.7}, "depth": {"abs_err": 1.2, "rel_err": 0.3}}
    assert delta_m(worse, ref, specs) < 0
    # without specs every shared metric counts, delta1 (higher is better) included
    assert delta_m({"depth": model["depth"]}, ref) == pytest.approx(100 * (0.1 - 0.25 + 0.8) / 3)


def test_trivial_baseline_predicts_the_majority_and_the_mean_of_measured_pixels() -> None:
    n, h, w = 4, 2, 2
    seg = torch.full((n, h, w), 255, dtype=torch.int64)  # mostly unlabelled ...
    seg[:, 0, 0] = 3  # ... and class 3 is the most common label
    seg[0, 0, 1] = 1
    depth = torch.zeros(n, 1, h, w)  # half unmeasured; the measured pixels average 2 m
    depth[:, :, 0] = torch.tensor([1.0, 3.0])
    normals = torch.zeros(n, 3, h, w)
    normals[:, 2] = -1.0
    normals[:, :, 1, 1] = 0.0  # unmeasured
    edges = torch.zeros(n, 1, h, w)
    edges[:, :, 0, 0] = 1.0  # a quarter of the pixels
    count = torch.tensor([2, 2, 2, 0])
    train = TensorSamples(
        {
            "image": torch.rand(n, 3, h, w),
            "seg": seg,
            "depth": depth,
            "normals": normals,
            "edges": edges,
            "count": count,
        }
    )
    val = TensorSamples(
        {
            "image": torch.rand(2, 3, h, w),
            "seg": torch.full((2, h, w), 3),
            "depth": torch.full((2, 1, h, w), 2.0),
            "normals": torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(2, 3, h, w).clone(),
            "edges": torch.ones(2, 1, h, w),
            "count": torch.tensor([2, 1]),
        }
    )
    r = trivial_baseline(SPECS, train, val)
    assert r["seg"]["pixel_acc"] == 1.0  # class 3, not the ignore label nor class 0
    assert r["depth"]["abs_err"] == pytest.approx(0.0, abs=1e-6)  # 2 m: unmeasured zeros left out
    assert r["normals"]["mean_angle"] == pytest.approx(0.0, abs=0.05)
    assert r["edges"]["recall"] == 0.0  # the majority is "no edge"
    assert r["count"]["accuracy"] == 0.5  # always class 2
    assert all(math.isfinite(v) for task in r.values() for v in task.values())
