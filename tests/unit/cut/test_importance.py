"""Criteria on small models and a hand-checkable one."""

from __future__ import annotations

import itertools

import pytest
import torch

from edgecut.server.cut.importance import CRITERIA, ScoreInputs, owners, score
from edgecut.server.cut.objective import Objective
from edgecut.server.mtl.data import batches
from tests.support.tiny_models import LinearMTL


@pytest.mark.parametrize("name", sorted(CRITERIA))
@pytest.mark.parametrize("target", ["distill", "labels"])
def test_every_criterion_scores_every_trunk_channel(name, target, small_resnet, scenes) -> None:
    model = small_resnet.select(["seg", "depth"])
    data = list(itertools.islice(batches(scenes, 16), 1))
    s = score(name, ScoreInputs(model, data, Objective(model.task_specs, target)))
    assert set(s) == {"seg", "depth"}
    stem_conv = model.trunk.stem[0]
    for task in s:
        vec = s[task][stem_conv]
        assert vec.shape == (stem_conv.out_channels,)
        assert torch.isfinite(vec).all() and (vec >= 0).all()
        assert float(vec.sum()) > 0, f"{name}/{target} gave all-zero scores"


def test_label_free_scores_are_not_zero_at_the_trained_weights(small_resnet, scenes) -> None:
    # The distillation loss is at its minimum there; the second-order objective must still rank channels.
    model = small_resnet.select(["depth"])
    data = list(itertools.islice(batches(scenes, 16), 1))
    s = score("taylor", ScoreInputs(model, data, Objective(model.task_specs, "distill")))
    assert float(s["depth"][model.trunk.layer3[0].bn2].sum()) > 0


def test_head_channels_only_scored_by_their_own_task(small_resnet, scenes) -> None:
    model = small_resnet.select(["seg", "depth"])
    data = list(itertools.islice(batches(scenes, 16), 1))
    s = score("taylor", ScoreInputs(model, data, Objective(model.task_specs, "labels")))
    seg_head_bn = model.heads["seg"].reduce[1]
    assert seg_head_bn in s["seg"] and seg_head_bn not in s["depth"]
    own = owners(model)
    assert own[seg_head_bn] == "seg" and own[model.trunk.stem[0]] is None


def test_cosprune_ranks_a_filter_with_opposed_task_gradients_lowest() -> None:
    torch.manual_seed(0)
    m = LinearMTL(("a", "b"), size=2)  # a 12-input shared layer
    with torch.no_grad():
        # Unit 0 feeds both heads with the same sign, unit 1 with opposite signs.
        m.heads["a"].fc.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        m.heads["b"].fc.weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    x = torch.rand(8, 3, 2, 2)
    batch = {"image": x, "a": torch.zeros(8, dtype=torch.long), "b": torch.zeros(8, dtype=torch.long)}
    s = score("cosprune", ScoreInputs(m, [batch], Objective(m.task_specs, "labels")))
    trunk_fc = m.trunk[1]
    agree, conflict = s["a"][trunk_fc].tolist()
    # Scores are mean cosine + 1: near 2 when the tasks pull the filter the same way, near 0 when opposed.
    assert conflict < 0.5 < 1.5 < agree
