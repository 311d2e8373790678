"""Channel groups that couple several producers: concat inputs keep their own floors, grouped convs lose
the same positions in every group, channels no layer computes stay, and costs rank per MAC."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgecut.server.cut.cost import Costs
from edgecut.server.cut.importance import ScoreInputs, score
from edgecut.server.cut.objective import Objective
from edgecut.server.cut.prune import ChannelPruner
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.tasks import TaskSpec

SIZE = 16
SEG = TaskSpec("seg", "segmentation", 3, ("a", "b", "c"))


class Head(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.out = nn.Conv2d(cin, 3, 1)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.out(feats[0])


class Model(MultiTaskModel):
    def __init__(self, trunk: nn.Module, width: int) -> None:
        super().__init__([SEG], SIZE)
        self.trunk = trunk
        self.heads = nn.ModuleDict({"seg": Head(width)})

    def config(self) -> dict[str, Any]:
        return {}


class CatDepthwise(nn.Module):
    """Two producers of different widths, concatenated, then a depthwise conv over both (issue 16's crash)."""

    def __init__(self, with_input: bool = False) -> None:
        super().__init__()
        self.with_input = with_input
        self.a = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.b = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        extra = 3 if with_input else 0
        self.dw = nn.Conv2d(24 + extra, 24 + extra, 3, padding=1, groups=24 + extra, bias=False)
        self.pw = nn.Conv2d(24 + extra, 16, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.relu(self.a(x)), torch.relu(self.b(x))] + ([x] if self.with_input else [])
        return torch.relu(self.pw(torch.relu(self.dw(torch.cat(parts, 1)))))


class GroupedTrunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.g(torch.relu(self.a(x))))


def _l1(model: MultiTaskModel) -> Any:
    return score("l1", ScoreInputs(model, [], Objective(model.task_specs, "labels")))


def _x() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def test_each_concat_input_keeps_its_own_floor_when_one_scores_lowest() -> None:
    torch.manual_seed(0)
    model = Model(CatDepthwise(), 16).eval()
    with torch.no_grad():
        model.trunk.a.weight.mul_(1e-3)  # every channel of `a` ranks below every channel of `b`
    pruner = ChannelPruner(model)
    while pruner.remove(_l1(model), "mean", n=10**6):
        pass
    # a starts at 16 (step 16, so it stays whole), b at 8 (step 2, floor 2): neither is emptied
    assert (model.trunk.a.out_channels, model.trunk.b.out_channels) == (16, 2)
    assert model.trunk.dw.in_channels == model.trunk.dw.groups == 18
    assert model(_x())["seg"].shape == (2, 3, SIZE, SIZE)


def test_a_concat_with_the_network_input_is_left_whole_and_the_rest_still_prunes() -> None:
    """torch-pruning maps such a group's indices past its layers' widths: it is pinned, never half-pruned."""
    torch.manual_seed(0)
    model = Model(CatDepthwise(with_input=True), 16).eval()
    pruner = ChannelPruner(model, round_to=1, min_fraction=0.0)
    while pruner.remove(_l1(model), "mean", n=10**6):
        pass
    trunk = model.trunk
    assert (trunk.a.out_channels, trunk.b.out_channels, trunk.dw.in_channels) == (16, 8, 27)
    assert trunk.pw.out_channels == 1  # the group after it was free to go to its floor
    assert model(_x())["seg"].shape == (2, 3, SIZE, SIZE)


def test_a_grouped_conv_loses_the_same_positions_in_every_group_and_computes_the_same() -> None:
    torch.manual_seed(0)
    model = Model(GroupedTrunk(), 16).eval()
    original = copy.deepcopy(model)
    removed = ChannelPruner(model, round_to=1, min_fraction=0.0).remove(_l1(model), "mean", n=5)
    a, g = model.trunk.a, model.trunk.g
    assert removed == 8 and a.out_channels == g.in_channels == 8 and g.groups == 4  # two positions x 4 groups
    kept = [int((original.trunk.a.weight - w).abs().flatten(1).sum(1).argmin()) for w in a.weight]
    positions = {c % 4 for c in kept}
    assert sorted(kept) == sorted(p + 4 * k for p in positions for k in range(4))
    # removing a channel = zeroing it (ReLU(0) = 0, no bias): the grouped conv read the right slices
    zeroed = copy.deepcopy(original)
    with torch.no_grad():
        for c in set(range(16)) - set(kept):
            zeroed.trunk.a.weight[c] = 0
    torch.testing.assert_close(model(_x())["seg"], zeroed(_x())["seg"], rtol=1e-5, atol=1e-6)


def test_ranking_per_mac_removes_expensive_channels_first_at_equal_importance() -> None:
    class TwoScales(nn.Module):
        """`hi` runs at full resolution, `lo` at a quarter: a channel of `hi` costs 16x the MACs."""

        def __init__(self) -> None:
            super().__init__()
            self.hi = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.lo = nn.Conv2d(3, 16, 3, stride=4, padding=1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            lo = nn.functional.interpolate(torch.relu(self.lo(x)), size=x.shape[-2:])
            return torch.cat([torch.relu(self.hi(x)), lo], 1)

    torch.manual_seed(0)
    model = Model(TwoScales(), 32).eval()
    costs = Costs(model, SIZE)
    assert costs.channel(model.trunk.hi, True, "macs") == SIZE * SIZE * 3 * 9
    assert costs.channel(model.trunk.lo, True, "macs") == (SIZE // 4) ** 2 * 3 * 9
    assert costs.channel(model.trunk.hi, True, "params") == 27
    flat = {t: {m: torch.ones_like(s) for m, s in per.items()} for t, per in _l1(model).items()}
    per_mac = ChannelPruner(model, cost="macs").ranked_units(flat, "mean", None)
    plain = ChannelPruner(model).ranked_units(flat, "mean", None)
    groups = ChannelPruner(model).groups()
    assert len(groups) == 2 and plain[0][0] == plain[-1][0]  # equal importance: a tie
    # per MAC, the 16 channels of `hi` (16x the cost) all rank below the 16 of `lo`
    hi_group = next(gi for gi, g in enumerate(groups) if g[0].dep.target.module is model.trunk.hi)
    assert [gi for _, gi, _ in per_mac[:16]] == [hi_group] * 16
