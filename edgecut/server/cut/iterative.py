"""Garg et al.'s structured multi-task pruning: iterative filter removal during training, and the
same pruned architectures re-initialised and retrained from scratch for comparison.

Iterative: from the trained weights, keep training on the selected tasks' labelled losses (AdamW;
5e-5 as published, a scaled rate may be passed) and every `every` iterations remove the
`remove_per_round` lowest-ranked filters of the shared trunk by a channel criterion (garg-taylor or
cosprune from importance.CRITERIA), recomputed on the most recent training batches. Heads are never
pruned (only trunk filters are, as in the paper) and every trunk layer keeps at least
`min_channels` filters (5, as published). The optimizer is rebuilt after each removal (the pruned
layers are new tensors). Every `record_every` rounds the model is evaluated and its architecture kept.

Retrain: `retrain()` re-initialises a kept architecture and trains it from scratch
(RecoveryOptions(reinit=True)) for a given number of steps on the same data and losses.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from edgecut.server.cut.importance import CRITERIA, ScoreInputs, detach_all, score
from edgecut.server.cut.objective import Objective
from edgecut.server.cut.prune import ChannelPruner, Size, measure
from edgecut.server.cut.recover import RecoveryOptions, recover
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, batches
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.mtl.losses import total_loss

logger = logging.getLogger(__name__)

PUBLISHED_LR = 5e-5
GARG_MIN_FILTERS = 5


@dataclass(frozen=True)
class IterativeOptions:
    criterion: str = "garg-taylor"
    rounds: int = 16
    remove_per_round: int = 24
    every: int = 25  # training iterations between removals
    record_every: int = 4  # evaluate and keep the architecture every this many rounds
    lr: float = PUBLISHED_LR
    weight_decay: float = 1e-4
    batch_size: int = 16
    score_batches: int = 2  # the most recent training batches the criterion is computed on
    min_channels: int = GARG_MIN_FILTERS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(
                f"unknown criterion {self.criterion!r}: choose one of {', '.join(sorted(CRITERIA))}"
            )
        if min(self.rounds, self.remove_per_round, self.every, self.record_every, self.score_batches) < 1:
            raise ValueError("rounds, remove_per_round, every, record_every and score_batches must be >= 1")

    @property
    def steps(self) -> int:
        return self.rounds * self.every


@dataclass
class Point:
    """One recorded checkpoint of an iterative run (round 0 = before any removal)."""

    round: int
    steps: int
    filters_removed: int
    size: Size
    metrics: Metrics
    architecture: MultiTaskModel = field(repr=False)


@dataclass
class IterativeResult:
    options: IterativeOptions
    points: list[Point]
    seconds: float


def trunk_pruner(model: MultiTaskModel, min_channels: int) -> ChannelPruner:
    """A ChannelPruner that removes only trunk filters: every head layer is protected."""
    pruner = ChannelPruner(
        model, min_channels=min_channels, min_fraction=0.0, round_to=1
    )  # exactly k filters
    heads = [m for m in model.heads.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    pruner.protected = list({id(m): m for m in [*pruner.protected, *heads]}.values())
    return pruner


def _endless(data: Dataset[Batch], batch_size: int, seed: int) -> Iterator[Batch]:
    for epoch in itertools.count():
        yield from batches(data, batch_size, shuffle=True, seed=seed + epoch)


def iterative_prune(
    model: MultiTaskModel,
    train_data: Dataset[Batch],
    val_data: Dataset[Batch],
    opts: IterativeOptions,
    on_round: Callable[[int, Size], None] | None = None,
) -> IterativeResult:
    """Prune `model` in place while training it; returns the recorded checkpoints."""
    t0 = time.perf_counter()
    torch.manual_seed(opts.seed)
    specs = model.task_specs
    pruner = trunk_pruner(model, opts.min_channels)
    objective = Objective(specs, "labels", seed=opts.seed)
    stream = _endless(train_data, opts.batch_size, opts.seed)
    points = [_record(model, val_data, 0, 0, 0)]
    removed = 0
    for rnd in range(1, opts.rounds + 1):
        opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        model.train()
        recent: list[Batch] = []
        for _ in range(opts.every):
            batch = next(stream)
            loss, _ = total_loss(specs, model(batch["image"]), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            recent = [*recent, batch][-opts.score_batches :]
        scores = detach_all(score(opts.criterion, ScoreInputs(model, recent, objective, opts.seed + rnd)))
        removed += pruner.remove(scores, "mean", opts.remove_per_round)
        size = measure(model, model.input_size)
        if on_round is not None:
            on_round(rnd, size)
        if rnd % opts.record_every == 0 or rnd == opts.rounds:
            points.append(_record(model, val_data, rnd, rnd * opts.every, removed))
    model.eval()
    return IterativeResult(opts, points, time.perf_counter() - t0)


def _record(model: MultiTaskModel, val: Dataset[Batch], rnd: int, steps: int, removed: int) -> Point:
    return Point(
        rnd,
        steps,
        removed,
        measure(model, model.input_size),
        evaluate(model, model.task_specs, val),
        copy.deepcopy(model).eval(),
    )


def retrain(
    architecture: MultiTaskModel,
    train_data: Dataset[Batch],
    val_data: Dataset[Batch],
    steps: int,
    lr: float,
    batch_size: int = 16,
    seed: int = 0,
) -> tuple[MultiTaskModel, Metrics]:
    """Re-initialise a copy of `architecture`, train it from scratch for `steps`, evaluate it."""
    model = copy.deepcopy(architecture)
    opts = RecoveryOptions(
        steps=steps,
        lr=lr,
        weight_decay=1e-4,
        batch_size=batch_size,
        target="labels",
        optimizer="adamw",
        schedule="cosine",
        reinit=True,
        seed=seed,
    )
    recover(model, None, train_data, opts)
    return model, evaluate(model, model.task_specs, val_data)
