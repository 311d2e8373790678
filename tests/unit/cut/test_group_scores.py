"""How a channel coupled across several layers (a residual add) is scored: CosPrune's per-filter
agreement is averaged over the coupled filters, sensitivities are summed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecut.server.cut.importance import group_combine
from edgecut.server.cut.prune import ChannelPruner


def _agreement_scores(model: nn.Module, tasks: list[str]) -> dict[str, dict[nn.Module, torch.Tensor]]:
    """Every conv filter at 1.0 (cosine 0), except two conflicting ones: channel 0 of the stem conv,
    which a residual add couples with layer1's two second convs, and channel 0 of a lone conv."""
    per = {m: torch.ones(m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)}
    stem, lone = model.trunk.stem[0], model.trunk.layer2[0].conv1
    per[stem][0] = 0.0  # mean over its 3 coupled filters 0.67, sum 2.0
    per[lone][0] = 0.8  # alone: 0.8 either way
    return {t: dict(per) for t in tasks}


def _lowest(pruner: ChannelPruner, scores: dict) -> set[nn.Module]:
    _, gi, ui = pruner.ranked_units(scores, "mean", None)[0]
    group = pruner._groups[gi]
    assert pruner._layouts[gi].units[ui] == [0]
    return {dep.target.module for dep, _ in group}


@pytest.mark.parametrize(("combine", "lowest"), [("mean", "stem"), ("sum", "lone")])
def test_coupled_channels_combine_their_filters_scores(small_resnet, combine, lowest) -> None:
    model = small_resnet.select(["seg", "depth"])
    scores = _agreement_scores(model, model.task_names)
    pruner = ChannelPruner(model, combine=combine)
    expected = model.trunk.stem[0] if lowest == "stem" else model.trunk.layer2[0].conv1
    assert expected in _lowest(pruner, scores)


def test_cosprune_averages_and_the_other_criteria_sum() -> None:
    assert group_combine("cosprune") == "mean"
    assert {group_combine(c) for c in ("taylor", "snip", "garg-taylor", "l1", "random")} == {"sum"}
