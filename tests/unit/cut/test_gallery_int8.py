"""Issue 30: every gallery model (examples/) and the byo worked example (docs/models.md) quantise: an INT8
model that passes the per-task check, or fp32 with the reason; operators left in fp32 named in one log
line; the device's runtime loads the INT8 file."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecut.agent.runtime import load_model
from edgecut.server.cut.quantise import Outcome, calibration_images, quantise_checked
from edgecut.server.mtl import MultiTaskModel
from edgecut.server.mtl.data import TensorSamples
from edgecut.server.mtl.tasks import SCENE_TASKS
from edgecut.server.ort_latency import session
from tests.unit.cut.test_gallery import CASES, SIZE, gallery_model
from tests.unit.cut.test_quantise import _export
from tests.unit.docs.test_models_md import python_blocks

SCENE = {t.name for t in SCENE_TASKS}


def _check(model: MultiTaskModel, scenes: TensorSamples, tmp_path: Path, caplog) -> Outcome:  # type: ignore[no-untyped-def]
    """Quantise `model` checked on the scene tasks it has (the others have no labels here)."""
    src = _export(model, tmp_path / "m.onnx")
    specs = {t: s for t, s in model.task_specs.items() if t in SCENE}
    caplog.set_level(logging.INFO, logger="edgecut")
    out = quantise_checked(src, tmp_path / "m.int8.onnx", calibration_images(scenes, 32), specs, scenes)
    named = [r.getMessage() for r in caplog.records if "left in fp32" in r.getMessage()]
    assert len(named) == (1 if out.float_ops else 0), named  # once, however many retries ran
    assert all(op in named[0] for op in out.float_ops)
    if out.precision == "int8":
        assert out.path is not None and min(out.changes.values()) >= -0.5
        x = np.random.default_rng(0).random((2, 3, model.input_size, model.input_size), dtype=np.float32)
        a, b = session(src).run(None, {"image": x}), session(out.path).run(None, {"image": x})
        assert all(ya.shape == yb.shape and np.isfinite(yb).all() for ya, yb in zip(a, b, strict=True))
        assert load_model(out.path, "gallery").meta.tasks == model.task_names
    else:
        assert out.path is None and out.note and not (tmp_path / "m.int8.onnx").exists()
    return out


@pytest.mark.parametrize("arch", sorted(CASES))
def test_every_gallery_model_quantises_or_says_why_not(arch: str, scenes, tmp_path, caplog) -> None:
    torch.set_num_threads(1)
    model = gallery_model(arch)
    assert model.input_size == SIZE == 32
    _check(model, scenes, tmp_path, caplog)


@pytest.fixture
def mymodels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    (tmp_path / "mymodels.py").write_text(python_blocks()["mymodels.py"])
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("mymodels")
    sys.modules.pop("mymodels", None)


def test_the_byo_worked_example_quantises(mymodels, scenes, tmp_path, caplog) -> None:
    torch.manual_seed(0)
    tasks = [t for t in SCENE_TASKS if t.name in ("seg", "depth", "count")]
    model = mymodels.TinyMTL(tasks, input_size=32, width=8)
    model.train()
    with torch.no_grad():  # BatchNorm statistics away from their defaults
        model(torch.rand(8, 3, 32, 32))
    _check(model.eval(), scenes, tmp_path, caplog)
