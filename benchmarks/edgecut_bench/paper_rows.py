"""The configuration and the measured rows of `edgecut bench paper` (one row per seed)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from edgecut.server.cut.importance import BatchNormMode
from edgecut.server.cut.iterative import IterativeOptions
from edgecut.server.cut.methods import MASK_METHODS
from edgecut.server.cut.prune import Size
from edgecut.server.cut.recover import RecoveryOptions
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.evaluate import Metrics


def _default_iterative() -> IterativeOptions:
    # Published: AdamW 5e-5, 100 filters every 500 iterations on VGG-16's 4224; scaled to this trunk and
    # to a run in which every arm trains from scratch (see PaperConfig.garg_pretrain_steps): 255 steps.
    return IterativeOptions(
        rounds=16, remove_per_round=24, every=15, record_every=4, score_batches=4, lr=5e-4
    )


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
    scoring_batchnorm: BatchNormMode = "train"  # the CUT / DiSparse code scores with the net in train mode
    ft_steps: int = 50  # CUT: ~1000 at lr 1e-5; 50 fits 3 seeds of every table in 90 min on 2 cores
    ft_lr: float = 1e-4
    iterative: IterativeOptions = field(default_factory=_default_iterative)
    retrain_lr: float = 2e-3  # the reference model's own training rate
    # Garg with equal training: the dense model the iterative arm prunes is trained from scratch here for
    # this many steps on the n_train scenes, and every retrained (and single-task) model gets these steps
    # plus the iterative steps before its architecture was recorded, on the same scenes. The packaged
    # model's own training is far longer; retraining every arm for it would take hours per seed.
    garg_pretrain_steps: int = 255
    n_train: int = 1024
    n_val: int = 200
    guard_task: str = "seg"
    guard_sparsity: float = 0.9
    kept_tasks: tuple[str, ...] = ("seg", "depth")  # where the kept share per layer is logged
    kept_sparsities: tuple[float, ...] = (0.7, 0.9)
    kept_methods: tuple[str, ...] = ("magnitude", "cut", "snip-union", "disparse-pt")
    latency_runs: int = 60
    cache_dir: Path | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    workers: int = 2  # processes, one torch thread each

    def fine_tune(self, seed: int) -> RecoveryOptions:
        """CUT's recipe (Adam, weight decay 1e-4, constant lr, ESCM's task weights), scaled in steps and lr."""
        return replace(
            RecoveryOptions.cut_paper(self.ft_steps), lr=self.ft_lr, batch_size=self.batch_size, seed=seed
        )


def quick(cfg: PaperConfig) -> PaperConfig:
    """Every table on tiny settings, two seeds: a smoke test of the whole pipeline (numbers are meaningless)."""
    return replace(
        cfg,
        task_sets=(("seg", "depth"),),
        sparsities=(0.7, 0.9),
        levels=(0.5,),
        garg_tasks=("seg", "depth"),
        calib_batches=1,
        ft_steps=2,
        iterative=IterativeOptions(
            rounds=2, remove_per_round=4, every=2, record_every=1, score_batches=1, lr=5e-4
        ),
        garg_pretrain_steps=4,
        n_train=48,
        n_val=32,
        latency_runs=5,
        seeds=(0, 1),
    )


@dataclass
class Evaluated:
    before: Metrics  # right after pruning (structured: after BatchNorm re-estimation)
    dm_before: float
    after: Metrics  # after the fine-tune
    dm_after: float


@dataclass
class MaskRow:
    seed: int
    tasks: tuple[str, ...]
    method: str
    target: float  # the nominal sparsity
    sparsity: float  # the measured one
    keep_ratio: float
    trunk_kept: float
    result: Evaluated


@dataclass
class ChannelRow:
    seed: int
    method: str
    level: float
    size: Size
    latency_ms: float
    result: Evaluated
    model: MultiTaskModel | None = field(default=None, repr=False)  # until its latency is measured


@dataclass
class GargRow:
    """One recorded architecture of one criterion's iterative run and its re-initialised, retrained copy;
    Δm against the seed's dense model (GargDense). Both arms' training budget is explicit: optimiser steps
    (the iterative arm's count includes the dense pre-training it started from) on `scenes` scenes."""

    seed: int
    criterion: str
    round: int
    channels_removed: int
    filters_removed: int
    size: Size
    iterative: Metrics
    dm_iterative: float
    retrained: Metrics
    dm_retrained: float
    steps_iterative: int
    steps_retrained: int
    scenes: int


@dataclass
class GargDense:
    """The dense model both Garg arms' budgets start from: trained from scratch for `steps` on `scenes`."""

    seed: int
    steps: int
    scenes: int
    size: Size
    metrics: Metrics


@dataclass
class SingleTaskRow:
    """One task alone on a criterion's most pruned architecture (the same trunk, that task's head only),
    re-initialised and trained with the same budget as the multi-task arms; Δm of that task only, against
    the seed's dense model, beside the multi-task model's on the same task."""

    seed: int
    criterion: str
    round: int
    task: str
    steps: int
    scenes: int
    size: Size  # the single-task model (trunk + one head)
    trunk_params: int
    multi_size: Size  # the multi-task architecture it was cut from (trunk + every head)
    multi_trunk_params: int
    metrics: Metrics
    dm: float
    dm_multi_retrained: float
    dm_multi_iterative: float


@dataclass
class KeptShare:
    """Share of each layer's weights a mask keeps (by module name), fused and per task's own keep."""

    seed: int
    method: str
    sparsity: float
    fused: dict[str, float]
    per_task: dict[str, dict[str, float]]
    sizes: dict[str, int]


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
class PartResult:
    """What one part of one seed measured; paper.run merges them."""

    full: dict[tuple[str, ...], Metrics] = field(default_factory=dict)
    sizes: dict[tuple[str, ...], Size] = field(default_factory=dict)
    mask_rows: list[MaskRow] = field(default_factory=list)
    channel_rows: list[ChannelRow] = field(default_factory=list)
    garg_rows: list[GargRow] = field(default_factory=list)
    garg_dense: list[GargDense] = field(default_factory=list)
    single_rows: list[SingleTaskRow] = field(default_factory=list)
    kept: list[KeptShare] = field(default_factory=list)
    guard: Guard | None = None
    masked_model: tuple[tuple[str, ...], float, MultiTaskModel] | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # per part, this process's time


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
    kept: list[KeptShare]
    garg_steps: int
    seconds: dict[str, float]  # "total" = wall clock; the parts = summed worker time
    workers: int
    garg_dense: list[GargDense] = field(default_factory=list)  # one per seed and criterion (the same model)
    single_rows: list[SingleTaskRow] = field(default_factory=list)
