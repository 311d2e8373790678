"""What may leave a channel group, and in which bundles: the rules that keep any architecture valid.

torch-pruning's dependency graph gives, for each channel group, every layer whose channels must shrink
together, each with its own channel indices and the group's "root" indices. A group can join several
*producers* (the layers that compute channels: Conv2d, ConvTranspose2d, Linear), e.g. the two inputs
of a concatenation that a depthwise conv then reads, or the branches of a residual add. From it this
module derives a `Layout`:

- atoms: the root channels grouped by which producers compute them (one atom per concat input, one
  for all branches of an add). Each atom keeps its own floor and rounding step, so no producer is ever
  emptied and each concat input keeps its own minimum width (a floor on the whole group let one input
  of a concat lose every channel).
- units: channels that must leave together. A grouped conv (1 < groups, not depthwise) or a GroupNorm
  stays valid only if every group loses the same positions, so position p of each group is one unit;
  if the group does not hold all those siblings, they are pinned.
  Multi-head attention is grouped the same way by heads (attention.py).
- pinned channels, never removed: those no producer computes (e.g. a concatenated network input), and
  grouped-conv siblings outside the group. A group whose indices do not fit its own layers (torch-
  pruning loses track of a concat that includes the network input) is pinned whole, and so is one
  holding an attention layer torch-pruning cannot shrink consistently.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch_pruning as tp
from torch import nn

from edgecut.server.cut.attention import prunable

PRODUCERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
# Layer widths stay multiples of 16: on this project's x86 CPU (onnxruntime 1.32) static INT8 ran 8 and 12
# channels slower than 16, and fp32's blocked layout moves in steps of 16 (20 channels cost about 3x 16).
# Measured by `edgecut bench widths` (docs/benchmarks.md, "Layer widths"); run it on a device to see its steps.
ROUND_TO = 16


@dataclass(frozen=True)
class Rules:
    """The narrowest a producer may become, from its width before any pruning (`initial`)."""

    min_channels: int = 1
    min_fraction: float = 0.05
    round_to: int = ROUND_TO

    def step(self, initial: int) -> int:
        """Widths stay multiples of this (see ROUND_TO). A layer narrower than the step uses a finer one
        (a quarter of its width) so small models stay prunable."""
        return self.round_to if initial >= self.round_to else max(1, initial // 4)

    def floor(self, initial: int, now: int) -> int:
        step = self.step(initial)
        least = max(self.min_channels, math.ceil(self.min_fraction * initial))
        return min(now, max(step, math.ceil(least / step) * step))


@dataclass
class Layout:
    width: int  # root channels of the group
    units: list[list[int]]  # removable bundles of root channels, each removed whole
    atom_of: dict[int, int]  # root channel -> its atom (only removable channels)
    atom_width: list[int]
    atom_floor: list[int]
    atom_step: list[int]
    producers: list[nn.Module] = field(default_factory=list)

    def removable(self) -> list[int]:
        return sorted(self.atom_of)


def is_source(m: object) -> bool:
    """A layer that computes its output channels (a depthwise conv only passes its input's through)."""
    if not isinstance(m, PRODUCERS):
        return False
    return not (isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.out_channels)


def _grouping(m: object, out_dim: bool) -> tuple[int, int] | None:
    """(channels, groups) of a layer whose channels must leave group-symmetrically, else None."""
    if isinstance(m, nn.GroupNorm) and m.num_groups > 1:
        return m.num_channels, m.num_groups
    if isinstance(m, nn.MultiheadAttention) and m.num_heads > 1:
        return m.embed_dim, m.num_heads  # heads are contiguous slices of the embedding (attention.py)
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and m.groups > 1:
        if m.groups == m.out_channels == m.in_channels:
            return None  # depthwise: torch-pruning shrinks its groups with its channels
        return (m.out_channels if out_dim else m.in_channels), m.groups
    return None


class _Union:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def join(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def layout(
    group: tp.dependency.Group, graph: tp.DependencyGraph, initial: dict[nn.Module, int], rules: Rules
) -> Layout:
    width = len(group[0].idxs)
    covered: dict[int, set[int]] = {}  # root channel -> producers (by index) computing it
    producers: list[nn.Module] = []
    pinned: set[int] = set()
    union = _Union()
    if not all(_fits(item, graph) for item in group) or not all(
        prunable(item.dep.target.module)
        for item in group
        if isinstance(item.dep.target.module, nn.MultiheadAttention)
    ):
        return Layout(width, [], {}, [], [], [], [])
    for item in group:
        dep, idxs, roots = item.dep, item.idxs, item.root_idxs
        m = dep.target.module
        out_dim = graph.is_out_channel_pruning_fn(dep.handler)
        pairs = [(int(i), int(r)) for i, r in zip(idxs, roots, strict=True) if r is not None]
        if out_dim and is_source(m):
            if m not in producers:
                producers.append(m)
            for _, r in pairs:
                covered.setdefault(r, set()).add(producers.index(m))
        grouping = _grouping(m, out_dim)
        if grouping is None:
            continue
        channels, groups = grouping
        per = max(1, channels // groups)
        buckets: dict[int, list[int]] = {}
        for i, r in pairs:
            buckets.setdefault(i % per, []).append(r)
        for members in buckets.values():
            if len(set(members)) < groups:
                pinned.update(members)
            for r in members[1:]:
                union.join(members[0], r)
    atoms: dict[frozenset[int], int] = {}
    atom_of: dict[int, int] = {}
    for r in range(width):
        if r in pinned or r not in covered:
            continue
        atom_of[r] = atoms.setdefault(frozenset(covered[r]), len(atoms))
    bundles: dict[int, list[int]] = {}
    for r in atom_of:
        bundles.setdefault(union.find(r), []).append(r)
    tied = {union.find(p) for p in pinned}  # a bundle tied to a pinned channel cannot leave either
    units = [sorted(members) for rep, members in bundles.items() if rep not in tied]
    for rep, members in bundles.items():
        if rep in tied:
            for r in members:
                del atom_of[r]
    atom_width = [0] * len(atoms)
    for a in atom_of.values():
        atom_width[a] += 1
    atom_floor, atom_step = [0] * len(atoms), [1] * len(atoms)
    for sig, a in atoms.items():
        mods = [producers[p] for p in sig]
        atom_floor[a] = min(
            atom_width[a], max(rules.floor(initial.get(m, _width(m)), _width(m)) for m in mods)
        )
        atom_step[a] = max(rules.step(initial.get(m, _width(m))) for m in mods)
    return Layout(width, sorted(units), atom_of, atom_width, atom_floor, atom_step, producers)


def _fits(item: tp.dependency.GroupItem, graph: tp.DependencyGraph) -> bool:
    """Whether the item's channel indices exist in its layer (a check on torch-pruning's index mapping)."""
    m = item.dep.target.module
    if not isinstance(m, nn.Module) or not item.idxs:
        return True
    try:
        size = (
            graph.get_out_channels(m)
            if graph.is_out_channel_pruning_fn(item.dep.handler)
            else graph.get_in_channels(m)
        )
    except Exception:  # a layer type torch-pruning has no pruner for
        return True
    return size is None or (len(item.idxs) <= size and max(int(i) for i in item.idxs) < size)


def _width(m: nn.Module) -> int:
    if isinstance(m, nn.Linear):
        return m.out_features
    assert isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    return m.out_channels


def atom_counts(lay: Layout, roots: list[int]) -> Counter[int]:
    return Counter(lay.atom_of[r] for r in roots)
