"""Every gallery architecture (examples/) tailors at 30 / 50 / 70 % for every 2-task subset of its tasks:
no crash, ONNX equal to torch within 1e-4, fewer params and MACs, and the agent's runtime loads it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from edgecut.agent.runtime import load_model
from edgecut.server.cut.export import export_onnx
from edgecut.server.cut.tailor import TailorOptions, tailor
from edgecut.server.mtl import MultiTaskModel, build_model
from edgecut.server.mtl.data import TensorSamples
from edgecut.server.mtl.tasks import COUNT_CLASSES, SCENE_TASKS, TaskSpec, by_name
from edgecut.server.spec import Budget
from examples import GALLERY
from tests.support.tailored import report_meta

SIZE = 32
SCENE = by_name(SCENE_TASKS)
SLANT = TaskSpec("slant", "regression", 1)
LARGEST = TaskSpec("largest", "classification", 4, ("sphere", "box", "cylinder", "cone"))
MOOD = TaskSpec("mood", "classification", 3, ("a", "b", "c"))
# name -> (quick model config, its tasks): every kind of task appears in some architecture
CASES: dict[str, tuple[dict[str, Any], list[TaskSpec]]] = {
    "resnet": (
        {"widths": [16, 16, 24, 32], "head_width": 16},
        [SCENE["seg"], SCENE["depth"], SCENE["normals"], SCENE["count"]],
    ),
    "mobilenet-fpn": (
        {"widths": [16, 16, 24, 32], "fpn": 16, "expand": 2, "blocks": 1, "head_width": 16},
        [SCENE["seg"], SCENE["normals"], SCENE["edges"], SCENE["count"]],
    ),
    "unet": (
        {"width": 32, "head_width": 16},
        [SCENE["seg"], SLANT, TaskSpec("n", "classification", 5, COUNT_CLASSES), LARGEST],
    ),
    "grouped": (
        {"widths": [16, 32, 32], "groups": 4, "head_width": 16},
        [SCENE["depth"], SCENE["edges"], LARGEST, MOOD],
    ),
    "mobilevit": (
        {"widths": [8, 16, 24, 32], "dim": 32, "heads": 4, "mlp": 48, "expand": 2, "head_width": 16},
        [SCENE["seg"], SCENE["depth"], LARGEST],
    ),
    "efficient-se": (
        {"widths": [8, 16, 24], "pyramid": 16, "expand": 2, "head_width": 16},
        [SCENE["normals"], SCENE["count"], MOOD],
    ),
    # 32 / 4 = 8 x 8 = 64 tokens of width 64: a token axis as long as the channel axis
    "token-heads": (
        {"dim": 64, "heads": 4, "mlp": 64, "head_width": 16},
        [SCENE["edges"], SLANT, SCENE["count"]],
    ),
}
LEVELS = (0.3, 0.5, 0.7)
PARAMS = [
    pytest.param(arch, pair, level, id=f"{arch}-{'+'.join(pair)}-{int(level * 100)}")
    for arch, (_, specs) in CASES.items()
    for pair in itertools.combinations([s.name for s in specs], 2)
    for level in LEVELS
]


@pytest.fixture(scope="module")
def calib() -> TensorSamples:
    return TensorSamples({"image": torch.rand(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))})


_models: dict[str, MultiTaskModel] = {}


def gallery_model(arch: str) -> MultiTaskModel:
    if arch not in _models:
        config, specs = CASES[arch]
        torch.manual_seed(0)
        model = build_model(GALLERY[arch], tasks=specs, input_size=SIZE, **config)
        model.train()
        with torch.no_grad():  # BatchNorm statistics away from their defaults
            model(torch.rand(8, 3, SIZE, SIZE))
        _models[arch] = model.eval()
    return _models[arch]


@pytest.mark.parametrize(("arch", "pair", "level"), PARAMS)
def test_gallery_tailors_exports_and_loads_in_the_agent(
    arch: str, pair: tuple[str, str], level: float, calib: TensorSamples, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    base = gallery_model(arch)
    options = TailorOptions(calib_batches=1, batch_size=8, bn_batches=1)
    rep = tailor(base, list(pair), Budget(macs_fraction=round(1 - level, 2)), calib, options)
    assert rep.pruned.macs <= (1 - level) * rep.selected.macs
    assert rep.pruned.params < rep.selected.params
    meta = report_meta(rep, arch)
    path = tmp_path / "m.onnx"
    assert export_onnx(rep.model, meta, path) < 1e-4
    loaded = load_model(path, "gallery")  # warm-up + output checks of the device's runtime
    assert loaded.meta.tasks == list(pair)


@pytest.mark.parametrize("arch", sorted(CASES))
def test_gallery_recovers_with_feature_distillation_and_exports_without_adapters(
    arch: str, calib: TensorSamples, tmp_path: Path
) -> None:
    """Issue 20: every gallery trunk's outputs can be distilled (adapters where widths differ); the
    exported model is the student alone and ONNX still equals torch."""
    from edgecut.server.cut.recover import RecoveryOptions

    torch.set_num_threads(1)
    base = gallery_model(arch)
    pair = [s.name for s in CASES[arch][1][:2]]
    recovery = RecoveryOptions(steps=2, batch_size=8, features=1.0)
    options = TailorOptions(calib_batches=1, batch_size=8, bn_batches=1, recovery=recovery)
    rep = tailor(base, pair, Budget(macs_fraction=0.5), calib, options)
    assert rep.recovery is not None and rep.recovery.steps == 2
    assert rep.recovery.first_loss == rep.recovery.first_loss  # finite, not NaN
    keys = set(rep.model.state_dict())
    assert keys == set(rep.teacher.state_dict())  # nothing (no adapter) was added to the student
    path = tmp_path / "m.onnx"
    assert export_onnx(rep.model, report_meta(rep, arch), path) < 1e-4
    assert load_model(path, "gallery").meta.tasks == pair
