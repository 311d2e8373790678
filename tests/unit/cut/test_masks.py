"""Element-wise criteria, fusion rules and fixed masks on hand-checkable models."""

from __future__ import annotations

import itertools

import pytest
import torch

from edgecut.server.cut.importance import ScoreInputs, score
from edgecut.server.cut.masks import (
    ALL,
    ELEMENT_CRITERIA,
    Layout,
    apply_masks,
    channel_scores,
    mask_sparsity,
    masks_at_sparsity,
    papers_keep,
    per_task_keeps,
    score_elements,
    vote_keeps,
)
from edgecut.server.cut.objective import Objective
from edgecut.server.cut.recover import RecoveryOptions, recover
from edgecut.server.mtl.data import batches
from tests.support.tiny_models import LinearMTL

TRUNK, HEAD = "trunk.1", "heads.{}.fc"


def three_task_linear() -> LinearMTL:
    """x -> shared Linear(3 -> 2) (6 weights) -> one Linear(2 -> 2) head (4 weights) per task."""
    return LinearMTL(("a", "b", "c"), size=1)


# Per task: 6 trunk scores then 4 head scores. At keep 0.5 each task keeps 5 of its 10 weights:
#   a keeps trunk {0, 1, 2} and head {0, 1}; b trunk {1, 2, 3, 5}, head {0}; c trunk {0, 3, 4}, head {2, 3}.
HAND = {
    "a": ([9, 8, 7, 3, 2, 1], [6, 5, 0.5, 0.4]),
    "b": ([1, 9, 8, 7, 2, 3], [6, 0.1, 0.2, 0.3]),
    "c": ([8, 1, 2, 9, 7, 3], [0.1, 0.2, 6, 5]),
}


def hand_scores(tasks: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
    return {
        t: {TRUNK: torch.tensor(HAND[t][0]).view(2, 3), HEAD.format(t): torch.tensor(HAND[t][1]).view(2, 2)}
        for t in tasks
    }


def kept(mask: torch.Tensor) -> set[int]:
    return set(torch.nonzero(mask.flatten()).flatten().tolist())


@pytest.mark.parametrize(
    ("tasks", "rule", "expected"),
    [
        (("a", "b"), "vote", {1, 2}),  # two tasks: the vote is the intersection
        (("a", "b"), "intersection", {1, 2}),
        (("a", "b"), "union", {0, 1, 2, 3, 5}),
        (("a", "b", "c"), "vote", {0, 1, 2, 3}),  # three tasks: kept by at least two
        (("a", "b", "c"), "intersection", set()),
        (("a", "b", "c"), "union", {0, 1, 2, 3, 4, 5}),
        (("a",), "vote", {0, 1, 2}),  # one task: the guard keeps its own mask
    ],
)
def test_trunk_fusion_rules_on_hand_scores(tasks, rule, expected) -> None:
    model = three_task_linear().select(list(tasks))
    ms = masks_at_sparsity(hand_scores(tasks), model, 0.5, rule, calibrate=False)
    assert kept(ms.masks[TRUNK]) == expected
    # Heads keep their own task's mask whatever the rule.
    heads = {"a": {0, 1}, "b": {0}, "c": {2, 3}}
    for t in tasks:
        assert kept(ms.masks[HEAD.format(t)]) == heads[t]


def test_vote_matches_counting_the_tasks_own_top_k_and_the_published_v2_empties_one_task() -> None:
    for tasks in (("a", "b"), ("a", "b", "c")):
        model = three_task_linear().select(list(tasks))
        layout = Layout(model)
        keeps = per_task_keeps(hand_scores(tasks), layout, 0.5)
        fused = masks_at_sparsity(hand_scores(tasks), model, 0.5, "vote", calibrate=False)
        assert torch.equal(layout.flat(fused.masks).bool(), vote_keeps(keeps, layout, v=2))
    single = three_task_linear().select(["a"])
    layout = Layout(single)
    published = vote_keeps(per_task_keeps(hand_scores(("a",)), layout, 0.5), layout, v=2)
    assert not published[layout.trunk].any()


def test_calibrated_masks_hit_the_sparsity_and_report_the_per_task_keep() -> None:
    model = three_task_linear()
    for rule in ("vote", "union", "intersection"):
        ms = masks_at_sparsity(hand_scores(("a", "b", "c")), model, 0.5, rule)
        assert ms.sparsity == pytest.approx(0.5)  # 9 of the 18 weights kept
        assert 0 < ms.keep_ratio <= 1
    # At equal sparsity the union spends more of the budget on the shared trunk than the vote, which
    # spends more than the intersection (heads are ranked the same way under all three).
    trunk = {
        rule: masks_at_sparsity(hand_scores(("a", "b", "c")), model, 0.5, rule).trunk_kept
        for rule in ("union", "vote", "intersection")
    }
    assert trunk["union"] > trunk["vote"] >= trunk["intersection"]


def test_priorities_steer_the_weighted_mean() -> None:
    model = three_task_linear().select(["a", "b"])
    scores = hand_scores(("a", "b"))
    favour_a = masks_at_sparsity(scores, model, 0.8, "mean", torch.tensor([10.0, 1.0]))
    favour_b = masks_at_sparsity(scores, model, 0.8, "mean", torch.tensor([1.0, 10.0]))
    assert kept(favour_a.masks[TRUNK]) <= {0, 1, 2} and kept(favour_a.masks[TRUNK])
    assert kept(favour_b.masks[TRUNK]) <= {1, 2, 3} and kept(favour_b.masks[TRUNK])


def test_magnitude_keeps_the_largest_weights_globally_across_layers() -> None:
    model = three_task_linear().select(["a", "b"])
    with torch.no_grad():
        model.get_parameter("trunk.1.weight").copy_(torch.tensor([[5.0, -4.0, 0.1], [3.0, -0.2, 0.3]]))
        model.get_parameter("heads.a.fc.weight").copy_(torch.tensor([[0.5, -6.0], [0.05, 0.04]]))
        model.get_parameter("heads.b.fc.weight").copy_(torch.tensor([[0.01, 0.02], [-2.0, 0.03]]))
    s = score_elements("magnitude", ScoreInputs(model, [], Objective(model.task_specs, "labels")))
    assert set(s) == {ALL}
    ms = masks_at_sparsity(s, model, 1 - 5 / 14, "vote")  # keep 5 of 14
    # |w| top 5 over all layers: 6 (head a), 5, 4, 3 (trunk), 2 (head b); a per-layer cut would differ.
    assert kept(ms.masks[TRUNK]) == {0, 1, 3}
    assert kept(ms.masks[HEAD.format("a")]) == {1}
    assert kept(ms.masks[HEAD.format("b")]) == {2}


def test_snip_scores_each_task_over_the_trunk_and_its_own_head_only(trained_small, scenes) -> None:
    model = trained_small.select(["seg", "depth"])
    calib = list(itertools.islice(batches(scenes, 16), 2))
    s = score_elements("snip", ScoreInputs(model, calib, Objective(model.task_specs, "labels")))
    assert set(s) == {"seg", "depth"}
    assert any(n.startswith("heads.seg.") for n in s["seg"])
    assert not any(n.startswith("heads.depth.") for n in s["seg"])
    assert any(n.startswith("trunk.") for n in s["depth"])
    for per in s.values():  # normalised: each task's scores sum to 1
        assert sum(float(v.sum()) for v in per.values()) == pytest.approx(1.0, rel=1e-4)


def test_snip_at_init_differs_from_snip_at_the_trained_weights(trained_small, scenes) -> None:
    model = trained_small.select(["seg", "depth"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calib = list(itertools.islice(batches(scenes, 16), 2))
    inp = ScoreInputs(model, calib, Objective(model.task_specs, "labels"))
    trained = masks_at_sparsity(score_elements("snip", inp), model, 0.7, "union")
    at_init = masks_at_sparsity(score_elements("snip-init", inp), model, 0.7)
    layout = Layout(model)
    disagree = float((layout.flat(trained.masks) != layout.flat(at_init.masks)).float().mean())
    assert disagree > 0.1
    # Scoring at a fresh initialisation works on a copy: the trained weights are untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_distillation_and_labels_give_different_scores(trained_small, scenes) -> None:
    model = trained_small.select(["depth"])
    calib = list(itertools.islice(batches(scenes, 16), 1))
    lab = score_elements("snip", ScoreInputs(model, calib, Objective(model.task_specs, "labels")))
    dis = score_elements("snip", ScoreInputs(model, calib, Objective(model.task_specs, "distill")))
    w, v = lab["depth"]["trunk.stem.0"], dis["depth"]["trunk.stem.0"]
    assert float(v.sum()) > 0 and w.shape == v.shape
    assert not torch.allclose(w / w.sum(), v / v.sum())


def test_channel_scores_are_the_element_scores_summed_per_output_channel(trained_small, scenes) -> None:
    model = trained_small.select(["seg", "depth"])
    calib = list(itertools.islice(batches(scenes, 16), 1))
    obj = Objective(model.task_specs, "labels")
    per_channel = channel_scores(score_elements("snip", ScoreInputs(model, calib, obj)), model)
    raw = score("snip", ScoreInputs(model, calib, obj))  # the channel-level criterion
    conv = model.trunk.layer2[0].conv1
    for task in ("seg", "depth"):
        a, b = per_channel[task][conv], raw[task][conv]
        assert torch.allclose(a / a.sum(), b / b.sum(), atol=1e-5)


def test_masks_stay_fixed_through_fine_tuning(small_resnet, scenes) -> None:
    model = small_resnet.select(["seg"])
    s = score_elements("random", ScoreInputs(model, [], Objective(model.task_specs, "labels")))
    ms = masks_at_sparsity(s, model, 0.6)
    apply_masks(model, ms.masks)
    assert mask_sparsity(model) == pytest.approx(ms.sparsity)
    conv = model.trunk.layer1[0].conv1
    orig = conv.weight_orig.detach().clone()
    recover(model, None, scenes, RecoveryOptions(steps=3, lr=1e-2, batch_size=16, target="labels"))
    mask = ms.masks["trunk.layer1.0.conv1"]
    assert torch.equal(conv.weight_mask.bool(), mask)
    assert (conv.weight[~mask] == 0).all()  # pruned weights stay zero
    assert not torch.equal(conv.weight_orig[mask], orig[mask])  # the others were trained
    assert mask_sparsity(model) == pytest.approx(ms.sparsity)


def test_one_task_vote_keeps_a_non_empty_trunk_on_a_trained_model(trained_small, scenes) -> None:
    model = trained_small.select(["seg"])
    calib = list(itertools.islice(batches(scenes, 16), 1))
    s = score_elements("snip", ScoreInputs(model, calib, Objective(model.task_specs, "labels")))
    ms = masks_at_sparsity(s, model, 0.9, "vote", calibrate=False)
    assert ms.trunk_kept > 0.01
    layout = Layout(model)
    assert not vote_keeps(per_task_keeps(s, layout, 0.1), layout, v=2)[layout.trunk].any()


def test_unknown_names_are_clear_errors(small_resnet) -> None:
    model = small_resnet.select(["seg"])
    with pytest.raises(KeyError, match="unknown element criterion 'nope'"):
        score_elements("nope", ScoreInputs(model, [], Objective(model.task_specs, "labels")))
    with pytest.raises(KeyError, match="unknown element fusion 'nope'"):
        masks_at_sparsity({"seg": {}}, model, 0.5, "nope")
    assert set(ELEMENT_CRITERIA) == {"snip", "snip-init", "magnitude", "random", "disparse-pt"}


def test_the_papers_protocol_keeps_their_hand_tuned_share_per_task() -> None:
    """ESCM and DiSparse (static) on NYUv2: keep 0.675 / 0.46 / 0.257 / 0.08 per task, not 1 - sparsity."""
    assert [papers_keep(s) for s in (0.3, 0.5, 0.7, 0.9)] == [0.675, 0.46, 0.257, 0.08]
    assert papers_keep(0.6) == pytest.approx(0.4)  # levels outside the table: 1 - sparsity
    model = three_task_linear().select(["a", "b"])
    ms = masks_at_sparsity(
        hand_scores(("a", "b")), model, 0.7, "vote", calibrate=False, keep=papers_keep(0.7)
    )
    assert ms.keep_ratio == 0.257
    layout = Layout(model)
    own = per_task_keeps(hand_scores(("a", "b")), layout, 0.257)  # 2 of each task's 10 weights
    assert torch.equal(layout.flat(ms.masks).bool(), vote_keeps(own, layout, v=2))


def _hand_grads(model, calib, task: str, name: str, objective: Objective) -> list[torch.Tensor]:
    """Per batch and objective term: task's gradient w.r.t. module `name`'s weight."""
    w = dict(model.named_modules())[name].weight
    out = []
    for bi, b in enumerate(calib):
        pred = model(b["image"])[task]
        out += [torch.autograd.grad(t, w, retain_graph=True)[0] for t in objective.terms(task, pred, b, bi)]
    return out


def test_disparse_pretrained_scores_are_summed_gradient_magnitudes_times_w_squared(
    trained_small, scenes
) -> None:
    model = trained_small.select(["seg", "depth"])
    calib = list(itertools.islice(batches(scenes, 16), 2))
    obj = Objective(model.task_specs, "labels")
    s = score_elements("disparse-pt", ScoreInputs(model, calib, obj))
    name = "trunk.layer2.0.conv1"
    w = dict(model.named_modules())[name].weight.detach()
    by_hand = sum(g.abs() for g in _hand_grads(model, calib, "depth", name, obj)) * w.pow(2)
    got = s["depth"][name]
    assert torch.allclose(got / got.sum(), by_hand / by_hand.sum(), atol=1e-6)


def test_first_order_label_free_scores_are_magnitudes_not_squares(trained_small, scenes) -> None:
    model = trained_small.select(["depth"])
    calib = list(itertools.islice(batches(scenes, 16), 1))
    first = Objective(model.task_specs, "distill", order="first")
    name = "trunk.stem.0"
    w = dict(model.named_modules())[name].weight.detach()
    grads = _hand_grads(model, calib, "depth", name, first)
    s = score_elements("snip", ScoreInputs(model, calib, first))["depth"][name]
    by_hand = sum((w * g).abs() for g in grads)
    assert torch.allclose(s / s.sum(), by_hand / by_hand.sum(), atol=1e-6)
    second = score_elements("snip", ScoreInputs(model, calib, Objective(model.task_specs, "distill")))
    assert not torch.allclose(second["depth"][name], s)
