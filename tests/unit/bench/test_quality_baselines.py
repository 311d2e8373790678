"""bench quality's from-scratch baselines: a narrower architecture matched to the MACs budget, trained
from scratch (Torch-Pruning's baseline: test_tp_baseline.py)."""

from __future__ import annotations

import pytest
import torch

from edgecut.server.cut.decompose import decompose
from edgecut.server.cut.prune import Target, measure
from edgecut.server.cut.scratch import build_narrow, narrow_to, scaled_config, train_scratch
from edgecut.server.errors import ImpossibleBudgetError
from edgecut.server.mtl import MultiTaskModel, build_model
from edgecut.server.mtl.data import TensorSamples
from edgecut.server.mtl.train import TrainConfig

TASKS = ("seg", "depth")


def _resnet() -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model("resnet-mtl", input_size=32, widths=[16, 16, 32, 48], head_width=16).eval()


def _densecat() -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model("densecat-mtl", input_size=32, width=24, growth=12, layers=2, head_width=16).eval()


def test_scaling_a_config_narrows_widths_only() -> None:
    cfg = {
        "input_size": 64,
        "widths": [24, 24, 48, 96],
        "head_width": 32,
        "blocks": 2,
        "growth": 12,
        "layers": 3,
    }
    assert scaled_config(cfg, 0.5) == {
        "input_size": 64,
        "widths": [12, 12, 24, 48],
        "head_width": 16,
        "blocks": 2,
        "growth": 6,
        "layers": 3,
    }
    assert scaled_config({"widths": [2, 3]}, 0.01) == {"widths": [1, 1]}  # never a zero-width layer


@pytest.mark.parametrize("make", [_resnet, _densecat], ids=["resnet-mtl", "densecat-mtl"])
@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_the_narrower_model_fits_the_budget_closely(make: object, fraction: float) -> None:
    base = make()  # type: ignore[operator]
    selected = measure(decompose(base, TASKS), base.input_size)
    budget = int(fraction * selected.macs)
    narrow = narrow_to(base, TASKS, Target(max_macs=budget))
    assert narrow.size.macs <= budget
    assert narrow.size.macs >= 0.9 * budget  # integer widths: within one step of the budget
    assert narrow.size == measure(narrow.model, base.input_size)
    assert narrow.model.task_names == list(TASKS)  # built for the selected tasks only
    assert type(narrow.model) is type(base) and 0 < narrow.scale < 1


def test_narrowing_is_uniform_and_starts_from_random_weights() -> None:
    base = _resnet()
    narrow = narrow_to(base, TASKS, Target(max_macs=int(0.5 * measure(decompose(base, TASKS), 32).macs)))
    widths = narrow.model.config()["widths"]
    assert widths == [round(w * narrow.scale) for w in (16, 16, 32, 48)]
    same = build_narrow(base, TASKS, 1.0)
    assert not torch.equal(same.trunk.stem[0].weight, base.trunk.stem[0].weight)


def test_a_budget_no_narrower_model_fits_is_refused() -> None:
    with pytest.raises(ImpossibleBudgetError, match="no narrower ResNetMTL for seg, depth fits 10 MACs"):
        narrow_to(_resnet(), TASKS, Target(max_macs=10))


def test_a_parameter_limit_narrows_too() -> None:
    base = _resnet()
    selected = measure(decompose(base, TASKS), base.input_size)
    limit = Target(max_macs=selected.macs, max_params=selected.params // 3)
    narrow = narrow_to(base, TASKS, limit)
    assert narrow.size.params <= selected.params // 3 and narrow.scale < 1


def test_training_from_scratch_lowers_the_loss_and_stops_at_its_time_limit(scenes: TensorSamples) -> None:
    cfg = TrainConfig(batch_size=16, lr=3e-3)
    model = build_narrow(_resnet(), TASKS, 0.5)
    run = train_scratch(model, scenes, cfg, steps=12)
    assert run.steps == 12 and run.last_loss < run.first_loss
    assert not model.training
    capped = train_scratch(build_narrow(_resnet(), TASKS, 0.5), scenes, cfg, steps=50, seconds=0.0)
    assert capped.steps == 1


def test_widths_stay_multiples_of_the_configs_groups() -> None:
    """Grouped convolutions and GroupNorm (examples/grouped.py) need channels divisible by `groups`."""
    out = scaled_config({"widths": [16, 32, 32], "groups": 4, "head_width": 16, "layers": 3}, 0.3)
    assert out == {"widths": [4, 8, 8], "groups": 4, "head_width": 4, "layers": 3}
    from edgecut.server.mtl.contract import instantiate
    from edgecut.server.mtl.plugins import model_class
    from edgecut.server.mtl.tasks import SCENE_TASKS, by_name

    scene = by_name(SCENE_TASKS)
    grouped = instantiate(
        model_class("examples.grouped:GroupedHydra"),
        "grouped",
        tasks=[scene["depth"], scene["edges"]],
        input_size=32,
        widths=[16, 32, 32],
        groups=4,
        head_width=16,
    )
    limit = int(0.5 * measure(grouped, 32).macs)
    narrow = narrow_to(grouped, ["depth", "edges"], Target(max_macs=limit))
    assert narrow.size.macs <= limit and all(w % 4 == 0 for w in narrow.model.config()["widths"])
