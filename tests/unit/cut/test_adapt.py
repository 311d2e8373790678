"""Adapting a tailored model from a device's statistics summary alone (issue 31)."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from edgecut.norm_stats import Accumulator, Layers, StatsError
from edgecut.server.cut.adapt import AdaptOptions, adapt
from edgecut.server.cut.statistics import StatisticsModel
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import TensorSamples
from edgecut.server.mtl.evaluate import evaluate
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.mtl.shifts import centre_zoom, shifted

QUICK = AdaptOptions(search_steps=40, search_images=32, steps=40, batch_size=16, bn_batches=3)


def _summary(model: MultiTaskModel, images: torch.Tensor) -> Layers:
    """What the device's statistics model measures on `images` (torch here; the ONNX path is the same,
    tests/unit/cut/test_statistics.py)."""
    stats = StatisticsModel(model)
    acc = Accumulator()
    with torch.no_grad():
        for batch in images.split(16):
            out = stats(batch)
            acc.add({n: t.numpy() for n, t in zip(stats.output_names, out, strict=True)}, len(batch))
    return acc.layers()


def _clean(scenes: TensorSamples) -> TensorSamples:
    return TensorSamples({**scenes.tensors, "image": scenes.tensors["image"].float() / 255.0})


def test_restyle_finds_the_devices_camera_and_recovers_what_the_shift_cost(
    trained_small: MultiTaskModel, scenes: TensorSamples
) -> None:
    torch.manual_seed(0)
    device = shifted(scenes, "dark")
    layers = _summary(trained_small, device.tensors["image"])
    calib = TensorSamples({"image": _clean(scenes).tensors["image"]})
    report = adapt(trained_small, trained_small, layers, calib, replace(QUICK, method="restyle"))
    gains = [report.camera[f"gain_{c}"] for c in "rgb"]
    assert all(0.3 < g < 0.5 for g in gains), report.camera  # the device's images are x0.4
    assert report.match_after < 0.5 * report.match_before
    specs = trained_small.task_specs
    reference = evaluate(trained_small, specs, _clean(scenes))
    before = delta_m(evaluate(trained_small, specs, device), reference, specs)
    after = delta_m(evaluate(report.model, specs, device), reference, specs)
    assert after > before + 0.5 * abs(before), (before, after)
    assert report.model is not trained_small
    # by default the device's own statistics stay installed (the weights learned under them)
    name, bn = next((n, m) for n, m in report.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert np.allclose(bn.running_var.numpy(), layers[name][1], atol=1e-5)


def test_adabn_installs_the_summary_and_leaves_the_model_as_it_was(
    trained_small: MultiTaskModel, scenes: TensorSamples
) -> None:
    layers = _summary(trained_small, shifted(scenes, "noise").tensors["image"])
    kept = {k: v.clone() for k, v in trained_small.state_dict().items()}
    report = adapt(trained_small, trained_small, layers, scenes, AdaptOptions(method="adabn"))
    assert all(torch.equal(v, trained_small.state_dict()[k]) for k, v in kept.items())
    name, bn = next((n, m) for n, m in report.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert np.allclose(bn.running_mean.numpy(), layers[name][0], atol=1e-5)


def test_a_summary_of_another_model_is_refused_in_one_sentence(
    trained_small: MultiTaskModel, small_resnet: MultiTaskModel, scenes: TensorSamples
) -> None:
    layers = _summary(trained_small, _clean(scenes).tensors["image"])
    del layers[next(iter(k for k in layers if k != "input"))]
    with pytest.raises(StatsError, match=r"lacks layer .* another model"):
        adapt(trained_small, trained_small, layers, scenes, QUICK)


def test_restyle_finds_a_sensor_noise_far_from_where_the_search_used_to_start(
    trained_small: MultiTaskModel, scenes: TensorSamples
) -> None:
    """Started near no noise, the search found sigma 0.019 for the suite's 0.08 noise (the gain took up
    its variance); the grid start reaches it."""
    torch.manual_seed(0)
    layers = _summary(trained_small, shifted(scenes, "noise").tensors["image"])
    calib = TensorSamples({"image": _clean(scenes).tensors["image"]})
    report = adapt(
        trained_small,
        trained_small,
        layers,
        calib,
        replace(QUICK, method="restyle", steps=0, search_steps=10),
    )
    assert 0.05 < report.camera["noise_sigma"] < 0.12, report.camera
    assert all(0.8 < report.camera[f"gain_{c}"] < 1.25 for c in "rgb"), report.camera


@pytest.mark.parametrize(("shift", "narrower"), [("zoom", True), ("blur", False)])
def test_the_camera_search_tells_a_narrower_view_from_a_blur(
    trained_small: MultiTaskModel, scenes: TensorSamples, shift: str, narrower: bool
) -> None:
    """Both take fine detail away; before the view was part of the camera, a zoom was fitted as a blur and
    the distillation showed the student a blurred whole frame where the device sees a part of it."""
    torch.manual_seed(0)
    layers = _summary(trained_small, shifted(scenes, shift).tensors["image"])
    calib = TensorSamples({"image": _clean(scenes).tensors["image"]})
    report = adapt(trained_small, trained_small, layers, calib, replace(QUICK, method="restyle", steps=0))
    if narrower:
        assert 0.6 <= report.camera["crop"] <= 0.9, report.camera  # the suite's zoom keeps 0.75
    else:
        assert report.camera["crop"] == 1.0 and report.camera["blur_sigma"] > 0.6, report.camera


def test_through_a_narrower_view_the_teacher_answers_for_the_part_the_student_sees(
    trained_small: MultiTaskModel, scenes: TensorSamples
) -> None:
    """The student sees a part of the frame: the teacher's answers for the whole frame would be the wrong
    labels (they do not line up), so the teacher is shown the same part, clean."""
    torch.manual_seed(0)
    layers = _summary(trained_small, shifted(scenes, "zoom").tensors["image"])
    clean = _clean(scenes).tensors["image"]
    seen: list[torch.Tensor] = []
    teacher = copy.deepcopy(trained_small)
    teacher.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    calib = TensorSamples({"image": clean})
    report = adapt(trained_small, teacher, layers, calib, replace(QUICK, method="restyle", steps=4))
    crop = report.camera["crop"]
    assert crop < 1.0, report.camera
    views = {round(float(v.sum()), 2) for v in centre_zoom(clean, crop)}
    shown = [round(float(v.sum()), 2) for x in seen for v in x]
    assert shown and all(s in views for s in shown)
    assert not {round(float(v.sum()), 2) for v in clean} & set(shown)  # never the whole frame


def test_auto_keeps_the_model_for_no_shift_and_picks_adabn_or_restyle_by_the_shifts_size(
    trained_small: MultiTaskModel, scenes: TensorSamples
) -> None:
    calib = TensorSamples({"image": _clean(scenes).tensors["image"]})
    auto = replace(QUICK, method="auto", steps=2)
    # the same distribution as the server's images: the model stays exactly as it was
    same = adapt(trained_small, trained_small, _summary(trained_small, calib.tensors["image"]), calib, auto)
    assert same.method == "none" and same.shift < auto.min_shift and "no shift" in same.why
    assert all(torch.equal(v, trained_small.state_dict()[k]) for k, v in same.model.state_dict().items())
    dark = _summary(trained_small, shifted(scenes, "dark").tensors["image"])
    strong = adapt(trained_small, trained_small, dark, calib, auto)
    assert strong.method == "restyle" and strong.shift > auto.restyle_shift, strong.why
    # the same summary, counted as a mild shift: AdaBN alone, no camera searched
    mild = adapt(trained_small, trained_small, dark, calib, replace(auto, restyle_shift=strong.shift + 1))
    assert mild.method == "adabn" and not mild.camera and "mild" in mild.why
    # a camera that cannot explain the summary: AdaBN alone
    unfit = adapt(trained_small, trained_small, dark, calib, replace(auto, max_fit=0.0))
    assert unfit.method == "adabn" and "no camera explains" in unfit.why


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="choose auto, adabn, restyle"):
        AdaptOptions(method="tent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="choose device or restyled"):
        AdaptOptions(batchnorm="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be positive"):
        AdaptOptions(batch_size=0)
