"""Training: a tiny run learns, and an interrupted run resumes from its .partial instead of restarting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from edgecut.server.errors import DatasetError
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl import train as train_mod
from edgecut.server.mtl.data import Batch
from edgecut.server.mtl.train import TrainConfig, train

# Seconds on one core: 64 scenes of 32 x 32, a tiny ResNet.
TINY = replace(TrainConfig.quick(), n_train=64, n_val=32, batch_size=16)
STEPS_PER_EPOCH = 4


class Interrupted(Exception):
    pass


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def step_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the training batches drawn (not the evaluation ones)."""
    drawn: list[int] = []
    real = train_mod.batches

    def counting(*args: Any, **kwargs: Any) -> Iterator[Batch]:
        for b in real(*args, **kwargs):
            drawn.append(1)
            yield b

    monkeypatch.setattr(train_mod, "batches", counting)
    return drawn


def _interrupt_after_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    real = checkpoint.save

    def save_then_crash(path: Path, model: Any, extra: dict[str, Any] | None = None) -> None:
        real(path, model, extra)
        if path.name.endswith(".partial") and extra is not None and extra["progress"]["epoch"] == epoch:
            raise Interrupted

    monkeypatch.setattr(train_mod.checkpoint, "save", save_then_crash)


def test_a_tiny_run_lowers_the_loss_and_writes_its_outputs(tmp_path: Path, step_counter: list[int]) -> None:
    out = tmp_path / "model.pt"
    result = train(replace(TINY, epochs=3), out=out, cache_dir=tmp_path / "cache", show_progress=False)
    assert len(step_counter) == 3 * STEPS_PER_EPOCH
    assert result.loss_last_epoch < result.loss_first_epoch
    assert set(result.metrics) == set(result.baseline) == {"seg", "depth", "normals", "edges", "count"}
    assert out.exists() and not out.with_name("model.pt.partial").exists()
    doc = json.loads(out.with_suffix(".metrics.json").read_text())
    assert len(doc["loss_per_epoch"]) == 3 and doc["config"]["epochs"] == 3
    x = torch.rand(2, 3, 32, 32)
    loaded, trained = checkpoint.load(out)(x), result.model.eval()(x)
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_an_interrupted_run_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step_counter: list[int]
) -> None:
    cache = tmp_path / "cache"
    straight = train(TINY, out=tmp_path / "straight.pt", cache_dir=cache, show_progress=False)

    out = tmp_path / "resumed.pt"
    partial = out.with_name("resumed.pt.partial")
    with monkeypatch.context() as m:
        _interrupt_after_epoch(m, 1)
        with pytest.raises(Interrupted):
            train(TINY, out=out, cache_dir=cache, show_progress=False)
    assert partial.exists() and not out.exists()
    assert checkpoint.read(partial)["progress"]["epoch"] == 1

    step_counter.clear()
    resumed = train(TINY, out=out, cache_dir=cache, show_progress=False)
    assert len(step_counter) == STEPS_PER_EPOCH  # only the second epoch ran
    assert not partial.exists() and out.exists()
    # the resumed run is the run that was never interrupted
    assert resumed.loss_first_epoch == straight.loss_first_epoch
    assert resumed.loss_last_epoch == straight.loss_last_epoch
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_partial_from_another_config_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step_counter: list[int]
) -> None:
    out = tmp_path / "m.pt"
    with monkeypatch.context() as m:
        _interrupt_after_epoch(m, 1)
        with pytest.raises(Interrupted):
            train(TINY, out=out, cache_dir=tmp_path, show_progress=False)
    step_counter.clear()
    train(replace(TINY, lr=1e-3), out=out, cache_dir=tmp_path, show_progress=False)
    assert len(step_counter) == TINY.epochs * STEPS_PER_EPOCH  # restarted from scratch


def test_the_checkpoint_records_the_data_it_was_trained_on(tmp_path: Path) -> None:
    """Issue 27: prune and the server calibrate on it by default (mtl/calibration.py)."""
    from edgecut.server.mtl.calibration import folder_digest, folder_listing
    from edgecut_bench.scene_folder import write_scene_folder

    write_scene_folder(tmp_path / "data", 8, 1, 32, ("seg", "count"))
    train(replace(TINY, epochs=1, data=str(tmp_path / "data")), out=tmp_path / "f.pt", show_progress=False)
    recorded = checkpoint.read(tmp_path / "f.pt")["trained_on"]
    assert recorded == {
        "data": str((tmp_path / "data").resolve()),
        "digest": folder_digest(tmp_path / "data"),
        "listing": folder_listing(tmp_path / "data"),
    }
    train(replace(TINY, epochs=1, n_train=16), out=tmp_path / "s.pt", cache_dir=tmp_path, show_progress=False)
    assert checkpoint.read(tmp_path / "s.pt")["trained_on"] == {"data": "synthetic"}


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_stops_when_validation_stops_improving_and_keeps_the_best_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converging schedule: the rate drops after each epoch without a better validation loss,
    training stops after `patience` such epochs, and the saved weights are the best epoch's."""
    scripted = iter([1.0, 0.8, 0.9, 0.85, 0.7999, 0.5])  # best at epoch 2; 0.7999 is no real gain
    weights: dict[int, torch.Tensor] = {}
    real_record = train_mod._Progress.record

    def record(self: Any, cfg: TrainConfig, model: Any, rate: Any) -> None:
        weights[self.epoch] = _flat(model)
        real_record(self, cfg, model, rate)

    monkeypatch.setattr(train_mod, "validation_loss", lambda *_a, **_k: next(scripted))
    monkeypatch.setattr(train_mod._Progress, "record", record)
    cfg = replace(TINY, epochs=20, patience=3, lr_patience=1, lr_drop=0.5)
    out = tmp_path / "m.pt"
    result = train(cfg, out=out, cache_dir=tmp_path / "cache", show_progress=False)

    assert result.best_epoch == 2 and len(weights) == 5  # epochs 3, 4, 5 brought nothing
    assert "stopped at epoch 5" in result.stopped
    doc = json.loads(out.with_suffix(".metrics.json").read_text())
    assert [p["val_loss"] for p in doc["curve"]] == [1.0, 0.8, 0.9, 0.85, 0.7999]
    lrs = [p["lr"] for p in doc["curve"]]
    # the rate an epoch ran at: halved after each epoch without a gain (epochs 3 and 4)
    assert (
        lrs[2] == lrs[1] and lrs[3] == pytest.approx(lrs[1] * 0.5) and lrs[4] == pytest.approx(lrs[1] * 0.25)
    )
    saved = _flat(checkpoint.load(out))
    assert torch.equal(saved, weights[2]) and not torch.equal(saved, weights[5])


def test_the_rate_drops_only_after_lr_patience_epochs_without_a_gain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([1.0, 1.1, 1.2, 0.9, 1.0, 1.0, 1.0])  # one bad epoch, then two, then three more
    monkeypatch.setattr(train_mod, "validation_loss", lambda *_a, **_k: next(scripted))
    cfg = replace(TINY, epochs=7, patience=3, lr_patience=2, lr_drop=0.5)
    train(cfg, out=tmp_path / "m.pt", cache_dir=tmp_path / "cache", show_progress=False)
    doc = json.loads((tmp_path / "m.metrics.json").read_text())
    lrs = [p["lr"] / cfg.lr for p in doc["curve"]]
    assert lrs == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25])  # the drop after epoch 3, then after 6
    assert doc["best_epoch"] == 4 and "stopped at epoch 7" in doc["stopped"]


def test_without_patience_every_epoch_runs_and_the_last_is_kept(tmp_path: Path) -> None:
    result = train(replace(TINY, epochs=2), out=tmp_path / "m.pt", cache_dir=tmp_path, show_progress=False)
    assert result.best_epoch == 2 and result.stopped == "trained the 2 epochs"


def test_a_model_for_some_tasks_only(tmp_path: Path) -> None:
    result = train(replace(TINY, epochs=1, tasks=("seg", "depth")), cache_dir=tmp_path, show_progress=False)
    assert set(result.model.task_specs) == {"seg", "depth"} and set(result.metrics) == {"seg", "depth"}
    assert TrainConfig(tasks=["seg"]) == TrainConfig(tasks=("seg",))  # type: ignore[arg-type]  # JSON


def test_an_unknown_task_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no task sky .*it has: seg, depth"):
        train(replace(TINY, tasks=("seg", "sky")), cache_dir=tmp_path, show_progress=False)


def test_the_cli_trains_a_fixed_budget_when_asked_for_epochs_and_converges_otherwise() -> None:
    import argparse

    from edgecut.server.mtl import train_cli

    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    default = train_cli.config(parser.parse_args(["train"]))
    assert default.patience == TrainConfig().patience > 0 and default.epochs == TrainConfig().epochs
    fixed = train_cli.config(parser.parse_args(["train", "--epochs", "2"]))
    assert fixed.epochs == 2 and fixed.patience == 0
    capped = train_cli.config(parser.parse_args(["train", "--epochs", "30", "--patience", "3"]))
    assert capped.epochs == 30 and capped.patience == 3


def _images_seen(monkeypatch: pytest.MonkeyPatch) -> list[set[bytes]]:
    """Per epoch, the training images drawn (as bytes), recorded from the batches the loop trains on."""
    seen: list[set[bytes]] = []
    real = train_mod.batches

    def recording(ds: Any, *args: Any, **kwargs: Any) -> Iterator[Batch]:
        seen.append(set())
        for b in real(ds, *args, **kwargs):
            seen[-1].update(img.numpy().tobytes() for img in b["image"])
            yield b

    monkeypatch.setattr(train_mod, "batches", recording)
    return seen


def test_synthetic_training_sees_new_scenes_every_epoch_and_resumes_on_the_same_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _images_seen(monkeypatch)
    out = tmp_path / "model.pt"
    cfg = replace(TINY, epochs=3)
    _interrupt_after_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted):
        train(cfg, out=out, cache_dir=tmp_path / "cache", show_progress=False)
    monkeypatch.undo()
    seen_after = _images_seen(monkeypatch)
    train(cfg, out=out, cache_dir=tmp_path / "cache", show_progress=False)
    epochs = seen + seen_after
    assert len(epochs) == 3 and all(len(e) == TINY.n_train for e in epochs)
    assert not (epochs[0] & epochs[1]) and not (epochs[1] & epochs[2]) and not (epochs[0] & epochs[2])
    # the stream is the seed's scenes in order: epoch 2 (resumed) is scenes 128..191 of seed 0
    from edgecut.server.mtl.data import synthetic_scenes

    third = synthetic_scenes(64, 0, 32, None, show_progress=False, start=128)
    assert {third.tensors["image"][i].float().div(255).numpy().tobytes() for i in range(64)} == epochs[2]
    # fresh scenes are never cached: only the first epoch's set and the validation set are on disk
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_fixed_scenes_train_every_epoch_on_the_same_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _images_seen(monkeypatch)
    train(replace(TINY, epochs=2, fresh_scenes=False), cache_dir=tmp_path, show_progress=False)
    assert len(seen) == 2 and seen[0] == seen[1]


def test_the_cli_refuses_fixed_scenes_for_a_folder(tmp_path: Path) -> None:
    import argparse

    from edgecut.errors import ConfigError
    from edgecut.server.mtl import train_cli

    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    assert not train_cli.config(parser.parse_args(["train", "--fixed-scenes"])).fresh_scenes
    assert TrainConfig().fresh_scenes
    with pytest.raises(ConfigError, match="synthetic scenes"):
        train_cli.config(parser.parse_args(["train", "--fixed-scenes", "--data", str(tmp_path)]))
