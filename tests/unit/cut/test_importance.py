"""Criteria on small models and a hand-checkable one."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from edgecut.server.cut.importance import CRITERIA, ScoreInputs, owners, score
from edgecut.server.cut.objective import Objective
from edgecut.server.mtl.data import batches
from edgecut.server.mtl.losses import label_loss
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


def _two_batches(scenes) -> list:
    return list(itertools.islice(batches(scenes, 8), 2))


def test_cosprune_on_a_batchnorm_model_is_the_per_batch_cosine_of_filter_weight_gradients(
    small_resnet, scenes
) -> None:
    """Garg's CosPrune: per conv filter, the tasks' gradients of that filter's weights, cosine per batch,
    averaged over the batches; BatchNorm scales are not filters."""
    model = small_resnet.select(["seg", "depth"])
    data = _two_batches(scenes)
    s = score("cosprune", ScoreInputs(model, data, Objective(model.task_specs, "labels")))["seg"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in s)
    conv = model.trunk.layer2[0].conv1
    per_batch = []
    for b in data:
        out = model(b["image"])
        g = [
            torch.autograd.grad(
                label_loss(model.task_specs[t], out[t], b[t]), conv.weight, retain_graph=True
            )[0]
            for t in ("seg", "depth")
        ]
        per_batch.append(F.cosine_similarity(g[0].flatten(1), g[1].flatten(1), dim=1))
    expected = torch.stack(per_batch).mean(0) + 1
    assert torch.allclose(s[conv], expected, atol=1e-5)
    # Averaging cosines is not the cosine of the summed gradients: the two batches disagree somewhere.
    assert len(set(torch.round(s[conv], decimals=4).tolist())) == conv.out_channels  # no ties to graph order


def test_garg_taylor_squares_the_mini_batch_gate_gradient(small_resnet, scenes) -> None:
    """(g dL/dg)^2 for a gate g = 1 on the channel, dL/dg taken over the whole mini-batch, then averaged
    over batches (Garg's config), not a sum of per-example squares."""
    model = small_resnet.select(["seg", "depth"])
    data = _two_batches(scenes)
    s = score("garg-taylor", ScoreInputs(model, data, Objective(model.task_specs, "labels")))["seg"]
    bn = model.trunk.layer2[0].bn1
    gate = torch.ones(bn.num_features, requires_grad=True)
    hook = bn.register_forward_hook(lambda _m, _i, out: out * gate.view(1, -1, 1, 1))
    try:
        expected = torch.zeros(bn.num_features)
        for b in data:
            out = model(b["image"])
            loss = sum(label_loss(model.task_specs[t], out[t], b[t]) for t in ("seg", "depth"))
            expected += torch.autograd.grad(loss, gate)[0].pow(2) / len(data)
    finally:
        hook.remove()
    assert torch.allclose(s[bn], expected, rtol=1e-4, atol=1e-12)


def test_scoring_with_batchnorm_in_train_mode_uses_batch_statistics_and_leaves_the_model_unchanged(
    small_resnet, scenes
) -> None:
    model = small_resnet.select(["seg", "depth"])
    data = _two_batches(scenes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    obj = Objective(model.task_specs, "labels")
    conv = model.trunk.stem[0]
    train_mode = score("snip", ScoreInputs(model, data, obj, batchnorm="train"))["seg"][conv]
    eval_mode = score("snip", ScoreInputs(model, data, obj))["seg"][conv]
    model.train()
    by_hand = torch.zeros(conv.out_channels)
    for b in data:
        loss = label_loss(model.task_specs["seg"], model(b["image"])["seg"], b["seg"])
        by_hand += (conv.weight * torch.autograd.grad(loss, conv.weight)[0]).abs().flatten(1).sum(1)
    model.eval()
    model.load_state_dict(before)  # the hand computation above moved the running statistics
    assert torch.allclose(train_mode, by_hand, rtol=1e-4) and not torch.allclose(train_mode, eval_mode)
    assert not model.training
    score("snip", ScoreInputs(model, data, obj, batchnorm="train"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_disparse_pt_per_channel_is_its_per_weight_score_summed_over_each_filter(
    trained_small, scenes
) -> None:
    """`edgecut prune --method disparse-pt` ranks channels by DiSparse's own pre-trained score, the one
    `bench paper` uses per weight (|dL_t/dw| summed over batches, times w^2)."""
    from edgecut.server.cut.masks import score_elements

    model = trained_small.select(["seg", "depth"])
    data = list(itertools.islice(batches(scenes, 16), 2))
    inp = ScoreInputs(model, data, Objective(model.task_specs, "labels"))
    per_channel, per_weight = score("disparse-pt", inp), score_elements("disparse-pt", inp)
    for task, name in (("depth", "trunk.layer2.0.conv1"), ("seg", "heads.seg.reduce.0")):
        conv = dict(model.named_modules())[name]
        summed = per_weight[task][name].flatten(1).sum(1)
        got = per_channel[task][conv]
        assert torch.allclose(got / got.sum(), summed / summed.sum(), atol=1e-6)
