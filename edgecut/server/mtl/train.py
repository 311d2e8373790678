"""Train a multi-task model on labelled data (synthetic scenes or a folder); checkpoints every epoch so
an interrupted run resumes.

The model is any architecture `build_model` finds (a registered name, an `edgecut.models` entry point or
`module:Class`), built for the tasks of the data: a folder declares its tasks and their kinds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.calibration import RECORD, training_record
from edgecut.server.mtl.contract import MultiTaskModel, check_outputs
from edgecut.server.mtl.data import Batch, batches
from edgecut.server.mtl.evaluate import Metrics, evaluate, trivial_baseline
from edgecut.server.mtl.losses import total_loss
from edgecut.server.mtl.plugins import build_model
from edgecut.server.mtl.sources import SYNTHETIC, training_data
from edgecut.server.mtl.tasks import TaskSpec
from edgecut.server.progress import progress_bar

logger = logging.getLogger(__name__)


REFERENCE_ARCH = "resnet-mtl"
REFERENCE_CONFIG: dict[str, Any] = {"widths": [24, 24, 48, 96], "head_width": 32}


@dataclass(frozen=True)
class TrainConfig:
    """`arch` names the model class; `model` its keyword arguments (besides tasks and input_size).

    `data` is "synthetic" (n_train / n_val rendered scenes) or a folder; `val_data` an optional
    validation folder (see sources.training_data).
    """

    arch: str = REFERENCE_ARCH
    model: dict[str, Any] = field(default_factory=lambda: dict(REFERENCE_CONFIG))
    data: str = SYNTHETIC
    val_data: str = ""
    image_scale: float | None = None
    n_train: int = 6000
    n_val: int = 600
    image_size: int = 64
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

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
) -> float:
    """One step of the labelled multi-task loss over the model's own tasks; returns the loss."""
    loss, _ = total_loss(model.task_specs, model(batch["image"]), batch)
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


def train(
    cfg: TrainConfig,
    out: Path | None = None,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train `cfg`; with `out`, save `out` (final) and resume from `out`.partial if one matches `cfg`."""
    torch.manual_seed(cfg.seed)
    train_ds, val_ds, specs = datasets(cfg, cache_dir, show_progress)
    trained_on = training_record(cfg.data)  # prune and the server calibrate on it by default
    model = check_outputs(build_model(cfg.arch, tasks=specs, input_size=cfg.image_size, **cfg.model))
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)  # type: ignore[arg-type]  # all sized
    opt, sched = recipe(model, cfg, cfg.epochs * steps_per_epoch)
    partial = out.with_name(out.name + ".partial") if out else None
    start_epoch, elapsed, history = 0, 0.0, []
    if partial is not None and partial.exists():
        doc = checkpoint.read(partial)
        if doc.get("train_config") == asdict(cfg):
            model.load_state_dict(doc["state_dict"])
            opt.load_state_dict(doc["optimizer"])
            sched.load_state_dict(doc["scheduler"])
            start_epoch, elapsed, history = doc["epoch"], doc["seconds"], doc["history"]
            torch.set_rng_state(doc["rng"])
            logger.info("resuming %s at epoch %d", partial, start_epoch)
        else:
            logger.warning("ignoring %s: it was trained with another config", partial)

    t0 = time.perf_counter() - elapsed
    model.train()
    with progress_bar("training", total=cfg.epochs * steps_per_epoch, enabled=show_progress) as advance:
        advance(start_epoch * steps_per_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            running, count = 0.0, 0
            for batch in batches(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch):
                running += train_step(model, opt, sched, batch) * len(batch["image"])
                count += len(batch["image"])
                advance(1, epoch=epoch + 1, loss=f"{running / count:.3f}")
            history.append(running / max(count, 1))
            if partial is not None:
                checkpoint.save(
                    partial,
                    model,
                    {
                        "train_config": asdict(cfg),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "epoch": epoch + 1,
                        "seconds": time.perf_counter() - t0,
                        "history": history,
                        "rng": torch.get_rng_state(),
                    },
                )
    seconds = time.perf_counter() - t0
    model.eval()
    metrics = evaluate(model, model.task_specs, val_ds)
    baseline = trivial_baseline(model.task_specs, train_ds, val_ds)
    if out is not None:
        checkpoint.save(
            out,
            model,
            {"train_config": asdict(cfg), "metrics": metrics, "seconds": seconds, RECORD: trained_on},
        )
        out.with_suffix(".metrics.json").write_text(
            json.dumps(
                {
                    "config": asdict(cfg),
                    "seconds": seconds,
                    "loss_per_epoch": history,
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
        history[0] if history else math.nan,
        history[-1] if history else math.nan,
        out,
    )
