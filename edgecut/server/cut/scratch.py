"""From scratch: the same architecture, uniformly narrower to fit a budget, built for the selected tasks
only and trained from a random start with the reference's own recipe on labelled samples (the question
a user asks: would a small model trained for my tasks not be better?). `edgecut bench quality` uses it
as a baseline, and the engine as a candidate that replaces a tailored model where it measures better
(engine.TorchEngine, the last refinement when the server has labelled training data).

"Uniformly narrower" scales every width of the model's config (keys naming a width or growth rate,
ints or lists of ints) by one factor; depth, input size and everything else stay. With an int `groups`
in the config (grouped convolutions, GroupNorm), every width is rounded to a multiple of it. The factor is the
largest whose model fits the limits, found by bisection on MACs and parameters measured like every
other model (prune.measure).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from edgecut.server.cut.prune import Size, Target, measure
from edgecut.server.errors import ImpossibleBudgetError, ModelContractError
from edgecut.server.mtl.contract import MultiTaskModel, instantiate
from edgecut.server.mtl.data import Batch, batches
from edgecut.server.mtl.train import TrainConfig, balance_weights, recipe, train_step

WIDTH_WORDS = ("width", "growth")  # config keys holding channel counts


def _is_width(key: str) -> bool:
    return any(w in key for w in WIDTH_WORDS)


def narrowable(base: MultiTaskModel) -> bool:
    """Whether the model's config names a width that narrowing can scale."""
    return any(_is_width(k) for k in base.config())


def scaled_config(config: dict[str, Any], scale: float) -> dict[str, Any]:
    """`config` with every width (int or list of ints under a width key) times `scale`, at least 1, and a
    multiple of the config's int `groups` when it has one."""
    groups = config.get("groups")
    step = groups if isinstance(groups, int) and not isinstance(groups, bool) and groups > 1 else 1

    def one(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int):
            return v
        return step * max(1, round(v * scale / step))

    out = {}
    for key, value in config.items():
        if _is_width(key):
            value = [one(v) for v in value] if isinstance(value, list | tuple) else one(value)
        out[key] = value
    return out


def build_narrow(base: MultiTaskModel, tasks: Sequence[str], scale: float) -> MultiTaskModel:
    """A fresh (randomly initialised) `type(base)` for `tasks`, every width times `scale`."""
    specs = [base.task_specs[t] for t in tasks]
    if not narrowable(base):
        raise ModelContractError(
            f"{type(base).__name__}.config() names no width ({', '.join(WIDTH_WORDS)}): "
            "no narrower version of it can be built"
        )
    config = scaled_config(base.config(), scale)
    config["input_size"] = base.input_size
    return instantiate(type(base), base.arch or type(base).__name__, tasks=specs, **config)


@dataclass
class Narrow:
    model: MultiTaskModel
    scale: float
    size: Size


def narrow_to(
    base: MultiTaskModel, tasks: Sequence[str], limit: Target, seed: int = 0, iterations: int = 24
) -> Narrow:
    """The widest uniformly narrower `base` for `tasks` within `limit` (MACs and/or parameters),
    initialised from `seed`."""

    def size_at(scale: float) -> Size:
        m = build_narrow(base, tasks, scale)
        return measure(m, m.input_size)

    full = size_at(1.0)
    if limit.met(full):
        torch.manual_seed(seed)
        return Narrow(build_narrow(base, tasks, 1.0), 1.0, full)
    lo, hi = 0.0, 1.0
    for _ in range(iterations):  # widths are integers: the bisection settles on the last step that fits
        mid = (lo + hi) / 2
        if limit.met(size_at(mid)):
            lo = mid
        else:
            hi = mid
    if lo == 0.0 or not limit.met(size_at(lo)):
        wanted = [
            f"{v:,} {what}" for v, what in ((limit.max_macs, "MACs"), (limit.max_params, "params")) if v
        ]
        raise ImpossibleBudgetError(
            f"no narrower {type(base).__name__} for {', '.join(tasks)} fits {' and '.join(wanted)}"
        )
    torch.manual_seed(seed)
    model = build_narrow(base, tasks, lo)
    return Narrow(model, lo, measure(model, model.input_size))


@dataclass(frozen=True)
class ScratchOptions:
    """The engine's from-scratch candidate: `recipe`'s optimiser, batch and seed for `epochs` over the
    labelled training samples, the steps cut to what fits in `seconds` on this machine (the one-cycle
    schedule then still ends annealed)."""

    epochs: float = 8.0  # the candidate's budget on a server (the first packaged reference's whole schedule)
    seconds: float = 240.0
    recipe: TrainConfig = field(default_factory=TrainConfig)
    max_slowdown: float = 1.05  # onnxruntime time against the parent's: timing noise, not a real loss

    def schedule(self, data: Dataset[Batch]) -> int:
        """The steps of `epochs` over `data`: what the candidate trains when time allows."""
        per_epoch = math.ceil(len(data) / self.recipe.batch_size)  # type: ignore[arg-type]
        return max(1, round(self.epochs * per_epoch))

    def steps(self, model: MultiTaskModel, data: Dataset[Batch]) -> int:
        return min(self.schedule(data), steps_in(model, data, self.recipe, self.seconds))


@dataclass
class ScratchRun:
    steps: int
    seconds: float
    first_loss: float
    last_loss: float


def _endless(data: Dataset[Batch], batch_size: int, seed: int) -> Iterator[Batch]:
    for epoch in itertools.count():
        yield from batches(data, batch_size, shuffle=True, seed=seed + epoch)


def steps_in(model: MultiTaskModel, data: Dataset[Batch], cfg: TrainConfig, seconds: float) -> int:
    """How many training steps of `model` fit in `seconds` on this machine (timed on a copy)."""
    probe = copy.deepcopy(model)
    opt, sched = recipe(probe, cfg, 100)
    feed = _endless(data, cfg.batch_size, cfg.seed)
    train_step(probe, opt, sched, next(feed))  # the first step pays one-off allocation costs
    t0 = time.perf_counter()
    n = 3
    for _ in range(n):
        train_step(probe, opt, sched, next(feed))
    per_step = (time.perf_counter() - t0) / n
    return max(1, math.floor(seconds / per_step))


def train_scratch(
    model: MultiTaskModel,
    data: Dataset[Batch],
    cfg: TrainConfig,
    steps: int,
    seconds: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> ScratchRun:
    """Train `model` in place with `cfg`'s recipe (AdamW, one-cycle over `steps`) on labelled `data`,
    stopping early once `seconds` have passed."""
    torch.manual_seed(cfg.seed)
    weights = balance_weights(model, data, cfg.batch_size, cfg.seed) if cfg.balance else None
    opt, sched = recipe(model, cfg, steps)
    model.train()
    t0 = time.perf_counter()
    first = last = math.nan
    done = 0
    for done, batch in enumerate(_endless(data, cfg.batch_size, cfg.seed), start=1):
        last = train_step(model, opt, sched, batch, weights)
        first = last if done == 1 else first
        if on_step is not None:
            on_step(done, last)
        if done >= steps or (seconds is not None and time.perf_counter() - t0 > seconds):
            break
    model.eval()
    return ScratchRun(done, time.perf_counter() - t0, first, last)
