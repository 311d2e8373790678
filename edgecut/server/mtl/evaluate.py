"""Run a model over a dataset and compute its per-task metrics; the trivial baselines too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, batches
from edgecut.server.mtl.losses import total_loss
from edgecut.server.mtl.metric_names import PRIMARY, no_better
from edgecut.server.mtl.metrics import TaskMeter
from edgecut.server.mtl.tasks import TaskSpec
from edgecut.server.ort_latency import session

Metrics = dict[str, dict[str, float]]


@torch.no_grad()
def evaluate_fn(
    predict: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    specs: dict[str, TaskSpec],
    data: Dataset[Batch],
    batch_size: int = 64,
) -> Metrics:
    meters = {name: TaskMeter(spec) for name, spec in specs.items()}
    for batch in batches(data, batch_size):
        out = predict(batch["image"])
        for name, meter in meters.items():
            meter.update(out[name], batch[name])
    return {name: meter.result() for name, meter in meters.items()}


def evaluate(
    model: torch.nn.Module, specs: dict[str, TaskSpec], data: Dataset[Batch], batch_size: int = 64
) -> Metrics:
    was_training = model.training
    model.eval()
    try:
        return evaluate_fn(model, specs, data, batch_size)
    finally:
        model.train(was_training)


def evaluate_onnx(
    path: Path, specs: dict[str, TaskSpec], data: Dataset[Batch], batch_size: int = 64, threads: int = 1
) -> Metrics:
    """`evaluate` of an exported model, run by onnxruntime on the CPU (what a device serves)."""
    sess = session(path, threads)
    names = [o.name for o in sess.get_outputs()]

    def predict(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = sess.run(None, {"image": np.ascontiguousarray(x.numpy(), dtype=np.float32)})
        return {n: torch.from_numpy(np.asarray(y)) for n, y in zip(names, out, strict=True)}

    return evaluate_fn(predict, specs, data, batch_size)


@torch.no_grad()
def trivial_baseline(specs: dict[str, TaskSpec], train: Dataset[Batch], val: Dataset[Batch]) -> Metrics:
    """Metrics of predicting the training set's mean (regression) or majority class (everything else)."""
    sums: dict[str, torch.Tensor] = {}
    n = 0
    for batch in batches(train, 256):
        n += len(batch["image"])
        for name, spec in specs.items():
            t = batch[name]
            if spec.kind in ("segmentation", "classification"):
                v = torch.bincount(t.flatten().long().clamp_max(spec.channels), minlength=spec.channels + 1)
                v = v[: spec.channels].double()
            elif spec.kind == "edges":
                v = (t > 0.5).double().mean(dim=(0, 2, 3)) * len(t)
            elif spec.kind == "depth":  # sum and count of the measured pixels (0 = no measurement)
                v = torch.stack([t.double()[t > 0].sum(), (t > 0).sum().double()])
            else:
                v = t.double().sum(dim=(0, 2, 3)) / t[0, 0].numel()
            sums[name] = sums.get(name, torch.zeros_like(v)) + v

    def predict(x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        out = {}
        for name, spec in specs.items():
            s = sums[name]
            if spec.kind in ("segmentation", "classification"):
                logits = torch.full((spec.channels,), -10.0)
                logits[int(s.argmax())] = 10.0
                out[name] = (
                    logits.view(1, -1, 1, 1).expand(b, -1, h, w)
                    if spec.kind == "segmentation"
                    else logits.view(1, -1).expand(b, -1)
                )
            elif spec.kind == "edges":  # majority: no edge anywhere
                logit = 10.0 if float(s[0]) / n > 0.5 else -10.0
                out[name] = torch.full((b, 1, h, w), logit)
            else:
                mean = (s[:1] / s[1].clamp_min(1) if spec.kind == "depth" else s / n).float()
                if spec.kind == "normals":
                    mean = mean / mean.norm().clamp_min(1e-8)
                out[name] = mean.view(1, -1, 1, 1).expand(b, -1, h, w)
        return out

    return evaluate_fn(predict, specs, val)


@torch.no_grad()
def validation_loss(
    model: MultiTaskModel,
    data: Dataset[Batch],
    batch_size: int = 64,
    weights: dict[str, float] | None = None,
    parts: dict[str, float] | None = None,
    train_mode: bool = False,
) -> float:
    """The training loss (labels, every task of the model, `weights` as in training) on held-out data,
    per sample; `parts`, when given, receives each task's unweighted loss per sample. `train_mode` runs
    the model as training does (BatchNorm on batch statistics, updating its running ones: give a copy)."""
    was_training = model.training
    model.train(train_mode)
    total, count = 0.0, 0
    sums: dict[str, float] = {}
    try:
        for batch in batches(data, batch_size):
            loss, per_task = total_loss(model.task_specs, model(batch["image"]), batch, weights=weights)
            n = len(batch["image"])
            total += float(loss) * n
            count += n
            for name, value in per_task.items():
                sums[name] = sums.get(name, 0.0) + value * n
    finally:
        model.train(was_training)
    if parts is not None:
        parts.update({name: value / max(count, 1) for name, value in sums.items()})
    return total / max(count, 1)


def unlearned(metrics: Metrics, baseline: Metrics, specs: dict[str, TaskSpec]) -> list[str]:
    """The tasks whose main metric is no better than the trivial baseline's, each said as
    "slant (abs_err 0.048, trivial 0.045)": such a head predicts no better than a constant."""
    out = []
    for name, spec in specs.items():
        key = PRIMARY[spec.kind]
        value, trivial = metrics.get(name, {}).get(key), baseline.get(name, {}).get(key)
        if value is None or trivial is None:
            continue
        if no_better(key, value, trivial):
            out.append(f"{name} ({key} {value:.3f}, trivial {trivial:.3f})")
    return out
