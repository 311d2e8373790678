"""`edgecut bench paper`: the seed papers' experiments on edgecut's reference model, in one run.

1. CUT's unstructured table: per-weight masks from MASK_METHODS (random, magnitude, SNIP at init,
   DiSparse union, CUT vote with labelled and label-free scores) at several sparsities, each
   fine-tuned with the same recipe, for several selected task sets; plus the ORT latency of a masked
   model vs. the dense one, and the 1-task guard of the vote.
2. The same methods' scores summed per output channel and applied as whole channels removed
   (params, MACs, ORT latency), plus edgecut's default channel method.
3. Garg et al.: iterative Taylor and CosPrune pruning during training, and the same architectures
   re-initialised and retrained from scratch for a matched number of steps.
The markdown, the plot and the "what we learned" paragraph are in paper_report.py.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from edgecut.server.cut.importance import ScoreInputs, TaskScores, detach_all, score
from edgecut.server.cut.iterative import IterativeOptions, iterative_prune, retrain
from edgecut.server.cut.latency import model_latency_ms
from edgecut.server.cut.masks import (
    ElementScores,
    Layout,
    apply_masks,
    channel_scores,
    make_permanent,
    masks_at_sparsity,
    per_task_keeps,
    score_elements,
    vote_keeps,
)
from edgecut.server.cut.methods import DEFAULT_METHOD, MASK_METHODS, METHODS
from edgecut.server.cut.objective import Objective, Target
from edgecut.server.cut.prune import ChannelPruner, Size, measure
from edgecut.server.cut.prune import Target as SizeTarget
from edgecut.server.cut.recover import RecoveryOptions, recalibrate_batchnorm, recover
from edgecut.server.cut.tailor import decompose
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, TensorSamples, batches, synthetic_scenes
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.progress import progress_bar

DEFAULT_ROW = "edgecut-default"
Advance = Callable[..., None]


def _default_iterative() -> IterativeOptions:
    # Published: AdamW 5e-5, 100 filters every 500 iterations on VGG-16's 4224; scaled to this trunk.
    return IterativeOptions(rounds=16, remove_per_round=24, every=25, record_every=4, lr=5e-4)


@dataclass(frozen=True)
class PaperConfig:
    checkpoint: Path
    task_sets: tuple[tuple[str, ...], ...] = (
        ("seg", "depth"),
        ("seg", "normals"),
        ("seg", "depth", "normals"),
    )
    sparsities: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    mask_methods: tuple[str, ...] = tuple(MASK_METHODS)
    structured_tasks: tuple[str, ...] = ("seg", "depth")
    levels: tuple[float, ...] = (0.3, 0.5, 0.7)  # share of the selected-task model's params removed
    garg_tasks: tuple[str, ...] = ("seg", "depth", "normals")
    garg_criteria: tuple[str, ...] = ("garg-taylor", "cosprune")
    calib_batches: int = 8  # the papers use 50
    batch_size: int = 16
    ft_steps: int = 100  # CUT: ~1000 at lr 1e-5
    ft_lr: float = 1e-4
    iterative: IterativeOptions = field(default_factory=_default_iterative)
    retrain_lr: float = 2e-3  # the reference model's own training rate
    n_train: int = 1024
    n_val: int = 200
    guard_task: str = "seg"
    guard_sparsity: float = 0.9
    latency_runs: int = 60
    cache_dir: Path | None = None
    seed: int = 0

    def fine_tune(self) -> RecoveryOptions:
        """CUT's recipe (Adam, weight decay 1e-4, constant lr, labelled losses), scaled in steps and lr."""
        return replace(
            RecoveryOptions.cut_paper(self.ft_steps),
            lr=self.ft_lr,
            batch_size=self.batch_size,
            seed=self.seed,
        )


def quick(cfg: PaperConfig) -> PaperConfig:
    """Every table on tiny settings: a smoke test of the whole pipeline (numbers are meaningless)."""
    return replace(
        cfg,
        task_sets=(("seg", "depth"),),
        sparsities=(0.5, 0.9),
        levels=(0.5,),
        garg_tasks=("seg", "depth"),
        calib_batches=1,
        ft_steps=2,
        iterative=IterativeOptions(
            rounds=2, remove_per_round=4, every=2, record_every=1, score_batches=1, lr=5e-4
        ),
        n_train=48,
        n_val=32,
        latency_runs=5,
    )


@dataclass
class Evaluated:
    before: Metrics  # right after pruning (structured: after BatchNorm re-estimation)
    dm_before: float
    after: Metrics  # after the fine-tune
    dm_after: float


@dataclass
class MaskRow:
    tasks: tuple[str, ...]
    method: str
    target: float
    sparsity: float
    keep_ratio: float
    trunk_kept: float
    result: Evaluated


@dataclass
class ChannelRow:
    method: str
    level: float
    size: Size
    latency_ms: float
    result: Evaluated


@dataclass
class GargRow:
    criterion: str
    round: int
    filters_removed: int
    size: Size
    iterative: Metrics
    dm_iterative: float
    retrained: Metrics
    dm_retrained: float


@dataclass
class Guard:
    task: str
    sparsity: float
    trunk_kept_guarded: float  # v = min(2, 1) = 1
    trunk_kept_published: float  # v = 2, no guard


@dataclass
class MaskLatency:
    tasks: tuple[str, ...]
    sparsity: float
    dense_ms: float
    masked_ms: float


@dataclass
class PaperResult:
    cfg: PaperConfig
    image_size: int
    full: dict[tuple[str, ...], Metrics]  # the original model's metrics, per task set
    sizes: dict[tuple[str, ...], Size]  # the selected-task (decomposed) model's size
    mask_rows: list[MaskRow]
    mask_latency: MaskLatency
    guard: Guard
    dense_latency_ms: float
    channel_rows: list[ChannelRow]
    garg_rows: list[GargRow]
    garg_steps: int
    seconds: dict[str, float]


class _Bench:
    """Shared state of one run: the base model, data, calibration batches and cached scores."""

    def __init__(self, cfg: PaperConfig, show_progress: bool) -> None:
        self.cfg = cfg
        self.show = show_progress
        self.base = checkpoint.load(cfg.checkpoint)
        size = self.base.input_size
        self.train: TensorSamples = synthetic_scenes(cfg.n_train, 7, size, cfg.cache_dir, show_progress)
        self.val: TensorSamples = synthetic_scenes(cfg.n_val, 1000, size, cfg.cache_dir, show_progress)
        self.calib: list[Batch] = list(
            itertools.islice(batches(self.train, cfg.batch_size), cfg.calib_batches)
        )
        self._scores: dict[tuple[tuple[str, ...], str, Target], ElementScores] = {}
        self.full: dict[tuple[str, ...], Metrics] = {}
        self.sizes: dict[tuple[str, ...], Size] = {}

    def teacher(self, tasks: tuple[str, ...]) -> MultiTaskModel:
        t = decompose(self.base, tasks)
        if tasks not in self.full:
            self.full[tasks] = evaluate(t, t.task_specs, self.val)
            self.sizes[tasks] = measure(t, t.input_size)
        return t

    def element_scores(self, teacher: MultiTaskModel, criterion: str, target: Target) -> ElementScores:
        key = (tuple(teacher.task_names), criterion, target)
        if key not in self._scores:
            obj = Objective(teacher.task_specs, target, seed=self.cfg.seed)
            self._scores[key] = score_elements(
                criterion, ScoreInputs(teacher, self.calib, obj, self.cfg.seed)
            )
        return self._scores[key]

    def evaluated(self, model: MultiTaskModel, tasks: tuple[str, ...]) -> Evaluated:
        specs, full = model.task_specs, self.full[tasks]
        before = evaluate(model, specs, self.val)
        recover(model, None, self.train, self.cfg.fine_tune())
        after = evaluate(model, specs, self.val)
        return Evaluated(before, delta_m(before, full, specs), after, delta_m(after, full, specs))


def unstructured(bench: _Bench, advance: Advance) -> tuple[list[MaskRow], MaskLatency]:
    cfg, rows = bench.cfg, []
    latency: MaskLatency | None = None
    for tasks in cfg.task_sets:
        teacher = bench.teacher(tasks)
        for name in cfg.mask_methods:
            m = MASK_METHODS[name]
            scores = bench.element_scores(teacher, m.criterion, m.target)
            rule = "vote" if m.fusion == "global" else m.fusion
            for s in cfg.sparsities:
                student = copy.deepcopy(teacher)
                ms = masks_at_sparsity(scores, student, s, rule)
                apply_masks(student, ms.masks)
                rows.append(
                    MaskRow(
                        tasks,
                        name,
                        s,
                        ms.sparsity,
                        ms.keep_ratio,
                        ms.trunk_kept,
                        bench.evaluated(student, tasks),
                    )
                )
                advance(1, table="unstructured", method=name, sparsity=f"{s:.0%}")
                if latency is None and name == "cut" and s == max(cfg.sparsities):
                    latency = _mask_latency(tasks, ms.sparsity, teacher, student, cfg.latency_runs)
    if latency is None:  # "cut" not among the methods: measure a CUT-masked copy anyway
        tasks = cfg.task_sets[0]
        teacher = bench.teacher(tasks)
        student = copy.deepcopy(teacher)
        ms = masks_at_sparsity(bench.element_scores(teacher, "snip", "labels"), student, max(cfg.sparsities))
        apply_masks(student, ms.masks)
        latency = _mask_latency(tasks, ms.sparsity, teacher, student, cfg.latency_runs)
    return rows, latency


def _mask_latency(
    tasks: tuple[str, ...], sparsity: float, dense: MultiTaskModel, masked: MultiTaskModel, runs: int
) -> MaskLatency:
    """ORT latency of the dense model and of the masked one with its zeros folded into the weights."""
    make_permanent(masked)
    return MaskLatency(tasks, sparsity, model_latency_ms(dense, runs), model_latency_ms(masked, runs))


def guard(bench: _Bench) -> Guard:
    """CUT's vote on a single selected task: the guarded v = 1 vs. the published v = 2."""
    cfg = bench.cfg
    teacher = bench.teacher((cfg.guard_task,))
    scores = bench.element_scores(teacher, "snip", "labels")
    guarded = masks_at_sparsity(scores, teacher, cfg.guard_sparsity, "vote", calibrate=False)
    layout = Layout(teacher)
    published = vote_keeps(per_task_keeps(scores, layout, 1 - cfg.guard_sparsity), layout, v=2)
    return Guard(
        cfg.guard_task, cfg.guard_sparsity, guarded.trunk_kept, float(published[layout.trunk].float().mean())
    )


def _rekey(scores: TaskScores, src: nn.Module, dst: nn.Module) -> TaskScores:
    """Scores keyed by `src`'s modules -> the same-named modules of `dst` (a copy of `src`)."""
    name = {m: n for n, m in src.named_modules()}
    mods = dict(dst.named_modules())
    return {t: {mods[name[m]]: s for m, s in per.items()} for t, per in scores.items()}


def structured(bench: _Bench, advance: Advance) -> tuple[list[ChannelRow], float]:
    cfg, rows = bench.cfg, []
    tasks = cfg.structured_tasks
    teacher = bench.teacher(tasks)
    selected = bench.sizes[tasks]
    dense_ms = model_latency_ms(teacher, cfg.latency_runs)
    default = METHODS[DEFAULT_METHOD]
    default_scores = detach_all(
        score(
            default.criterion,
            ScoreInputs(
                teacher, bench.calib, Objective(teacher.task_specs, default.target, seed=cfg.seed), cfg.seed
            ),
        )
    )
    for name in (*cfg.mask_methods, DEFAULT_ROW):
        for level in cfg.levels:
            student = copy.deepcopy(teacher)
            if name == DEFAULT_ROW:
                scores, rule, min_channels = (
                    _rekey(default_scores, teacher, student),
                    default.fusion,
                    default.min_channels,
                )
            else:
                m = MASK_METHODS[name]
                scores = channel_scores(bench.element_scores(teacher, m.criterion, m.target), student)
                rule = "mean" if m.fusion == "global" else m.fusion
                min_channels = m.min_channels
            pruner = ChannelPruner(student, min_channels=min_channels)
            size = pruner.prune_to(scores, rule, SizeTarget(max_params=int((1 - level) * selected.params)))
            recalibrate_batchnorm(student, bench.train, 8, cfg.batch_size)
            latency = model_latency_ms(student, cfg.latency_runs)
            rows.append(ChannelRow(name, level, size, latency, bench.evaluated(student, tasks)))
            advance(1, table="structured", method=name, level=f"{level:.0%}")
    return rows, dense_ms


def garg(bench: _Bench, advance: Advance) -> tuple[list[GargRow], int]:
    cfg, rows = bench.cfg, []
    tasks = cfg.garg_tasks
    teacher = bench.teacher(tasks)
    full, specs = bench.full[tasks], teacher.task_specs
    steps = cfg.iterative.steps
    for criterion in cfg.garg_criteria:
        opts = replace(cfg.iterative, criterion=criterion, batch_size=cfg.batch_size, seed=cfg.seed)
        res = iterative_prune(copy.deepcopy(teacher), bench.train, bench.val, opts)
        for p in res.points[1:]:
            _, metrics = retrain(
                p.architecture, bench.train, bench.val, steps, cfg.retrain_lr, cfg.batch_size, cfg.seed
            )
            rows.append(
                GargRow(
                    criterion,
                    p.round,
                    p.filters_removed,
                    p.size,
                    p.metrics,
                    delta_m(p.metrics, full, specs),
                    metrics,
                    delta_m(metrics, full, specs),
                )
            )
            advance(1, table="garg", criterion=criterion, round=p.round)
    return rows, steps


def run(cfg: PaperConfig, show_progress: bool = True) -> PaperResult:
    torch.manual_seed(cfg.seed)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    bench = _Bench(cfg, show_progress)
    n_garg = len(cfg.garg_criteria) * -(-cfg.iterative.rounds // cfg.iterative.record_every)
    total = len(cfg.task_sets) * len(cfg.mask_methods) * len(cfg.sparsities)
    total += (len(cfg.mask_methods) + 1) * len(cfg.levels) + n_garg
    with progress_bar("bench paper", total=total, enabled=show_progress) as advance:
        t = time.perf_counter()
        mask_rows, mask_latency = unstructured(bench, advance)
        guard_result = guard(bench)
        seconds["unstructured"] = time.perf_counter() - t
        t = time.perf_counter()
        channel_rows, dense_ms = structured(bench, advance)
        seconds["structured"] = time.perf_counter() - t
        t = time.perf_counter()
        garg_rows, garg_steps = garg(bench, advance)
        seconds["garg"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return PaperResult(
        cfg,
        bench.base.input_size,
        bench.full,
        bench.sizes,
        mask_rows,
        mask_latency,
        guard_result,
        dense_ms,
        channel_rows,
        garg_rows,
        garg_steps,
        seconds,
    )
