"""Balanced task losses (`edgecut train --balance-tasks`) and the warning for a task that ends no better
than a constant. Seen on 2026-12-07: four of seven gallery models trained on the summed losses left slant
(an L1 of ~0.045 beside depth's ~0.7) at the trivial baseline's error, and nothing said so."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
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
from edgecut.server.mtl.train import BALANCE_SAMPLES, TrainConfig, balance_weights, train

TINY = replace(TrainConfig.quick(), n_train=64, n_val=32, batch_size=16)
SCENE_TASKS = {"seg", "depth", "normals", "edges", "count"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class _Constant(nn.Module):
    """Predicts 0.5 for the regression and 0 for the other: L1 losses of 0.5 and 0 on zero labels."""

    def __init__(self) -> None:
        super().__init__()
        self.task_specs = {
            "small": TaskSpec("small", "regression", 1),
            "exact": TaskSpec("exact", "regression", 1),
        }
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        return {"small": torch.full((b, 1, h, w), 0.5) + self.bias, "exact": torch.zeros(b, 1, h, w)}


class _Zeros(Dataset[Batch]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Batch:
        return {"image": torch.zeros(3, 4, 4), "small": torch.zeros(1, 4, 4), "exact": torch.zeros(1, 4, 4)}


def test_each_task_is_weighted_by_one_over_its_loss_before_training() -> None:
    weights = balance_weights(_Constant(), _Zeros(BALANCE_SAMPLES + 10), batch_size=32)  # type: ignore[arg-type]
    assert weights["small"] == pytest.approx(2.0)  # 1 / 0.5
    assert weights["exact"] == 1.0  # a loss of 0 is not divided by


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
