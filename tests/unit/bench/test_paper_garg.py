"""Garg's comparison in `edgecut bench paper` gives both arms the same training: one small run of the
Garg part with every optimiser step and every training scene it draws recorded, arm by arm."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from edgecut.server.cut.iterative import IterativeOptions
from edgecut.server.cut.prune import Size
from edgecut.server.mtl import build_model, checkpoint
from edgecut.server.mtl.data import TensorSamples
from edgecut_bench import paper_parts
from edgecut_bench.paper_learned import garg_findings
from edgecut_bench.paper_parts import Bench
from edgecut_bench.paper_rows import GargRow, PaperConfig, PartResult, SingleTaskRow

TASKS = ("seg", "depth")
PRE, EVERY, ROUNDS = 3, 2, 2


@dataclass
class Run:
    """One training run the Garg part started: what it trained, its optimiser steps, the scenes it drew."""

    kind: str  # "scratch" (re-initialised) or "iterative"
    tasks: tuple[str, ...]
    trunk_params: int
    steps: int = 0
    scenes: set[int] = field(default_factory=set)
    steps_at_cut: list[int] = field(default_factory=list)  # iterative: steps done when each cut was made


class Recorder:
    def __init__(self) -> None:
        self.runs: list[Run] = []

    def start(self, kind: str, model: Any) -> Run:
        run = Run(kind, tuple(model.task_names), paper_parts.trunk_params(model))
        self.runs.append(run)
        return run

    def step(self, *_: object) -> None:
        if self.runs:
            self.runs[-1].steps += 1

    def scene(self, i: int) -> None:
        if self.runs:
            self.runs[-1].scenes.add(int(i))


class RecordingScenes(TensorSamples):
    recorder: Recorder

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self.recorder.scene(i)
        return super().__getitem__(i)


@pytest.fixture
def garg_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PaperConfig, PartResult, Recorder]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    ckpt = tmp_path / "tiny.pt"
    checkpoint.save(ckpt, build_model("resnet-mtl", input_size=32, widths=[8, 8, 16, 16], head_width=8))
    cfg = PaperConfig(
        ckpt,
        garg_tasks=TASKS,
        garg_criteria=("garg-taylor",),
        iterative=IterativeOptions(
            rounds=ROUNDS, remove_per_round=2, every=EVERY, record_every=1, score_batches=1
        ),
        garg_pretrain_steps=PRE,
        batch_size=8,
        n_train=16,
        n_val=8,
        seeds=(0,),
    )
    rec = Recorder()
    real_scenes, real_retrain, real_prune = (
        paper_parts.synthetic_scenes,
        paper_parts.retrain,
        paper_parts.iterative_prune,
    )

    def scenes(n: int, seed: int, *args: Any) -> TensorSamples:
        data = real_scenes(n, seed, *args)
        if n != cfg.n_train:
            return data
        out = RecordingScenes(data.tensors)
        out.recorder = rec
        return out

    def retrain(architecture: Any, *args: Any, **kw: Any) -> Any:
        rec.start("scratch", architecture)
        return real_retrain(architecture, *args, **kw)

    def iterative_prune(model: Any, *args: Any, **kw: Any) -> Any:
        run = rec.start("iterative", model)
        return real_prune(model, *args, on_round=lambda *_: run.steps_at_cut.append(run.steps), **kw)

    monkeypatch.setattr(paper_parts, "synthetic_scenes", scenes)
    monkeypatch.setattr(paper_parts, "retrain", retrain)
    monkeypatch.setattr(paper_parts, "iterative_prune", iterative_prune)
    handle = register_optimizer_step_post_hook(rec.step)
    try:
        bench = Bench(cfg, 0)
        paper_parts.garg(bench, "garg-taylor", lambda *a, **k: None)
    finally:
        handle.remove()
    return cfg, bench.result, rec


def test_both_garg_arms_get_the_same_scenes_and_the_same_optimiser_steps(garg_run) -> None:
    cfg, result, rec = garg_run
    dense, iterative, *scratch = rec.runs
    assert (dense.kind, iterative.kind) == ("scratch", "iterative") and dense.tasks == TASKS
    assert dense.steps == PRE and iterative.steps == (ROUNDS + 1) * EVERY  # counted, not configured
    # When each architecture was recorded, the iterative arm had trained: the dense model's steps plus the
    # intervals so far (the last one after the final cut).
    counted = [PRE + s for s in [*iterative.steps_at_cut, iterative.steps]][1:]
    rows = result.garg_rows
    assert [r.round for r in rows] == [1, 2] and [r.steps_iterative for r in rows] == counted
    retrained = [run for run in scratch if run.tasks == TASKS]
    assert len(retrained) == len(rows)
    for row, run in zip(rows, retrained, strict=True):
        assert run.steps == row.steps_retrained == row.steps_iterative  # the optimiser's own count
        assert run.trunk_params < dense.trunk_params  # the recorded, pruned architecture
        assert row.scenes == cfg.n_train
    everything = set(range(cfg.n_train))
    assert dense.scenes | iterative.scenes == everything  # the iterative arm's budget: these scenes ...
    assert all(run.scenes == everything for run in scratch)  # ... and so is every from-scratch one's
    assert result.garg_dense[0].steps == PRE and result.garg_dense[0].scenes == cfg.n_train


def test_each_task_alone_on_the_most_pruned_architecture_has_its_trunk_and_budget(garg_run) -> None:
    cfg, result, rec = garg_run
    last = result.garg_rows[-1]
    singles = result.single_rows
    assert [s.task for s in singles] == list(TASKS)
    single_runs = [run for run in rec.runs if run.kind == "scratch" and len(run.tasks) == 1]
    assert [run.tasks for run in single_runs] == [(t,) for t in TASKS]
    for s, run in zip(singles, single_runs, strict=True):
        assert s.round == last.round and s.multi_size == last.size
        assert s.trunk_params == s.multi_trunk_params == run.trunk_params  # the same trunk, the same width
        assert s.size.params < s.multi_size.params  # one head instead of two
        assert run.steps == s.steps == last.steps_retrained and s.scenes == cfg.n_train
        assert run.scenes == set(range(cfg.n_train))
        assert set(s.metrics) == {s.task}


def _row(seed: int, dm_it: float, dm_re: float, steps: int = 500) -> GargRow:
    return GargRow(seed, "a", 8, 80, 160, Size(0, 100_000), {}, dm_it, {}, dm_re, steps, steps, 1024)


def _single(seed: int, task: str, dm: float, dm_multi: float) -> SingleTaskRow:
    return SingleTaskRow(
        seed,
        "a",
        8,
        task,
        500,
        1024,
        Size(0, 60_000),
        50_000,
        Size(0, 100_000),
        50_000,
        {},
        dm,
        dm_multi,
        -9.0,
    )


def test_the_garg_findings_state_the_budget_and_the_single_task_models() -> None:
    # Per seed, retrained vs iterative: +10, +12, +9 pp (clearly ahead); per task, multi-task vs single-task:
    # seg +25, +26, +23 pp (clearly ahead), depth +1, -2, +1 pp (no difference).
    rows = [_row(s, it, re) for s, (it, re) in enumerate([(-20, -10), (-21, -9), (-19, -10)])]
    seg = [(-30, -5), (-29, -3), (-27, -4)]
    depth = [(-5, -4), (-4, -6), (-6, -5)]
    singles = [_single(s, "seg", single, multi) for s, (single, multi) in enumerate(seg)]
    singles += [_single(s, "depth", single, multi) for s, (single, multi) in enumerate(depth)]
    text = " ".join(garg_findings(rows, ("a",), singles))
    assert (
        "Finding 2 (at extreme pruning the same architecture retrained from scratch beats iterative " in text
    )
    assert (
        "**holds**" in text
        and "both arms 500 steps on 1024 scenes" in text
        and "(retrained ahead by +10.33 pp" in text
    )
    assert "Single-task models of the same size" in text and "trunk 50.0k params" in text
    assert "seg -4.0 ± 1.0 vs -28.7 ± 1.5 % (multi-task ahead by +24.67 pp" in text
    assert "depth -5.0 ± 1.0 vs -5.0 ± 1.0 % (no difference (p = 1.00, n = 3))" in text
    assert "within the seeds' spread" not in text  # the decision rule is paper_stats', stated once elsewhere


def test_rows_saved_before_equal_training_are_refused_in_one_sentence(tmp_path: Path) -> None:
    from edgecut.errors import ConfigError
    from edgecut_bench import paper, saved_rows
    from edgecut_bench.paper_rows import Guard, MaskLatency, PaperResult

    res = PaperResult(
        PaperConfig(Path("m.pt")), 64, {}, {}, [], MaskLatency(("seg",), 0.9, 1.0, 1.0), Guard("seg", 0.9, 0.1, 0.0),
        1.0, [], [], [], 0, {"total": 1.0}, 2,
    )  # fmt: skip
    del res.single_rows  # as an older run's pickle comes back: without the field
    saved_rows.save(res, tmp_path / "old.pkl")
    with pytest.raises(ConfigError, match=r"from before Garg's arms were trained alike: rerun"):
        paper.load_rows(tmp_path / "old.pkl")
