"""Fuse the selected tasks' channel scores into one score per channel (higher = keep longer).

Input: a T x N matrix of per-task scores over N channels (each task normalised to sum 1 over all
channels, so a task with a larger loss scale does not dominate) and per-task weights (user
priority). Output: N fused scores; the pruner removes the lowest first, so every rule is expressed
as a ranking:

- vote (CUT): keep a channel if at least v of the tasks keep it in their own top-k. At a keep
  ratio rho, "task t keeps c" <=> rank percentile r_t(c) > 1 - rho, so "at least v tasks keep c"
  <=> the v-th largest r_t(c) > 1 - rho: the v-th largest percentile is the fused score, and
  ranking by it reproduces the vote at every ratio. v = min(2, T): for one task the vote would
  otherwise remove the whole trunk (the guard the CUT paper's code needs). Unequal weights (user
  priorities, or the engine's rebalancing of a task left behind) blend each task's own percentile
  into the vote in proportion to how far its weight exceeds the smallest one, so a favoured task
  keeps channels the others would vote away; equal weights give the plain vote.
- union (DiSparse's "unanimous" pruning: prune only if every task prunes) = max of percentiles.
- intersection (keep only what every task keeps) = min of percentiles.
- mean / max: of the weighted normalised scores.
- weighted: mean with user priorities (the same as mean when all weights are 1).
Channels that only one task uses (its own head) are ranked by that task alone, whatever the rule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

FusionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FUSIONS: dict[str, FusionFn] = {}


def fusion(name: str) -> Callable[[FusionFn], FusionFn]:
    """Decorator: add a fusion rule, `fn(scores T x N, task weights T) -> one score per channel N`, to
    `FUSIONS` under `name` (then `TailorOptions(fusion=name)` uses it)."""

    def deco(fn: FusionFn) -> FusionFn:
        FUSIONS[name] = fn
        return fn

    return deco


def normalise(scores: torch.Tensor) -> torch.Tensor:
    """Each row divided by its sum (rows of zeros stay zero)."""
    return scores / scores.sum(1, keepdim=True).clamp_min(1e-30)


def percentiles(scores: torch.Tensor) -> torch.Tensor:
    """Per row, each entry's rank as a fraction in (0, 1]; ties broken by position, stable."""
    t, n = scores.shape
    order = scores.argsort(dim=1, stable=True)
    ranks = torch.empty_like(scores)
    ranks.scatter_(1, order, torch.arange(1, n + 1, dtype=scores.dtype).expand(t, n).contiguous())
    return ranks / n


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    return values.topk(min(k, values.shape[0]), dim=0).values[-1]


def vote_threshold(n_tasks: int, v: int = 2) -> int:
    return max(1, min(v, n_tasks))


@fusion("vote")
def vote(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    ranks = percentiles(scores)
    voted = kth_largest(ranks, vote_threshold(scores.shape[0]))
    extra = (weights / weights.min().clamp_min(1e-12) - 1).clamp_min(0)  # 0 for the least-weighted
    if float(extra.sum()) == 0.0:
        return voted
    return (voted + (extra[:, None] * ranks).sum(0)) / (1 + extra.sum())


@fusion("union")
def union(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return percentiles(scores).max(0).values


@fusion("intersection")
def intersection(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return percentiles(scores).min(0).values


@fusion("mean")
def mean(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (normalise(scores) * weights[:, None]).sum(0) / weights.sum()


@fusion("max")
def maximum(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (normalise(scores) * weights[:, None]).max(0).values


def fuse(
    rule: str,
    scores: torch.Tensor,
    weights: torch.Tensor | None = None,
    owner: list[int | None] | None = None,
) -> torch.Tensor:
    """Fused score per channel. `owner[c]` = row index of the only task using channel c, or None.

    Owned channels are scored by their task's own rank (or normalised score, for score rules) on
    the same scale as the fused shared channels.
    """
    if rule not in FUSIONS:
        raise KeyError(f"unknown fusion {rule!r}: choose one of {', '.join(sorted(FUSIONS))}")
    if scores.dim() != 2 or scores.shape[0] == 0:
        raise ValueError("scores must be a non-empty T x N matrix")
    w = torch.ones(scores.shape[0]) if weights is None else weights.float()
    fused = FUSIONS[rule](scores.float(), w)
    if owner is not None and any(o is not None for o in owner):
        own = (
            percentiles(scores.float())
            if rule in ("vote", "union", "intersection")
            else normalise(scores.float()) * w[:, None]
        )
        for c, o in enumerate(owner):
            if o is not None:
                fused[c] = own[o, c]
    return fused
