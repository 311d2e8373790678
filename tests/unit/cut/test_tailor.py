"""Decompose, prune to a budget, recover and export, on both reference architectures."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgecut.model_meta import ONNX_METADATA_KEY, ModelMeta
from edgecut.server.cut.export import export_onnx, session
from edgecut.server.cut.objective import Objective, with_teacher
from edgecut.server.cut.prune import measure, smallest
from edgecut.server.cut.recover import RecoveryOptions, recover
from edgecut.server.cut.tailor import TailorOptions, decompose, tailor
from edgecut.server.errors import EmptyTasksError, ImpossibleBudgetError, ModelContractError, UnknownTaskError
from edgecut.server.mtl.data import batches
from edgecut.server.mtl.losses import distill_loss
from edgecut.server.spec import Budget
from tests.support.tailored import report_meta


@pytest.mark.parametrize("arch", ["small_resnet", "small_densecat"])
def test_tailor_meets_a_macs_budget_and_keeps_output_shapes(arch, request, scenes) -> None:
    base = request.getfixturevalue(arch)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = base(x)
    rep = tailor(base, ["seg", "normals"], Budget(macs_fraction=0.4), scenes, TailorOptions(calib_batches=1))
    assert rep.tasks == ["seg", "normals"]
    assert rep.pruned.macs <= 0.4 * rep.selected.macs
    assert rep.pruned.params < rep.selected.params < rep.full.params
    with torch.no_grad():
        after = rep.model(x)
    assert set(after) == {"seg", "normals"}
    for t in after:
        assert after[t].shape == before[t].shape
    # The base model is untouched: tailoring works on a copy.
    assert measure(base, 32) == rep.full


def test_decompose_errors_are_clear(small_resnet) -> None:
    with pytest.raises(UnknownTaskError, match=r"unknown task 'sky'.*seg, depth, normals, edges, count"):
        decompose(small_resnet, ["seg", "sky"])
    with pytest.raises(EmptyTasksError, match="no task selected"):
        decompose(small_resnet, [" "])
    with pytest.raises(ModelContractError, match="not a MultiTaskModel"):
        decompose(nn.Linear(2, 2), ["seg"])  # type: ignore[arg-type]


def test_budget_below_the_heads_says_the_smallest_achievable(small_resnet, scenes) -> None:
    least = smallest(small_resnet.select(["depth"]), round_to=1)  # the finest steps tailoring tries
    with pytest.raises(ImpossibleBudgetError) as info:
        tailor(
            small_resnet,
            ["depth"],
            Budget(max_macs=max(1, least.macs // 2)),
            scenes,
            TailorOptions(calib_batches=1),
        )
    text = str(info.value)
    # the smallest reachable size, the layer holding most of it and why it cannot shrink, what to ask for
    assert f"the smallest model keeps {least.macs / 1e6:.3f} MMACs" in text
    layer = re.search(r"its largest layer, ([\w.]+) \(", text)
    assert layer and layer.group(1) in dict(small_resnet.named_modules())
    assert re.search(r"is (at its smallest width \(\d+ channels\)|the output layer of task 'depth')", text)
    share = math.ceil(100 * least.macs / measure(small_resnet.select(["depth"]), 32).macs) / 100
    assert text.endswith(f"ask for at least macs={share:g} (max_macs={least.macs:.3g})")


def test_recovery_by_distillation_brings_the_pruned_model_closer_to_the_original(
    trained_small, scenes
) -> None:
    rep = tailor(
        trained_small, ["depth"], Budget(params_fraction=0.3), scenes, TailorOptions(calib_batches=1)
    )
    batch = with_teacher(next(batches(scenes, 48)), rep.teacher)

    def gap() -> float:
        with torch.no_grad():
            return float(
                distill_loss(
                    rep.model.task_specs["depth"], rep.model(batch["image"])["depth"], batch["teacher:depth"]
                )
            )

    before = gap()
    recover(rep.model, rep.teacher, scenes, RecoveryOptions(steps=30, batch_size=16))
    assert gap() < before


def test_export_names_one_output_per_task_with_dynamic_batch_and_metadata(
    small_resnet, scenes, tmp_path
) -> None:
    rep = tailor(
        small_resnet, ["seg", "count"], Budget(macs_fraction=0.5), scenes, TailorOptions(calib_batches=1)
    )
    meta = report_meta(rep, "t")
    path = tmp_path / "m.onnx"
    diff = export_onnx(rep.model, meta, path)
    assert diff < 1e-4
    sess = session(path)
    assert [o.name for o in sess.get_outputs()] == ["seg", "count"]
    out = sess.run(None, {"image": np.random.rand(3, 3, 32, 32).astype(np.float32)})
    assert out[0].shape == (3, 6, 32, 32) and out[1].shape == (3, 5)
    embedded = {p.key: p.value for p in onnx.load(str(path)).metadata_props}[ONNX_METADATA_KEY]
    assert ModelMeta.from_json(embedded).tasks == ["seg", "count"]
    assert json.loads(embedded)["outputs"]["seg"]["shape"] == [None, 6, 32, 32]


def test_label_free_objective_is_deterministic(small_resnet, scenes) -> None:
    m = small_resnet.select(["depth"])
    b = next(batches(scenes, 8))
    obj = Objective(m.task_specs, "distill", projections=2, seed=1)
    pred = m(b["image"])["depth"]
    a = [float(t) for t in obj.terms("depth", pred, b, 0)]
    assert a == [float(t) for t in obj.terms("depth", pred, b, 0)]
    assert a != [float(t) for t in obj.terms("depth", pred, b, 1)]


def test_pruned_widths_stay_multiples_of_eight(scenes) -> None:
    from edgecut.server.mtl import build_model

    torch.manual_seed(0)
    base = build_model("resnet-mtl", input_size=32, widths=[16, 24, 32, 48], head_width=16).eval()
    rep = tailor(base, ["seg", "depth"], Budget(macs_fraction=0.5), scenes, TailorOptions(calib_batches=1))
    widths = [m.out_channels for m in rep.model.trunk.modules() if isinstance(m, nn.Conv2d)]
    assert rep.pruned.macs < rep.selected.macs
    assert all(w % 8 == 0 for w in widths), widths
