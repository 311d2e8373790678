"""bench quality's Torch-Pruning baseline: the pruner is called as Torch-Pruning's README shows it (local,
`round_to=8`, its importances with their default normalisation; one global isomorphic variant), meets
the MACs budget, and the pruned models get the training edgecut's own lineage gets."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp

from edgecut.server.cut.decompose import decompose
from edgecut.server.cut.prune import measure
from edgecut.server.mtl import MultiTaskModel, build_model, checkpoint
from edgecut.server.mtl.data import TensorSamples
from edgecut.server.paths import PACKAGED_REFERENCE
from edgecut_bench.tp_baseline import ROUND_TO, VARIANTS, pruner_for, tp_prune

TASKS = ("seg", "depth")


@pytest.fixture(scope="module")
def reference() -> MultiTaskModel:
    """The packaged reference's architecture for seg + depth (its weights: whichever teacher is packaged)."""
    return decompose(checkpoint.load(PACKAGED_REFERENCE), TASKS).eval()


def _small() -> MultiTaskModel:
    torch.manual_seed(0)
    return decompose(build_model("resnet-mtl", input_size=32, widths=[16, 16, 32, 48], head_width=16), TASKS)


def _widths(model: torch.nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def test_the_pruner_is_called_as_the_readme_shows() -> None:
    """README: local pruning (global_pruning left at False), round_to=8, GroupMagnitudeImportance(p=2) /
    GroupTaylorImportance() with their default mean normalisation, the output layers ignored; its
    global-pruning section: global_pruning=True with isomorphic=True."""
    assert list(VARIANTS) == ["magnitude", "taylor", "isomorphic"]
    expected = {
        "magnitude": (tp.importance.GroupMagnitudeImportance, False, False),
        "taylor": (tp.importance.GroupTaylorImportance, False, False),
        "isomorphic": (tp.importance.GroupMagnitudeImportance, True, True),
    }
    for name, (importance, global_pruning, isomorphic) in expected.items():
        model = _small()
        pruner = pruner_for(model, VARIANTS[name], steps=100)
        assert type(pruner.importance) is importance
        assert pruner.importance.normalizer == "mean" and pruner.importance.group_reduction == "mean"
        assert (pruner.global_pruning, pruner.isomorphic, pruner.round_to) == (global_pruning, isomorphic, 8)
        assert pruner.iterative_steps == 100 and pruner.pruning_ratio == 1.0
        assert set(pruner.ignored_layers) >= set(model.output_layers())
    assert isinstance(VARIANTS["magnitude"].importance(), tp.importance.GroupMagnitudeImportance)
    assert VARIANTS["magnitude"].importance().p == 2
    assert VARIANTS["taylor"].gradients and not VARIANTS["magnitude"].gradients


@pytest.mark.parametrize("variant", ["magnitude", "isomorphic"])
@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_on_the_reference_every_pruned_width_is_a_multiple_of_8_within_the_budget(
    reference: MultiTaskModel, scenes: TensorSamples, variant: str, fraction: float
) -> None:
    before = _widths(reference)
    full = measure(reference, reference.input_size)
    budget = int(fraction * full.macs)
    model, size = tp_prune(reference, variant, budget, scenes)
    assert size == measure(model, reference.input_size)
    assert 0.7 * budget <= size.macs <= budget  # round_to=8 moves in steps of 8 channels
    after = _widths(model)
    pruned = {n: w for n, w in after.items() if w != before[n]}
    assert pruned, "nothing was pruned"
    assert all(w % ROUND_TO == 0 and w > 0 for w in pruned.values()), pruned
    outputs = {n for n, m in reference.named_modules() if any(m is o for o in reference.output_layers())}
    assert all(after[n] == before[n] for n in outputs)  # each task's output keeps its channels
    if variant == "magnitude":  # local: every layer keeps the same share, up to one rounding step
        kept = [after[n] / before[n] for n in before if n not in outputs]
        assert max(kept) - min(kept) <= ROUND_TO / min(before[n] for n in before if n not in outputs)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_every_variant_meets_the_budget_and_leaves_the_original_alone(
    scenes: TensorSamples, variant: str, fraction: float
) -> None:
    teacher = _small()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    budget = int(fraction * measure(teacher, 32).macs)
    model, size = tp_prune(teacher, variant, budget, scenes)
    assert size.macs <= budget and size == measure(model, 32)
    assert size.macs >= 0.5 * budget  # on a model this narrow one step of 8 channels is a large share
    out = model(torch.rand(2, 3, 32, 32))
    assert {t: tuple(y.shape) for t, y in out.items()} == {"seg": (2, 6, 32, 32), "depth": (2, 1, 32, 32)}
    # the original is left as it was (it is the teacher of the recovery that follows)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())


def test_local_taylor_keeps_the_same_widths_as_local_magnitude(scenes: TensorSamples) -> None:
    """Local pruning fixes how many channels each layer keeps; the importance only picks which."""
    teacher = _small()
    budget = int(0.5 * measure(teacher, 32).macs)
    magnitude, _ = tp_prune(teacher, "magnitude", budget, scenes)
    taylor, _ = tp_prune(teacher, "taylor", budget, scenes)
    assert _widths(magnitude) == _widths(taylor)
    kept = [
        (a.weight.detach(), b.weight.detach())
        for a, b in zip(magnitude.modules(), taylor.modules(), strict=True)
        if isinstance(a, torch.nn.Conv2d)
    ]
    assert any(not torch.equal(a, b) for a, b in kept)  # ... and the two pick different channels


def test_an_unreachable_budget_is_refused_in_one_sentence(scenes: TensorSamples) -> None:
    from edgecut.server.errors import ImpossibleBudgetError

    with pytest.raises(
        ImpossibleBudgetError, match=r"Torch-Pruning \(magnitude\) stopped at .* above the budget"
    ):
        tp_prune(_small(), "magnitude", 10, scenes)
