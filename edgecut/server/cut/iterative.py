"""Garg et al.'s structured multi-task pruning: iterative filter removal during training, and the
same pruned architectures re-initialised and retrained from scratch for comparison.

Iterative: from the trained weights, keep training on the selected tasks' labelled losses (AdamW;
5e-5 as published, a scaled rate may be passed); every `every` iterations remove the
`remove_per_round` lowest-ranked channels of the shared trunk by a channel criterion (garg-taylor or
cosprune from importance.CRITERIA), computed on the interval's last `score_batches` training batches
with BatchNorm normalising each batch (as the training forward does; Garg computes it on every batch
of the interval). Heads are never pruned (only trunk filters are, as in the paper) and every trunk
layer keeps at least `min_channels` filters (5, as published). The optimizer is rebuilt after each
removal (the pruned layers are new tensors).

Each configuration is evaluated after its training interval, just before the next cut, as Garg's
code records it: round r = r cuts made, then `every` more iterations of training (round 0 = the
trained model after one interval, nothing removed). Every `record_every` rounds, and at the last one,
the model is evaluated and its architecture kept; the run trains (rounds + 1) * every iterations.

A "filter" in Garg's VGG is one conv's output channel. Here channels can be coupled (a residual add
makes the stem and layer1's second convs share their output channels), so the schedule removes
coupled *channels* (torch-pruning groups), each taking one output filter from every conv it couples;
`Point` records both counts.

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

from edgecut.server.cut.importance import CRITERIA, ScoreInputs, detach_all, group_combine, score
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
        """Training iterations of the whole run: an interval after each of the `rounds` cuts, and before the first."""
        return (self.rounds + 1) * self.every


@dataclass
class Point:
    """One recorded configuration: `round` cuts made, then trained for one more interval (`steps` in all)."""

    round: int
    steps: int
    channels_removed: int  # coupled channels (the unit the schedule removes)
    filters_removed: int  # conv / linear output filters those channels took
    size: Size
    metrics: Metrics
    architecture: MultiTaskModel = field(repr=False)


@dataclass
class IterativeResult:
    options: IterativeOptions
    points: list[Point]
    seconds: float


def trunk_pruner(model: MultiTaskModel, min_channels: int, criterion: str = "garg-taylor") -> ChannelPruner:
    """A ChannelPruner that removes only trunk filters (every head layer is protected), exactly k at a
    time, combining coupled layers' scores as `criterion` needs."""
    pruner = ChannelPruner(
        model, min_channels=min_channels, min_fraction=0.0, round_to=1, combine=group_combine(criterion)
    )
    heads = [m for m in model.heads.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    pruner.protected = list({id(m): m for m in [*pruner.protected, *heads]}.values())
    return pruner


def trunk_filters(model: MultiTaskModel) -> int:
    """Output filters of every conv / linear layer of the trunk."""
    return sum(int(m.weight.shape[0]) for m in model.trunk.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


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
    """Prune `model` in place while training it; returns the recorded configurations."""
    t0 = time.perf_counter()
    torch.manual_seed(opts.seed)
    pruner = trunk_pruner(model, opts.min_channels, opts.criterion)
    objective = Objective(model.task_specs, "labels", seed=opts.seed)
    stream = _endless(train_data, opts.batch_size, opts.seed)
    filters0 = trunk_filters(model)
    points: list[Point] = []
    channels = 0
    for rnd in range(opts.rounds + 1):
        recent = _train_interval(model, stream, opts)
        if rnd % opts.record_every == 0 or rnd == opts.rounds:
            steps = (rnd + 1) * opts.every
            points.append(_record(model, val_data, rnd, steps, channels, filters0 - trunk_filters(model)))
        if rnd == opts.rounds:
            break
        inp = ScoreInputs(model, recent, objective, opts.seed + rnd, batchnorm="train")
        channels += pruner.remove(detach_all(score(opts.criterion, inp)), "mean", opts.remove_per_round)
        if on_round is not None:
            on_round(rnd + 1, measure(model, model.input_size))
    model.eval()
    return IterativeResult(opts, points, time.perf_counter() - t0)


def _train_interval(model: MultiTaskModel, stream: Iterator[Batch], opts: IterativeOptions) -> list[Batch]:
    """`opts.every` iterations on the labelled losses; returns the last `score_batches` batches."""
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    model.train()
    recent: list[Batch] = []
    for _ in range(opts.every):
        batch = next(stream)
        loss, _ = total_loss(model.task_specs, model(batch["image"]), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent = [*recent, batch][-opts.score_batches :]
    return recent


def _record(
    model: MultiTaskModel, val: Dataset[Batch], rnd: int, steps: int, channels: int, filters: int
) -> Point:
    return Point(
        rnd,
        steps,
        channels,
        filters,
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
