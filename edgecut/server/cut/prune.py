"""Remove whole channels, lowest fused score first, until a MACs / params budget is met.

torch-pruning's dependency graph finds every channel group (a conv's output channels together with
the BN, the next layers' inputs, residual adds and concats that must shrink with it) and removes
them physically, so the pruned model is smaller and faster on a CPU. Heads' output layers are
never pruned (a task's output size is its contract).

Scores are computed once (per-module, per-task); as channels are removed, their entries are removed
from the stored scores too, so the same scores steer every iterative step without rescoring.

A channel of a group is one output channel of every layer coupled in it (e.g. a residual add's
inputs), so its score combines those layers' entries: summed (`combine="sum"`, a sensitivity: the
damage of removing them all), or averaged (`"mean"`, for CosPrune's agreement, a per-filter cosine
whose sum would favour channels coupled across more layers); see importance.GROUP_COMBINE.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch_pruning as tp
from torch import nn

from edgecut.server.cut.fusion import fuse
from edgecut.server.cut.importance import TaskScores, owners
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.spec import Budget

logger = logging.getLogger(__name__)

_OUT_FNS = {tp.prune_conv_out_channels, tp.prune_linear_out_channels, tp.prune_batchnorm_out_channels}


@dataclass(frozen=True)
class Size:
    macs: int
    params: int


def measure(model: nn.Module, size: int) -> Size:
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, torch.rand(1, 3, size, size))
    model.train(was_training)
    return Size(int(macs), int(params))


@dataclass(frozen=True)
class Target:
    """Absolute limits (either may be None)."""

    max_macs: int | None = None
    max_params: int | None = None

    def met(self, s: Size) -> bool:
        return (self.max_macs is None or s.macs <= self.max_macs) and (
            self.max_params is None or s.params <= self.max_params
        )

    def gap(self, s: Size) -> float:
        """How far above the target, as current/target (1.0 when met); the largest over limits."""
        ratios = [1.0]
        if self.max_macs:
            ratios.append(s.macs / self.max_macs)
        if self.max_params:
            ratios.append(s.params / self.max_params)
        return max(ratios)


class ChannelPruner:
    """Holds the dependency graph of one model and removes channel groups from it in place."""

    def __init__(
        self,
        model: MultiTaskModel,
        min_channels: int = 1,
        min_fraction: float = 0.05,
        round_to: int = 8,
        combine: Literal["sum", "mean"] = "sum",
    ) -> None:
        self.model = model
        self.combine = combine
        self.round_to = round_to
        self.size = model.input_size
        example = torch.rand(1, 3, self.size, self.size)
        model.eval()
        self.graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=example, output_transform=lambda out: list(out.values())
        )
        self.protected = model.output_layers()
        self.min_channels = min_channels
        self.min_fraction = min_fraction
        self.owner = owners(model)
        self.tasks = model.task_names
        # Each group's step is fixed by its width before pruning, so rounding stays consistent.
        self._initial = {g[0].dep.target.module: len(g[0].idxs) for g in self.groups()}

    def groups(self) -> list[tp.dependency.Group]:
        return list(
            self.graph.get_all_groups(ignored_layers=self.protected, root_module_types=(nn.Conv2d, nn.Linear))
        )

    def _group_scores(self, group: tp.dependency.Group, scores: TaskScores) -> torch.Tensor:
        """T x C: per task, the group's channel scores (BN outputs preferred over conv outputs),
        combined over the coupled layers by `self.combine`."""
        n = len(group[0].idxs)
        items = [
            (dep.target.module, idxs, group[i].root_idxs)
            for i, (dep, idxs) in enumerate(group)
            if dep.handler in _OUT_FNS
        ]
        has_bn = any(
            isinstance(m, nn.BatchNorm2d) and any(m in scores[t] for t in self.tasks) for m, _, _ in items
        )
        out = torch.zeros(len(self.tasks), n)
        count = torch.zeros(len(self.tasks), n)
        for m, idxs, root in items:
            if has_bn and not isinstance(m, nn.BatchNorm2d):
                continue
            for ti, task in enumerate(self.tasks):
                s = scores[task].get(m)
                if s is None or any(r is None for r in root):
                    continue
                out[ti].scatter_add_(0, torch.tensor(root), s[torch.tensor(idxs)].float())
                count[ti].scatter_add_(0, torch.tensor(root), torch.ones(len(idxs)))
        return out / count.clamp_min(1) if self.combine == "mean" else out

    def _group_owner(self, group: tp.dependency.Group) -> int | None:
        found = {self.owner.get(dep.target.module) for dep, _ in group if dep.target.module in self.owner}
        found.discard(None) if len(found) > 1 else None
        if len(found) == 1:
            (o,) = found
            return self.tasks.index(o) if o is not None else None
        return None

    def ranked_channels(
        self, scores: TaskScores, rule: str, weights: torch.Tensor | None
    ) -> list[tuple[float, int, int]]:
        """Every removable channel as (fused score, group index, channel index), lowest first."""
        groups = self.groups()
        mats, owner_of, where = [], [], []
        for gi, g in enumerate(groups):
            mat = self._group_scores(g, scores)
            mats.append(mat)
            o = self._group_owner(g)
            owner_of += [o] * mat.shape[1]
            where += [(gi, c) for c in range(mat.shape[1])]
        if not mats:
            return []
        fused = fuse(rule, torch.cat(mats, 1), weights, owner_of)
        order = torch.argsort(fused, stable=True).tolist()
        self._groups = groups
        return [(float(fused[k]), *where[k]) for k in order]

    def _step(self, gi: int) -> int:
        """Widths stay multiples of this: onnxruntime's CPU convolutions run 25-50 % slower on a
        channel count off a multiple of 8 (measured: 47 channels slower than 48). Layers that start
        narrower than twice the step use a finer one so small models stay prunable."""
        g = self._groups[gi]
        start = self._initial.get(g[0].dep.target.module, len(g[0].idxs))
        return self.round_to if start >= 2 * self.round_to else max(1, start // 4)

    def remove(self, scores: TaskScores, rule: str, n: int, weights: torch.Tensor | None = None) -> int:
        """Remove about `n` of the lowest-ranked channels; returns how many went.

        Every group keeps its minimum width, and its remaining width is rounded up to the group's
        step (see `_step`) to the nearest multiple; if that leaves nothing to remove, the group with the
        most candidates is rounded down instead, so each call makes progress while progress is possible.
        """
        ranked = self.ranked_channels(scores, rule, weights)
        order: dict[int, list[int]] = {}
        for _, gi, c in ranked:
            order.setdefault(gi, []).append(c)
        chosen: dict[int, list[int]] = {}
        taken = 0
        for _, gi, c in ranked:
            if taken >= n:
                break
            width = len(self._groups[gi][0].idxs)
            if width - len(chosen.get(gi, [])) > self._floor(gi):
                chosen.setdefault(gi, []).append(c)
                taken += 1
        rounded = {gi: self._round(gi, idxs, order[gi], nearest=True) for gi, idxs in chosen.items()}
        if chosen and not any(rounded.values()):
            gi = max(chosen, key=lambda g: len(chosen[g]))
            rounded[gi] = self._round(gi, chosen[gi], order[gi], nearest=False)
        removed = 0
        for gi, idxs in rounded.items():
            if not idxs:
                continue
            g = self._groups[gi]
            root = g[0].dep.target.module
            pg = self.graph.get_pruning_group(root, g[0].dep.handler, sorted(idxs))
            _drop_scores(pg, scores)
            pg.prune()
            removed += len(idxs)
        return removed

    def _floor(self, gi: int) -> int:
        """The narrowest group `gi` may become: its minimum share, rounded up to its step."""
        width = len(self._groups[gi][0].idxs)
        step = self._step(gi)
        least = max(self.min_channels, math.ceil(self.min_fraction * width))
        return min(width, max(step, math.ceil(least / step) * step))

    def _round(self, gi: int, idxs: list[int], ranking: list[int], nearest: bool) -> list[int]:
        """The channels to remove from group `gi` so the width left is a multiple of its step."""
        width = len(self._groups[gi][0].idxs)
        step = self._step(gi)
        floor = self._floor(gi)
        keep = width - len(idxs)
        keep = round(keep / step) * step if nearest else (keep // step) * step
        keep = max(floor, min(width, keep))
        return ranking[: width - keep]

    def prune_to(
        self,
        scores: TaskScores,
        rule: str,
        target: Target,
        weights: torch.Tensor | None = None,
        on_step: Callable[[Size, float], None] | None = None,
        max_steps: int = 200,
    ) -> Size:
        """Iteratively remove channels until `target` is met; raises nothing, returns the final size.

        Each step removes a share of the remaining channels sized from how far the model is above
        the target (MACs fall roughly with the square of the width), so few steps are needed and
        the last ones are small enough not to overshoot much.
        """
        start = current = measure(self.model, self.size)
        for _ in range(max_steps):
            if target.met(current):
                break
            total = sum(len(g[0].idxs) for g in self.groups())
            shrink = 1 - 1 / math.sqrt(target.gap(current))
            n = max(1, int(total * shrink * 0.5))
            if self.remove(scores, rule, n, weights) == 0:
                break
            current = measure(self.model, self.size)
            if on_step:
                on_step(current, _progress(start, current, target))
        return current


def size_target(budget: Budget, selected: Size) -> Target:
    macs = [
        v for v in (budget.max_macs, budget.macs_fraction and int(budget.macs_fraction * selected.macs)) if v
    ]
    params = [
        v
        for v in (budget.max_params, budget.params_fraction and int(budget.params_fraction * selected.params))
        if v
    ]
    return Target(max_macs=min(macs) if macs else None, max_params=min(params) if params else None)


def _progress(start: Size, now: Size, target: Target) -> float:
    goal = target.max_macs if target.max_macs is not None else target.max_params
    a, b = (start.macs, now.macs) if target.max_macs is not None else (start.params, now.params)
    if goal is None or a <= goal:
        return 1.0
    return max(0.0, min(1.0, (a - b) / (a - goal)))


def _drop_scores(group: tp.dependency.Group, scores: TaskScores) -> None:
    """Delete the entries of channels about to be removed, keeping the stored scores aligned."""
    doomed: dict[nn.Module, set[int]] = {}
    for dep, idxs in group:
        if dep.handler in _OUT_FNS:
            doomed.setdefault(dep.target.module, set()).update(int(i) for i in idxs)
    for per in {id(p): p for p in scores.values()}.values():
        for m, idxs in doomed.items():
            s = per.get(m)
            if s is not None:
                keep = torch.ones(len(s), dtype=torch.bool)
                keep[torch.tensor(sorted(idxs), dtype=torch.long)] = False
                per[m] = s[keep]


def smallest(
    model: MultiTaskModel, min_channels: int = 1, min_fraction: float = 0.05, round_to: int = 8
) -> Size:
    """The size of `model` with every prunable layer cut to its minimum width (a copy is pruned)."""
    import copy

    from edgecut.server.cut.importance import ScoreInputs, score
    from edgecut.server.cut.objective import Objective

    clone = copy.deepcopy(model).eval()
    scores = score("l1", ScoreInputs(clone, [], Objective(clone.task_specs, "labels")))
    pruner = ChannelPruner(clone, min_channels, min_fraction, round_to)
    pruner.remove(scores, "mean", n=10**9)
    return measure(clone, clone.input_size)
