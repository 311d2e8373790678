"""Balanced task losses (`edgecut train --balance-tasks`) and the warning for a task that ends no better
than a constant. Seen on 2026-12-07: four of seven gallery models trained on the summed losses left slant
(an L1 of ~0.045 beside depth's ~0.7) at the trivial baseline's error, and nothing said so."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from edgecut.server.mtl import checkpoint
from edgecut.server.mtl import train as train_mod
from edgecut.server.mtl.data import Batch
from edgecut.server.mtl.evaluate import unlearned
from edgecut.server.mtl.tasks import TaskSpec
from edgecut.server.mtl.train import BALANCE_SAMPLES, MAX_WEIGHT_RATIO, TrainConfig, balance_weights, train

TINY = replace(TrainConfig.quick(), n_train=64, n_val=32, batch_size=16)
SCENE_TASKS = {"seg", "depth", "normals", "edges", "count"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# L1 losses on labels of 0
OUTPUTS = {"half": 0.5, "quarter": 0.25, "tiny": 1e-6, "exact": 0.0, "diverged": float("inf")}


class _Constant(nn.Module):
    """Predicts a constant per regression task (OUTPUTS), through a BatchNorm whose statistics training
    mode would update."""

    def __init__(self) -> None:
        super().__init__()
        self.task_specs = {t: TaskSpec(t, "regression", 1) for t in OUTPUTS}
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.norm(x)[:, :1] * 0
        return {t: y + v for t, v in OUTPUTS.items()}


class _Labels(Dataset[Batch]):
    def __len__(self) -> int:
        return BALANCE_SAMPLES + 10

    def __getitem__(self, i: int) -> Batch:
        return {"image": torch.rand(3, 4, 4) + 5, **{t: torch.zeros(1, 4, 4) for t in OUTPUTS}}


def test_each_task_is_weighted_by_one_over_its_loss_before_training() -> None:
    model = _Constant().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = balance_weights(model, _Labels(), batch_size=32)  # type: ignore[arg-type]
    assert weights["half"] == pytest.approx(2.0) and weights["quarter"] == pytest.approx(4.0)
    assert weights["tiny"] == pytest.approx(2.0 * MAX_WEIGHT_RATIO)  # not 1e6: capped against the smallest
    assert weights["exact"] == pytest.approx(2.0)  # a loss of 0 is not divided by: the smallest weight
    assert weights["diverged"] == pytest.approx(2.0)  # nor an infinite one (1 / inf would zero them all)
    # measured on a copy: the model's BatchNorm statistics and its mode are as they were
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not model.training


def test_balanced_training_records_its_weights_and_stops_on_the_balanced_loss(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    train(replace(TINY, epochs=1, balance=True), out=out, cache_dir=tmp_path / "cache", show_progress=False)
    doc = json.loads(out.with_suffix(".metrics.json").read_text())
    weights = doc["task_weights"]
    assert set(weights) == SCENE_TASKS and all(w > 0 for w in weights.values())
    assert len(set(weights.values())) > 1  # the tasks' losses differ in scale, so do their weights
    epoch = doc["curve"][0]
    per_task = {t: epoch[f"val_loss.{t}"] for t in SCENE_TASKS}
    # the criterion that decides when to stop is the balanced sum, not the plain one
    assert epoch["val_loss"] == pytest.approx(sum(weights[t] * per_task[t] for t in SCENE_TASKS), rel=1e-4)


def _scripted_losses() -> Any:
    """Depth's validation loss (metres) is best at epoch 2; the small-unit task's keeps falling to epoch 4."""
    depth = iter([2.0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    small = iter([0.05, 0.045, 0.03, 0.01, 0.011, 0.012, 0.013])

    def scripted(_model: Any, _data: Any, weights: Any = None, **_k: Any) -> float:
        losses = {"depth": next(depth), "seg": 1.0, "normals": 1.0, "edges": 1.0, "count": 1.0}
        losses["edges"] = next(small)  # edges stands for the task whose loss is small in its units
        w = weights or {}
        return sum(v * w.get(t, 1.0) for t, v in losses.items())

    return scripted


def test_training_stops_on_the_balanced_validation_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain sum stops on depth's best epoch; the balanced one keeps the epoch where the small-unit
    task had learnt most."""
    weights = {"depth": 0.5, "seg": 1.0, "normals": 1.0, "edges": 20.0, "count": 1.0}
    monkeypatch.setattr(train_mod, "balance_weights", lambda *_a, **_k: weights)
    cfg = replace(TINY, epochs=7, patience=2)
    monkeypatch.setattr(train_mod, "validation_loss", _scripted_losses())
    plain = train(cfg, cache_dir=tmp_path, show_progress=False)
    monkeypatch.setattr(train_mod, "validation_loss", _scripted_losses())
    balanced = train(replace(cfg, balance=True), cache_dir=tmp_path, show_progress=False)
    assert plain.best_epoch == 2 and balanced.best_epoch == 4


def test_unbalanced_training_keeps_the_plain_sum(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    train(replace(TINY, epochs=1), out=out, cache_dir=tmp_path / "cache", show_progress=False)
    doc = json.loads(out.with_suffix(".metrics.json").read_text())
    epoch = doc["curve"][0]
    assert "task_weights" not in doc
    assert epoch["val_loss"] == pytest.approx(sum(epoch[f"val_loss.{t}"] for t in SCENE_TASKS), rel=1e-4)


def test_a_resumed_balanced_run_keeps_the_weights_it_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = replace(TINY, epochs=2, balance=True)
    cache = tmp_path / "cache"
    straight = train(cfg, out=tmp_path / "straight.pt", cache_dir=cache, show_progress=False)
    out = tmp_path / "resumed.pt"
    real = checkpoint.save

    class Interrupted(Exception):
        pass

    def save_then_crash(path: Path, model: Any, extra: dict[str, Any] | None = None) -> None:
        real(path, model, extra)
        if path.name.endswith(".partial"):
            raise Interrupted

    with monkeypatch.context() as m:
        m.setattr(train_mod.checkpoint, "save", save_then_crash)
        with pytest.raises(Interrupted):
            train(cfg, out=out, cache_dir=cache, show_progress=False)
    # measured again on the partly trained model the weights would differ: the resumed run must not
    monkeypatch.setattr(train_mod, "balance_weights", lambda *_a, **_k: pytest.fail("weights measured again"))
    resumed = train(cfg, out=out, cache_dir=cache, show_progress=False)
    a = json.loads((tmp_path / "straight.metrics.json").read_text())
    b = json.loads((tmp_path / "resumed.metrics.json").read_text())
    assert a["task_weights"] == b["task_weights"]
    assert resumed.loss_last_epoch == straight.loss_last_epoch


def test_a_partial_run_saved_before_an_option_existed_still_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "m.pt"
    real = checkpoint.save

    class Interrupted(Exception):
        pass

    def save_as_before_then_crash(path: Path, model: Any, extra: dict[str, Any] | None = None) -> None:
        if extra is not None and "train_config" in extra:
            old = {k: v for k, v in extra["train_config"].items() if k != "balance"}
            extra = {**extra, "train_config": old}
        real(path, model, extra)
        if path.name.endswith(".partial"):
            raise Interrupted

    cfg = replace(TINY, epochs=2)
    with monkeypatch.context() as m:
        m.setattr(train_mod.checkpoint, "save", save_as_before_then_crash)
        with pytest.raises(Interrupted):
            train(cfg, out=out, cache_dir=tmp_path, show_progress=False)
    assert "balance" not in checkpoint.read(out.with_name("m.pt.partial"))["train_config"]
    with caplog.at_level(logging.INFO, logger=train_mod.__name__):
        train(cfg, out=out, cache_dir=tmp_path, show_progress=False)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "resuming" in said and "another config" not in said
    assert json.loads(out.with_suffix(".metrics.json").read_text())["best_epoch"] == 2


def test_another_config_or_an_unknown_option_is_not_resumed() -> None:
    cfg = replace(TINY, epochs=2)
    assert train_mod._same_config(asdict(cfg), cfg)
    assert not train_mod._same_config({**asdict(cfg), "lr": 1.0}, cfg)
    assert not train_mod._same_config({**asdict(cfg), "an_option_from_later": 1}, cfg)


def test_a_task_no_better_than_its_trivial_baseline_is_named() -> None:
    specs = {
        "slant": TaskSpec("slant", "regression", 1),
        "seg": TaskSpec("seg", "segmentation", 3),
        "count": TaskSpec("count", "classification", 5),
    }
    baseline = {"slant": {"abs_err": 0.045}, "seg": {"miou": 0.2}, "count": {"accuracy": 0.257}}
    metrics = {"slant": {"abs_err": 0.048}, "seg": {"miou": 0.8}, "count": {"accuracy": 0.257}}
    assert unlearned(metrics, baseline, specs) == [
        "slant (abs_err 0.048, trivial 0.045)",  # lower is better: a larger error is not learnt
        "count (accuracy 0.257, trivial 0.257)",  # equal is not better
    ]
    assert (
        unlearned({**metrics, "slant": {"abs_err": 0.03}, "count": {"accuracy": 0.5}}, baseline, specs) == []
    )
    diverged = {**metrics, "slant": {"abs_err": float("nan")}, "count": {"accuracy": 0.5}}
    assert unlearned(diverged, baseline, specs) == ["slant (abs_err nan, trivial 0.045)"]


def test_training_warns_when_a_task_ends_no_better_than_a_constant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the trivial baseline made the model's own metrics: every task ends no better than a constant
    real_evaluate = train_mod.evaluate
    seen: dict[str, Any] = {}

    def evaluating(*args: Any, **kwargs: Any) -> Any:
        seen["metrics"] = real_evaluate(*args, **kwargs)
        return seen["metrics"]

    monkeypatch.setattr(train_mod, "evaluate", evaluating)
    monkeypatch.setattr(train_mod, "trivial_baseline", lambda *_a, **_k: seen["metrics"])
    with caplog.at_level(logging.WARNING, logger=train_mod.__name__):
        train(replace(TINY, epochs=1), cache_dir=tmp_path, show_progress=False)
    said = [
        r.getMessage() for r in caplog.records if "no better than predicting a constant" in r.getMessage()
    ]
    assert len(said) == 1 and "depth (abs_err" in said[0] and "--balance-tasks" in said[0]


def test_the_cli_balances_the_tasks_when_asked() -> None:
    import argparse

    from edgecut.server.mtl import train_cli

    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    assert not train_cli.config(parser.parse_args(["train"])).balance
    assert train_cli.config(parser.parse_args(["train", "--balance-tasks"])).balance
