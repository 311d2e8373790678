"""Train a multi-task model on labelled data (synthetic scenes or a folder); checkpoints every epoch so
an interrupted run resumes.

By default training runs until the validation loss stops improving (`patience`): a warm-up epoch, then
AdamW at a constant rate cut by `lr_drop` after every `lr_patience` epochs without improvement, stopping
after `patience` epochs without one (or at `epochs`) and keeping the best epoch's weights; the curve is
recorded. `patience=0` trains exactly `epochs` with a one-cycle rate (the quick config, fixed budgets).

With `balance`, each task's loss is divided by its loss before training (the untrained model on a
seeded draw of training samples), in training and in the stopping criterion: summed as they are, a task
whose loss is small in its own units (a slant in [-1, 1] beside depth in metres) weighs little in the
shared layers' gradient and in the validation loss that stops training, and can end no better than a
constant. That is GradNorm's normalisation by the initial loss, without its adaptive weights.

The model is any architecture `build_model` finds (a registered name, an `edgecut.models` entry point or
`module:Class`), built for the tasks of the data: a folder declares its tasks and their kinds.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from edgecut.server.errors import DatasetError
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.calibration import RECORD, training_record
from edgecut.server.mtl.contract import MultiTaskModel, check_outputs
from edgecut.server.mtl.data import Batch, batches, synthetic_scenes
from edgecut.server.mtl.evaluate import Metrics, evaluate, trivial_baseline, unlearned, validation_loss
from edgecut.server.mtl.losses import total_loss
from edgecut.server.mtl.plugins import build_model
from edgecut.server.mtl.sources import SYNTHETIC, is_synthetic, training_data
from edgecut.server.mtl.tasks import TaskSpec
from edgecut.server.progress import progress_bar

logger = logging.getLogger(__name__)


REFERENCE_ARCH = "resnet-mtl"
REFERENCE_CONFIG: dict[str, Any] = {"widths": [24, 24, 48, 96], "head_width": 32}


@dataclass(frozen=True)
class TrainConfig:
    """`arch` names the model class; `model` its keyword arguments (besides tasks and input_size).

    `data` is "synthetic" (n_train / n_val rendered scenes) or a folder; `val_data` an optional
    validation folder (see sources.training_data). With `fresh_scenes`, synthetic training renders
    n_train scenes it has not seen for every epoch after the first (the next ones of the seed's
    stream, about 1 ms each): scenes cost nothing, so a long run learns instead of memorising its
    6000 (the fixed set stopped the reference at epoch 11 with training loss still falling).
    """

    arch: str = REFERENCE_ARCH
    model: dict[str, Any] = field(default_factory=lambda: dict(REFERENCE_CONFIG))
    data: str = SYNTHETIC
    val_data: str = ""
    image_scale: float | None = None
    n_train: int = 6000  # per epoch
    n_val: int = 600
    image_size: int = 64
    epochs: int = 80  # the cap; with patience > 0 training usually stops well before it
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    tasks: tuple[str, ...] = ()  # train only these of the data's tasks (default: all)
    patience: int = 6  # epochs without a better validation loss before stopping; 0: all epochs
    lr_patience: int = 2  # ... before each drop of the rate (one noisy epoch does not cut it)
    lr_drop: float = 0.3  # the rate's factor at each drop (patience > 0)
    fresh_scenes: bool = True  # synthetic data: new scenes every epoch (folders are what they are)
    balance: bool = False  # each task's loss divided by its loss before training (see the module doc)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))  # a JSON record gives a list

    @classmethod
    def quick(cls) -> TrainConfig:
        """Seconds, not minutes: for tests and smoke runs (quality is not the point)."""
        return cls(
            model={"widths": [8, 8, 16, 16], "head_width": 8},
            n_train=128,
            n_val=64,
            epochs=2,
            batch_size=32,
            image_size=32,
            patience=0,
        )


@dataclass
class TrainResult:
    model: MultiTaskModel
    metrics: Metrics
    baseline: Metrics
    seconds: float
    loss_first_epoch: float
    loss_last_epoch: float
    checkpoint: Path | None
    best_epoch: int = 0  # the epoch whose weights were kept (the last one without patience)
    stopped: str = ""  # why training ended (patience, the epoch cap)


def selected(specs: list[TaskSpec], tasks: tuple[str, ...]) -> list[TaskSpec]:
    """The data's tasks named in `tasks` (all when empty), in the data's order."""
    unknown = sorted(set(tasks) - {s.name for s in specs})
    if unknown:
        have = ", ".join(s.name for s in specs)
        raise DatasetError(f"the training data has no task {', '.join(unknown)} (it has: {have})")
    return [s for s in specs if not tasks or s.name in tasks]


def recipe(
    model: torch.nn.Module, cfg: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The training recipe: AdamW with a one-cycle learning rate over `total_steps`."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(1, total_steps), pct_start=0.15
    )
    return opt, sched


def train_step(
    model: MultiTaskModel,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    batch: Batch,
    weights: dict[str, float] | None = None,
) -> float:
    """One step of the labelled multi-task loss over the model's own tasks; returns the loss."""
    loss, _ = total_loss(model.task_specs, model(batch["image"]), batch, weights=weights)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


def datasets(
    cfg: TrainConfig, cache_dir: Path | None, show_progress: bool
) -> tuple[Dataset[Batch], Dataset[Batch], list[TaskSpec]]:
    return training_data(
        cfg.data,
        cfg.val_data or None,
        cfg.image_size,
        cfg.n_train,
        cfg.n_val,
        cfg.seed,
        cache_dir,
        cfg.image_scale,
        show_progress,
    )


def epoch_data(cfg: TrainConfig, first: Dataset[Batch], epoch: int) -> Dataset[Batch]:
    """The training samples of `epoch` (0-based): the first epoch's set, or with fresh synthetic
    scenes the stream's next n_train (not cached: a long run would fill the disk)."""
    if epoch == 0 or not cfg.fresh_scenes or not is_synthetic(cfg.data):
        return first
    return synthetic_scenes(
        cfg.n_train, cfg.seed, cfg.image_size, None, show_progress=False, start=epoch * cfg.n_train
    )


class _Rate:
    """LambdaLR's factor for the converging schedule: a linear warm-up over the first epoch, times the
    drops so far (an object, not a function, so the scheduler's state_dict keeps the drops on resume)."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = max(1, warmup_steps)
        self.factor = 1.0

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / self.warmup_steps) * self.factor


def converging_recipe(
    model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, _Rate]:
    """AdamW, warm-up over the first epoch, then constant until a drop (`_Rate.factor`)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rate = _Rate(steps_per_epoch)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, rate), rate


BALANCE_SAMPLES = 256  # the training samples each task's loss before training is measured on
# no task weighs more than this many times another: a head whose untrained output happens to sit on its
# labels (a loss near 0) would otherwise take over the shared layers' gradient
MAX_WEIGHT_RATIO = 1000.0


def balance_weights(
    model: MultiTaskModel, data: Dataset[Batch], batch_size: int, seed: int = 0
) -> dict[str, float]:
    """Each task's weight for `TrainConfig.balance`: 1 / its loss before training, measured on a copy of
    the untrained model in training mode (batch statistics, as training sees it) on a seeded draw of
    samples (a folder's first files may all be alike). A task whose loss is 0 or not finite there keeps
    the smallest weight; none weighs more than MAX_WEIGHT_RATIO times another."""
    n = len(data)  # type: ignore[arg-type]  # all sized
    draw = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:BALANCE_SAMPLES]
    losses: dict[str, float] = {}
    validation_loss(
        copy.deepcopy(model), Subset(data, draw.tolist()), batch_size, parts=losses, train_mode=True
    )
    raw = {name: 1.0 / loss for name, loss in losses.items() if loss > 0}
    raw = {name: w for name, w in raw.items() if math.isfinite(w) and w > 0}  # an infinite loss gives 0
    low = min(raw.values(), default=1.0)
    return {name: min(raw.get(name, low), low * MAX_WEIGHT_RATIO) for name in losses}


@dataclass
class _Progress:
    """What an interrupted run resumes from, besides the weights and the optimiser."""

    epoch: int = 0
    seconds: float = 0.0
    history: list[float] = field(default_factory=list)  # training loss per epoch
    curve: list[dict[str, float]] = field(default_factory=list)  # per epoch: losses, lr, seconds
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one
    best_state: dict[str, torch.Tensor] | None = None
    stopped: str = ""
    weights: dict[str, float] = field(default_factory=dict)  # per task, with balance (kept on resume)

    def record(self, cfg: TrainConfig, model: torch.nn.Module, rate: _Rate | None) -> None:
        """After an epoch: keep the best weights; with patience, drop the rate or stop."""
        val = self.curve[-1]["val_loss"]
        if not cfg.patience:  # a fixed budget keeps its last epoch
            self.best_loss, self.best_epoch = val, self.epoch
            self.stopped = "" if self.epoch < cfg.epochs else f"trained the {cfg.epochs} epochs"
            return
        if val < self.best_loss * (1 - 1e-3):  # a relative improvement, not noise in the last digit
            self.best_loss, self.best_epoch, self.bad_epochs = val, self.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
            if rate is not None and self.bad_epochs % max(1, cfg.lr_patience) == 0:
                rate.factor *= cfg.lr_drop
        if self.bad_epochs >= cfg.patience:
            self.stopped = (
                f"validation loss not better for {cfg.patience} epochs: stopped at epoch {self.epoch}, "
                f"kept epoch {self.best_epoch}"
            )
        elif self.epoch >= cfg.epochs:
            self.stopped = f"reached the {cfg.epochs}-epoch cap; kept epoch {self.best_epoch}"


def _same_config(saved: dict[str, Any] | None, cfg: TrainConfig) -> bool:
    """Whether a partial run was saved by `cfg`: compared as configs, so an option added since (at its
    default) does not throw away a run that trained exactly so."""
    try:
        return saved is not None and TrainConfig(**saved) == cfg
    except TypeError:  # an option this version does not know
        return False


def train(
    cfg: TrainConfig,
    out: Path | None = None,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train `cfg`; with `out`, save `out` (final) and resume from `out`.partial if one matches `cfg`.

    With `cfg.patience`, the model returned (and saved) is the epoch with the lowest validation loss."""
    torch.manual_seed(cfg.seed)
    train_ds, val_ds, specs = datasets(cfg, cache_dir, show_progress)
    trained_on = training_record(cfg.data)  # prune and the server calibrate on it by default
    specs = selected(specs, cfg.tasks)
    model = check_outputs(build_model(cfg.arch, tasks=specs, input_size=cfg.image_size, **cfg.model))
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)  # type: ignore[arg-type]  # all sized
    rate: _Rate | None = None
    sched: torch.optim.lr_scheduler.LRScheduler
    if cfg.patience:
        opt, sched, rate = converging_recipe(model, cfg, steps_per_epoch)
    else:
        opt, sched = recipe(model, cfg, cfg.epochs * steps_per_epoch)
    partial = out.with_name(out.name + ".partial") if out else None
    state = _Progress()
    if partial is not None and partial.exists():
        doc = checkpoint.read(partial)
        if _same_config(doc.get("train_config"), cfg):
            model.load_state_dict(doc["state_dict"])
            opt.load_state_dict(doc["optimizer"])
            sched.load_state_dict(doc["scheduler"])
            state = _Progress(**doc["progress"])
            torch.set_rng_state(doc["rng"])
            logger.info("resuming %s at epoch %d", partial, state.epoch)
        else:
            logger.warning("ignoring %s: it was trained with another config", partial)

    if cfg.balance and not state.weights:
        state.weights = balance_weights(model, train_ds, cfg.batch_size, cfg.seed)
        logger.info(
            "balanced task weights (1 / loss before training): %s",
            ", ".join(f"{k} {v:.3g}" for k, v in state.weights.items()),
        )
    weights = state.weights or None
    t0 = time.perf_counter() - state.seconds
    model.train()
    with progress_bar(
        "training",
        total=cfg.epochs * steps_per_epoch,
        enabled=show_progress,
        start=state.epoch * steps_per_epoch,
    ) as advance:
        while not state.stopped and state.epoch < cfg.epochs:
            running, count = 0.0, 0
            epoch_ds = epoch_data(cfg, train_ds, state.epoch)
            for batch in batches(epoch_ds, cfg.batch_size, shuffle=True, seed=cfg.seed + state.epoch):
                running += train_step(model, opt, sched, batch, weights) * len(batch["image"])
                count += len(batch["image"])
                advance(1, epoch=state.epoch + 1, loss=f"{running / count:.3f}")
            state.epoch += 1
            state.history.append(running / max(count, 1))
            per_task: dict[str, float] = {}
            state.curve.append(
                {
                    "epoch": state.epoch,
                    "train_loss": state.history[-1],
                    "val_loss": validation_loss(model, val_ds, weights=weights, parts=per_task),
                    "lr": float(opt.param_groups[0]["lr"]),
                    "seconds": round(time.perf_counter() - t0, 1),
                    # each task's own (unweighted) validation loss: which task stopped improving when
                    **{f"val_loss.{name}": value for name, value in per_task.items()},
                }
            )
            state.record(cfg, model, rate)
            if cfg.patience:  # say where it stands: a converging run has no fixed end
                logger.info(
                    "epoch %d: validation loss %.4f (best %.4f at epoch %d)",
                    state.epoch,
                    state.curve[-1]["val_loss"],
                    state.best_loss,
                    state.best_epoch,
                )
            state.seconds = time.perf_counter() - t0
            if partial is not None:
                checkpoint.save(
                    partial,
                    model,
                    {
                        "train_config": asdict(cfg),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "progress": asdict(state),
                        "rng": torch.get_rng_state(),
                    },
                )
    seconds = time.perf_counter() - t0
    if cfg.patience and state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    metrics = evaluate(model, model.task_specs, val_ds)
    baseline = trivial_baseline(model.task_specs, train_ds, val_ds)
    constant = unlearned(metrics, baseline, model.task_specs)
    if constant:
        logger.warning(
            "no better than predicting a constant (the trivial baseline): %s%s",
            "; ".join(constant),
            "" if cfg.balance else "; more epochs, or balanced task losses (--balance-tasks), may learn it",
        )
    curve = {
        "curve": state.curve,
        "best_epoch": state.best_epoch,
        "stopped": state.stopped,
        **({"task_weights": state.weights} if state.weights else {}),
    }
    if out is not None:
        checkpoint.save(
            out,
            model,
            {
                "train_config": asdict(cfg),
                "metrics": metrics,
                "seconds": seconds,
                RECORD: trained_on,
                **curve,
            },
        )
        out.with_suffix(".metrics.json").write_text(
            json.dumps(
                {
                    "config": asdict(cfg),
                    "seconds": seconds,
                    "loss_per_epoch": state.history,
                    **curve,
                    "metrics": metrics,
                    "trivial_baseline": baseline,
                },
                indent=2,
            )
        )
        if partial is not None:
            partial.unlink(missing_ok=True)
    return TrainResult(
        model,
        metrics,
        baseline,
        seconds,
        state.history[0] if state.history else math.nan,
        state.history[-1] if state.history else math.nan,
        out,
        state.best_epoch,
        state.stopped,
    )
