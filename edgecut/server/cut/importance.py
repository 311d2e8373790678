"""Per-task importance of every output channel of every Conv2d / Linear / BatchNorm2d layer.

A layer's channel axis comes from the layer, not from the tensor: a Linear's is its output's last axis
(a token MLP runs on N x tokens x C), a convolution's and a BatchNorm's is dim 1 (`channel_axis`).

A criterion maps (model, calibration batches, objective) to `TaskScores`: for each selected task, a
non-negative score per output channel of each scored module. Criteria are chosen by name from
`CRITERIA`. Scores are *per task* even for task-agnostic criteria (which repeat one score for every
task), so that every criterion goes through the same normalisation and fusion.

- taylor (edgecut's default; Taylor expansion on channel outputs, Molchanov et al. 2017): the
  change of task t's objective when the channel's activation is zeroed: with labels, to first
  order, sum over examples of |sum over positions of a * dL_t/da|; label-free, the second-order
  output change (see objective.py), sum over examples of the mean square of the same term taken on
  random projections of the output. BatchNorm outputs are scored where a
  conv is followed by BN (the channel that really disappears is the post-BN one).
- snip (CUT / DiSparse sensitivity): sum over batches of |w * dL_t/dw|, summed per output channel.
- disparse-pt (DiSparse's own recipe for a pre-trained model, `disparse_prune_pretrained`): per task,
  the sum over batches of |dL_t/dw|, times w^2, summed per output channel (masks.py's disparse-pt
  per weight, at channel granularity).
- garg-taylor (Garg et al.'s config, method 22 "Taylor_gate"): (g * dL/dg)^2 for a per-channel gate
  g = 1 on the output, with L = the unweighted sum of the selected tasks' losses and dL/dg the
  mini-batch gradient (summed over the batch's examples before squaring); averaged over batches.
  Task-agnostic.
- cosprune (Garg et al.'s CosPrune): per conv / linear *filter* (one output channel's weights), per
  batch, the cosine similarity of two tasks' gradients of those weights, averaged over task pairs,
  then over batches (Garg's filterwise_acc_cos_score / cosine_iterations_done); low = conflicting =
  pruned first. BatchNorm layers carry no filter and get no score. A filter only one task uses (its
  head) has no conflict and scores as full agreement. Shifted to [0, 2] so it is non-negative.
  Channels coupled across several filters (residual adds) are ranked by the mean of their filters'
  scores (see prune.GROUP_COMBINE). Task-agnostic.
- l1: the L1 norm of each output channel's weights (magnitude). Task-agnostic.
- random: seeded uniform scores. Task-agnostic.

BatchNorm while scoring (`ScoreInputs.batchnorm`): "eval" (the product's default) uses the running
statistics, so scores do not depend on which images share a batch; "train" normalises each batch by
its own statistics, as the CUT/DiSparse code (whose nets stay in train mode while scoring) and Garg's
training-time gradients do. Either way the model's stored statistics are left unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.server.cut.objective import Objective
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch

TaskScores = dict[str, dict[nn.Module, torch.Tensor]]
SCORED_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
FILTER_TYPES = (nn.Conv2d, nn.Linear)  # layers whose output channels are filters of weights
BatchNormMode = Literal["eval", "train"]


@dataclass(frozen=True)
class ScoreInputs:
    """What a criterion scores with: the model, calibration batches and the objective (per-task losses)."""

    model: MultiTaskModel
    batches: list[Batch]
    objective: Objective
    seed: int = 0
    batchnorm: BatchNormMode = "eval"


@contextmanager
def scoring_mode(model: nn.Module, batchnorm: BatchNormMode) -> Iterator[None]:
    """Gradients on, BatchNorm in the requested mode; the model's mode and buffers are restored."""
    was_training = model.training
    saved = {n: b.clone() for n, b in model.named_buffers()} if batchnorm == "train" else {}
    model.train(batchnorm == "train")
    try:
        with torch.enable_grad():
            yield
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in saved:
                    b.copy_(saved[n])
        model.train(was_training)


Criterion = Callable[[ScoreInputs], TaskScores]
CRITERIA: dict[str, Criterion] = {}
# How a channel coupled across several layers combines their scores (prune.ChannelPruner `combine`):
# sensitivities add up; CosPrune's per-filter agreement is averaged.
GROUP_COMBINE: dict[str, Literal["sum", "mean"]] = {"cosprune": "mean"}


def group_combine(criterion: str) -> Literal["sum", "mean"]:
    return GROUP_COMBINE.get(criterion, "sum")


def criterion(name: str) -> Callable[[Criterion], Criterion]:
    """Decorator: add an importance criterion, `fn(ScoreInputs) -> {task: {layer: score per channel}}`,
    to `CRITERIA` under `name` (then `TailorOptions(criterion=name)` uses it)."""

    def deco(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn

    return deco


def _weight(m: nn.Module) -> torch.Tensor:
    w = m.weight
    assert isinstance(w, torch.Tensor)  # Conv2d / Linear / affine BatchNorm2d
    return w


def scored_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, SCORED_TYPES)]


def channel_axis(m: nn.Module) -> int:
    """The axis of `m`'s output that holds its channels: a Linear (or LayerNorm) acts on the last axis
    whatever leads it (N x tokens x C), a convolution or BatchNorm on dim 1 (N x C x H x W)."""
    return -1 if isinstance(m, nn.Linear | nn.LayerNorm) else 1


def out_channels(m: nn.Module) -> int:
    """How many output channels `m` has (the length of each of its score vectors)."""
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.BatchNorm2d):
        return m.num_features
    return int(m.out_channels)  # type: ignore[arg-type]


def _channel_sum(t: torch.Tensor, m: nn.Module) -> torch.Tensor:
    """Sum over everything but the batch (dim 0) and `m`'s channel axis: N x C."""
    t = t.movedim(channel_axis(m), 1) if t.dim() > 2 else t
    return t.flatten(2).sum(2) if t.dim() > 2 else t


def _activations(
    model: MultiTaskModel, batch: Batch
) -> tuple[dict[str, torch.Tensor], dict[nn.Module, torch.Tensor]]:
    acts: dict[nn.Module, torch.Tensor] = {}
    hooks = []
    for m in scored_modules(model):

        def hook(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
            acts[mod] = out

        hooks.append(m.register_forward_hook(hook))
    try:
        outputs = model(batch["image"])
    finally:
        for h in hooks:
            h.remove()
    return outputs, acts


def _repeat(model: MultiTaskModel, scores: dict[nn.Module, torch.Tensor]) -> TaskScores:
    # A dict per task: the pruner shrinks each task's entries in place as channels go.
    return {t: dict(scores) for t in model.task_names}


@criterion("taylor")
def taylor(inp: ScoreInputs) -> TaskScores:
    model, obj = inp.model, inp.objective
    scores: TaskScores = {t: {} for t in model.task_names}
    for bi, batch in enumerate(inp.batches):
        outputs, acts = _activations(model, batch)
        mods = list(acts)
        terms = [
            (task, term) for task in model.task_names for term in obj.terms(task, outputs[task], batch, bi)
        ]
        for i, (task, term) in enumerate(terms):
            grads = torch.autograd.grad(
                term, [acts[m] for m in mods], retain_graph=i < len(terms) - 1, allow_unused=True
            )
            for m, g in zip(mods, grads, strict=True):
                if g is not None:
                    scores[task][m] = scores[task].get(m, 0) + _reduce(
                        _channel_sum(acts[m].detach() * g, m), obj
                    )
    return scores


def _reduce(per_example: torch.Tensor, obj: Objective) -> torch.Tensor:
    """N x C first-order terms -> C: magnitudes (labelled loss) or mean squares (label-free)."""
    if obj.squared:
        return per_example.pow(2).sum(0) / obj.projections
    return per_example.abs().sum(0)


@criterion("garg-taylor")
def garg_taylor(inp: ScoreInputs) -> TaskScores:
    model, obj = inp.model, inp.objective
    total: dict[nn.Module, torch.Tensor] = {}
    for bi, batch in enumerate(inp.batches):
        outputs, acts = _activations(model, batch)
        mods = list(acts)
        terms = obj.summed(outputs, batch, bi)
        for i, term in enumerate(terms):
            grads = torch.autograd.grad(
                term, [acts[m] for m in mods], retain_graph=i < len(terms) - 1, allow_unused=True
            )
            for m, g in zip(mods, grads, strict=True):
                if g is not None:  # dL/dg for a gate g = 1: the batch's sum of a * dL/da, then squared
                    gate_grad = _channel_sum(acts[m].detach() * g, m).sum(0)
                    total[m] = total.get(m, 0) + gate_grad.pow(2) / len(terms)
    n = max(1, len(inp.batches))
    return _repeat(model, {m: s / n for m, s in total.items()})


def _weight_grads(
    model: MultiTaskModel, inp: ScoreInputs, batch: Batch, bi: int, mods: list[nn.Module] | None = None
) -> dict[str, list[dict[nn.Module, torch.Tensor]]]:
    """Per task, per objective term: the gradient w.r.t. each module's weight (default: every scored one)."""
    if mods is None:
        mods = [m for m in scored_modules(model) if getattr(m, "weight", None) is not None]
    outputs = model(batch["image"])
    terms = [(t, term) for t in model.task_names for term in inp.objective.terms(t, outputs[t], batch, bi)]
    grads: dict[str, list[dict[nn.Module, torch.Tensor]]] = {t: [] for t in model.task_names}
    for i, (task, term) in enumerate(terms):
        gs = torch.autograd.grad(
            term, [_weight(m) for m in mods], retain_graph=i < len(terms) - 1, allow_unused=True
        )
        grads[task].append({m: g for m, g in zip(mods, gs, strict=True) if g is not None})
    return grads


@criterion("snip")
def snip(inp: ScoreInputs) -> TaskScores:
    scores: TaskScores = {t: {} for t in inp.model.task_names}
    for bi, batch in enumerate(inp.batches):
        for task, per_term in _weight_grads(inp.model, inp, batch, bi).items():
            for per_mod in per_term:
                for m, g in per_mod.items():
                    s = _weight(m).detach() * g
                    s = s.pow(2) / len(per_term) if inp.objective.squared else s.abs()
                    scores[task][m] = scores[task].get(m, 0) + _per_channel(s)
    return scores


@criterion("disparse-pt")
def disparse_pretrained(inp: ScoreInputs) -> TaskScores:
    grads: TaskScores = {t: {} for t in inp.model.task_names}
    for bi, batch in enumerate(inp.batches):
        for task, per_term in _weight_grads(inp.model, inp, batch, bi).items():
            for per_mod in per_term:
                for m, g in per_mod.items():
                    grads[task][m] = grads[task].get(m, 0) + g.abs()
    return {
        t: {m: _per_channel(g * _weight(m).detach().pow(2)) for m, g in per.items()}
        for t, per in grads.items()
    }


def _per_channel(s: torch.Tensor) -> torch.Tensor:
    return s.flatten(1).sum(1) if s.dim() > 1 else s


def _rows(g: torch.Tensor) -> torch.Tensor:
    """One row per output filter: its weights' gradient flattened."""
    return g.flatten(1) if g.dim() > 1 else g.unsqueeze(1)


@criterion("cosprune")
def cosprune(inp: ScoreInputs) -> TaskScores:
    model = inp.model
    tasks = model.task_names
    filters: list[nn.Module] = [m for m in scored_modules(model) if isinstance(m, FILTER_TYPES)]
    total = {m: torch.zeros(_weight(m).shape[0]) for m in filters}
    for bi, batch in enumerate(inp.batches):
        per_task: dict[str, dict[nn.Module, torch.Tensor]] = {}
        for task, per_term in _weight_grads(model, inp, batch, bi, filters).items():
            summed: dict[nn.Module, torch.Tensor] = {}
            for per_mod in per_term:
                for m, g in per_mod.items():
                    summed[m] = summed[m] + g if m in summed else g
            per_task[task] = summed
        for m in filters:
            users = [t for t in tasks if m in per_task[t]]
            if len(users) < 2:  # one task's filter (or one selected task): no conflict
                cos = torch.ones(_weight(m).shape[0])
            else:  # this batch's cosine per filter, averaged over the pairs of tasks using it
                cos = torch.stack(
                    [
                        F.cosine_similarity(_rows(per_task[a][m]), _rows(per_task[b][m]), dim=1)
                        for a, b in itertools.combinations(users, 2)
                    ]
                ).mean(0)
            total[m] += cos.detach()
    if not inp.batches:  # nothing measured: every filter ranks as fully agreeing
        return _repeat(model, {m: s + 2.0 for m, s in total.items()})
    return _repeat(model, {m: s / len(inp.batches) + 1.0 for m, s in total.items()})


@criterion("l1")
def l1(inp: ScoreInputs) -> TaskScores:
    scores = {}
    for m in scored_modules(inp.model):
        w = getattr(m, "weight", None)
        if w is not None:
            scores[m] = w.detach().abs().flatten(1).sum(1) if w.dim() > 1 else w.detach().abs()
    return _repeat(inp.model, scores)


@criterion("random")
def random_scores(inp: ScoreInputs) -> TaskScores:
    g = torch.Generator().manual_seed(inp.seed)
    scores = {}
    for m in scored_modules(inp.model):
        w = getattr(m, "weight", None)
        if w is not None:
            scores[m] = torch.rand(w.shape[0], generator=g)
    return _repeat(inp.model, scores)


def score(name: str, inp: ScoreInputs) -> TaskScores:
    if name not in CRITERIA:
        raise KeyError(f"unknown criterion {name!r}: choose one of {', '.join(sorted(CRITERIA))}")
    with scoring_mode(inp.model, inp.batchnorm):
        return CRITERIA[name](inp)


def owners(model: MultiTaskModel) -> dict[nn.Module, str | None]:
    """For each scored module, the task whose head holds it (None for the shared trunk)."""
    owner: dict[nn.Module, str | None] = {m: None for m in scored_modules(model)}
    for task, head in model.heads.items():
        for m in head.modules():
            if m in owner:
                owner[m] = task
    return owner


def detach_all(scores: TaskScores) -> TaskScores:
    return {t: {m: s.detach().float() for m, s in per.items()} for t, per in scores.items()}


def modules_with_scores(scores: TaskScores) -> Iterable[nn.Module]:
    seen: set[nn.Module] = set()
    for per in scores.values():
        for m in per:
            if m not in seen:
                seen.add(m)
                yield m
