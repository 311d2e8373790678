"""Remove whole channels, lowest fused score first, until a MACs / params budget is met.

torch-pruning's dependency graph finds every channel group (a conv's output channels together with
the BN, the next layers' inputs, residual adds and concats that must shrink with it) and removes
them physically, so the pruned model is smaller and faster on a CPU. Heads' output layers are
never pruned (a task's output size is its contract). groups.py says what may leave each group and in
which bundles (each concat input keeps its own floor, grouped convs stay divisible); with `cost`,
channels are ranked by importance per unit of the MACs or parameters they cost (cost.py).

The dependency graph also follows trunk outputs that no kept head reads (when decomposition could not
cut them off), so those layers shrink consistently with the rest instead of breaking the forward pass.

Scores are computed once (per-module, per-task); as channels are removed, their entries are removed
from the stored scores too, so the same scores steer every iterative step without rescoring.

A channel of a group is one output channel of every layer coupled in it (e.g. a residual add's
inputs), so its score combines those layers' entries: summed (`combine="sum"`, a sensitivity: the
damage of removing them all), or averaged (`"mean"`, for CosPrune's agreement, a per-filter cosine
whose sum would favour channels coupled across more layers); see importance.GROUP_COMBINE.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch_pruning as tp
from torch import nn

from edgecut.server.cut.attention import head_dims, rescale_queries
from edgecut.server.cut.cost import CostKind, Costs, layer_costs
from edgecut.server.cut.fusion import fuse
from edgecut.server.cut.groups import PRODUCERS, ROUND_TO, Layout, Rules, atom_counts, layout
from edgecut.server.cut.importance import TaskScores, owners
from edgecut.server.cut.shares import TaskShares
from edgecut.server.errors import ImpossibleBudgetError
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.spec import Budget

logger = logging.getLogger(__name__)

_OUT_FNS = {tp.prune_conv_out_channels, tp.prune_linear_out_channels, tp.prune_batchnorm_out_channels}


@dataclass(frozen=True)
class Size:
    """A model's cost for one image: multiply-accumulates and parameters."""

    macs: int
    params: int


def measure(model: nn.Module, size: int) -> Size:
    """The MACs and parameters of `model` on one `size` x `size` image (torch-pruning's counter)."""
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
        round_to: int = ROUND_TO,
        cost: CostKind | None = None,
        cost_power: float = 1.0,
        combine: Literal["sum", "mean"] = "sum",
        task_floor: float = 0.0,
    ) -> None:
        self.model = model
        self.shares = TaskShares(task_floor)
        self.combine = combine
        self.round_to = round_to
        self.size = model.input_size
        self.rules = Rules(min_channels, min_fraction, round_to)
        model.eval()
        self.graph = _dependency_graph(model)
        # parameters used outside a layer (F.linear / einsum on an nn.Parameter): torch-pruning
        # guesses one axis for them and cannot follow what they compute
        unwrapped = [u.parameters for u in self.graph.unwrapped_parameters]
        self.unwrapped = [n for n, p in model.named_parameters() if any(p is u for u in unwrapped)]
        self.protected = model.output_layers()
        self.owner = owners(model)
        self.tasks = model.task_names
        # Floors and rounding steps come from each producer's width before any pruning.
        self._initial: dict[nn.Module, int] = {
            m: _out_width(m) for m in model.modules() if isinstance(m, PRODUCERS)
        }
        self.costs = Costs(model, self.size) if cost is not None else None
        self.cost_kind: CostKind = cost or "macs"
        self.cost_power = cost_power
        self._groups: list[tp.dependency.Group] = []
        self._layouts: list[Layout] = []
        self._unit_mass: dict[tuple[int, int], torch.Tensor] = {}  # per task, the importance a unit holds
        self._mass = torch.zeros(len(self.tasks))  # per task, the importance still in the model
        self._spare: torch.Tensor | None = None  # per task, the importance a removal step may still take

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

    def ranked_units(
        self, scores: TaskScores, rule: str, weights: torch.Tensor | None
    ) -> list[tuple[float, int, int]]:
        """Every removable unit as (fused score, group index, unit index), lowest first.

        Channels are fused one by one (per task, divided by their cost when ranking by cost); a unit
        of several channels (a grouped conv's siblings) scores their mean.
        """
        self._groups = self.groups()
        self._layouts = [layout(g, self.graph, self._initial, self.rules) for g in self._groups]
        mats, owner_of, where = [], [], []
        self._unit_mass, self._mass = {}, torch.zeros(len(self.tasks))
        for gi, (g, lay) in enumerate(zip(self._groups, self._layouts, strict=True)):
            keep = lay.removable()
            if not keep:
                continue
            mat = self._group_scores(g, scores)
            self._mass += mat[:, keep].sum(1)  # the importance that could still leave
            if self.shares.floor > 0:
                for ui, unit in enumerate(lay.units):
                    self._unit_mass[(gi, ui)] = mat[:, unit].sum(1)
            if self.costs is not None:
                cost = self.costs.of_group(g, self.graph, self.cost_kind).float().clamp_min(1.0)
                mat = mat / cost.pow(self.cost_power)
            mats.append(mat[:, keep])
            owner_of += [self._group_owner(g)] * len(keep)
            where += [(gi, r) for r in keep]
        if not mats:
            return []
        fused = fuse(rule, torch.cat(mats, 1), weights, owner_of).tolist()
        channel = dict(zip(where, fused, strict=True))
        ranked = [
            (sum(channel[(gi, r)] for r in unit) / len(unit), gi, ui)
            for gi, lay in enumerate(self._layouts)
            for ui, unit in enumerate(lay.units)
        ]
        return sorted(ranked, key=lambda t: t[0])  # stable: ties keep the graph's order

    def remove(self, scores: TaskScores, rule: str, n: int, weights: torch.Tensor | None = None) -> int:
        """Remove about `n` of the lowest-ranked channels; returns how many went.

        A unit goes only if every atom it touches (see groups.py) stays at or above its floor; each
        touched atom's remaining width is then rounded to the nearest multiple of its step; if that
        leaves nothing to remove, the group with the most candidates is rounded down instead, so
        each call makes progress while progress is possible.
        """
        ranked = self.ranked_units(scores, rule, weights)
        order: dict[int, list[int]] = {}
        for _, gi, ui in ranked:
            order.setdefault(gi, []).append(ui)
        kept = {gi: list(lay.atom_width) for gi, lay in enumerate(self._layouts)}
        self._spare = self.shares.spare(self._mass)
        chosen: dict[int, list[int]] = {}
        taken = 0
        for _, gi, ui in ranked:
            if taken >= n:
                break
            lay = self._layouts[gi]
            need = atom_counts(lay, lay.units[ui])
            if all(kept[gi][a] - c >= lay.atom_floor[a] for a, c in need.items()) and self._take(gi, ui):
                for a, c in need.items():
                    kept[gi][a] -= c
                chosen.setdefault(gi, []).append(ui)
                taken += len(lay.units[ui])
        final = {gi: self._rounded(gi, uis, order[gi], nearest=True) for gi, uis in chosen.items()}
        if chosen and not any(final.values()):
            gi = max(chosen, key=lambda g: sum(len(self._layouts[g].units[u]) for u in chosen[g]))
            final[gi] = self._rounded(gi, chosen[gi], order[gi], nearest=False)
        removed = 0
        for gi, uis in final.items():
            roots = sorted(r for ui in uis for r in self._layouts[gi].units[ui])
            if not roots:
                continue
            g = self._groups[gi]
            pg = self.graph.get_pruning_group(g[0].dep.target.module, g[0].dep.handler, roots)
            _drop_scores(pg, scores)
            heads = head_dims([dep.target.module for dep, _ in pg])
            pg.prune()
            rescale_queries(heads)
            removed += len(roots)
        return removed

    def _rounded(self, gi: int, chosen: list[int], ranking: list[int], nearest: bool) -> list[int]:
        """`chosen` adjusted so each atom it touches keeps a multiple of its step (floors respected)."""
        lay = self._layouts[gi]
        picked = list(chosen)
        gone = atom_counts(lay, [r for ui in picked for r in lay.units[ui]])
        for a, n_gone in gone.items():
            width, step, floor = lay.atom_width[a], lay.atom_step[a], lay.atom_floor[a]
            keep = width - n_gone
            goal = round(keep / step) * step if nearest else (keep // step) * step
            goal = max(floor, min(width, goal))
            inside = [ui for ui in ranking if all(lay.atom_of[r] == a for r in lay.units[ui])]
            if goal < keep:
                for ui in inside:
                    size = len(lay.units[ui])
                    if ui not in picked and keep - size >= goal and self._take(gi, ui):
                        picked.append(ui)
                        keep -= size
            elif goal > keep:
                for ui in reversed(inside):
                    size = len(lay.units[ui])
                    if ui in picked and keep + size <= goal:
                        picked.remove(ui)
                        self._give_back(gi, ui)
                        keep += size
        return picked

    def _take(self, gi: int, ui: int) -> bool:
        """Whether unit `ui` of group `gi` may go without a task falling below its floor (shares.py);
        if so, its importance is booked as gone."""
        if self._spare is None:
            return True
        mass = self._unit_mass[(gi, ui)]
        if bool((mass > self._spare).any()):
            self.shares.refused += 1
            return False
        self._spare = self._spare - mass
        return True

    def _give_back(self, gi: int, ui: int) -> None:
        if self._spare is not None:
            self._spare = self._spare + self._unit_mass[(gi, ui)]

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
                if self.shares.relax(self.tasks, self._mass):
                    continue
                break
            current = measure(self.model, self.size)
            if on_step:
                on_step(current, _progress(start, current, target))
        return current


def _dependency_graph(model: MultiTaskModel) -> tp.DependencyGraph:
    """The graph of every path from the input to the heads' outputs *and* to every trunk output.

    A trunk output that no kept head reads still runs in the forward pass; traced too, its layers
    shrink with the layers they read instead of being left with stale input widths.
    """
    feats: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: object, out: object) -> None:
        feats.extend(
            t for t in (out if isinstance(out, tuple | list) else (out,)) if isinstance(t, torch.Tensor)
        )

    hook = model.trunk.register_forward_hook(keep)
    try:
        return tp.DependencyGraph().build_dependency(
            model,
            example_inputs=torch.rand(1, 3, model.input_size, model.input_size),
            output_transform=lambda out: [*out.values(), *(f for f in feats if f.grad_fn is not None)],
        )
    finally:
        hook.remove()


def _out_width(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else int(m.out_channels)  # type: ignore[arg-type]


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


def floor_model(
    model: MultiTaskModel, min_channels: int = 1, min_fraction: float = 0.05, round_to: int = ROUND_TO
) -> MultiTaskModel:
    """A copy of `model` with every prunable layer cut to its minimum width."""
    from edgecut.server.cut.importance import ScoreInputs, score
    from edgecut.server.cut.objective import Objective

    clone = copy.deepcopy(model).eval()
    scores = score("l1", ScoreInputs(clone, [], Objective(clone.task_specs, "labels")))
    pruner = ChannelPruner(clone, min_channels, min_fraction, round_to)
    for _ in range(4):  # one pass reaches every floor; more only if rounding held something back
        if pruner.remove(scores, "mean", n=10**9) == 0:
            break
    return clone


def smallest(
    model: MultiTaskModel, min_channels: int = 1, min_fraction: float = 0.05, round_to: int = ROUND_TO
) -> Size:
    """The size of `model` with every prunable layer cut to its minimum width (a copy is pruned)."""
    floor = floor_model(model, min_channels, min_fraction, round_to)
    return measure(floor, floor.input_size)


def impossible(budget: str, selected: Size, floor: MultiTaskModel, target: Target) -> ImpossibleBudgetError:
    """The error for a budget below `floor` (the model at its smallest): how small it gets, the layer
    that holds the most of what is left and why that layer cannot shrink, and what to ask for."""
    least = measure(floor, floor.input_size)
    by_macs = target.max_macs is not None and least.macs > target.max_macs
    name, macs, params = max(layer_costs(floor, floor.input_size), key=lambda r: r[1] if by_macs else r[2])
    layer = dict(floor.named_modules())[name]
    task = next((t for t, head in floor.heads.items() if layer in set(head.modules())), None)
    if layer in floor.output_layers():
        why = f"the output layer of task {task!r}, which keeps its size"
    elif isinstance(layer, nn.Conv2d | nn.Linear):
        why = f"at its smallest width ({_out_width(layer)} channels)"
    else:
        why = "not prunable"
    if by_macs:
        ask = f"macs={math.ceil(100 * least.macs / selected.macs) / 100:g} (max_macs={least.macs:.3g})"
    else:
        ask = f"params={math.ceil(100 * least.params / selected.params) / 100:g} (max_params={least.params:.3g})"
    return ImpossibleBudgetError(
        f"budget {budget} cannot be met for tasks {', '.join(floor.task_names)}: the smallest model keeps "
        f"{least.macs / 1e6:.3f} MMACs ({least.macs / selected.macs:.2%} of {selected.macs / 1e6:.3f}) and "
        f"{least.params / 1e3:.1f}k params ({least.params / selected.params:.2%}); its largest layer, {name} "
        f"({macs / 1e6:.3f} MMACs, {params / 1e3:.1f}k params), is {why}; ask for at least {ask}"
    )
