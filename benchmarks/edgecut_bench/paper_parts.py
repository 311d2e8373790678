"""The experiments of `edgecut bench paper`, one seed and one part at a time (paper.py runs the parts,
in worker processes when asked): CUT's unstructured table (and the per-layer kept shares), the
structured channel table, and one Garg criterion's iterative run with its retrained architectures and
single-task models, all on one training budget."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from edgecut.server.cut.importance import ScoreInputs, TaskScores, detach_all, group_combine, score
from edgecut.server.cut.iterative import iterative_prune, retrain
from edgecut.server.cut.masks import (
    ElementScores,
    Layout,
    apply_masks,
    channel_scores,
    kept_shares,
    make_permanent,
    masks_at_sparsity,
    papers_keep,
    per_task_keeps,
    score_elements,
    vote_keeps,
)
from edgecut.server.cut.methods import DEFAULT_METHOD, MASK_METHODS, METHODS, Method
from edgecut.server.cut.objective import Objective
from edgecut.server.cut.prune import ChannelPruner, measure
from edgecut.server.cut.prune import Target as SizeTarget
from edgecut.server.cut.recover import recalibrate_batchnorm, recover
from edgecut.server.cut.tailor import decompose
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, TensorSamples, batches, synthetic_scenes
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.mtl.metrics import delta_m
from edgecut_bench.paper_rows import (
    ChannelRow,
    Evaluated,
    GargDense,
    GargRow,
    Guard,
    KeptShare,
    MaskRow,
    PaperConfig,
    PartResult,
    SingleTaskRow,
)

DEFAULT_ROW = "edgecut-default"
Advance = Callable[..., None]


class Bench:
    """One seed's shared state: the base model, data, calibration batches and cached scores."""

    def __init__(self, cfg: PaperConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.base = checkpoint.load(cfg.checkpoint)
        size = self.base.input_size
        self.train: TensorSamples = synthetic_scenes(cfg.n_train, 7, size, cfg.cache_dir, False)
        self.val: TensorSamples = synthetic_scenes(cfg.n_val, 1000, size, cfg.cache_dir, False)
        # The seed picks the calibration batches (and every fine-tune's order, init and projections).
        self.calib: list[Batch] = list(
            itertools.islice(batches(self.train, cfg.batch_size, shuffle=True, seed=seed), cfg.calib_batches)
        )
        self._scores: dict[tuple[tuple[str, ...], str], ElementScores] = {}
        self.result = PartResult()

    def teacher(self, tasks: tuple[str, ...]) -> MultiTaskModel:
        t = decompose(self.base, tasks)
        if tasks not in self.result.full:
            self.result.full[tasks] = evaluate(t, t.task_specs, self.val)
            self.result.sizes[tasks] = measure(t, t.input_size)
        return t

    def element_scores(self, teacher: MultiTaskModel, method: Method) -> ElementScores:
        key = (tuple(teacher.task_names), f"{method.criterion}/{method.target}/{method.order}")
        if key not in self._scores:
            obj = Objective(teacher.task_specs, method.target, seed=self.seed, order=method.order)
            inp = ScoreInputs(teacher, self.calib, obj, self.seed, self.cfg.scoring_batchnorm)
            self._scores[key] = score_elements(method.criterion, inp)
        return self._scores[key]

    def evaluated(self, model: MultiTaskModel, tasks: tuple[str, ...]) -> Evaluated:
        specs, full = model.task_specs, self.result.full[tasks]
        before = evaluate(model, specs, self.val)
        recover(model, None, self.train, self.cfg.fine_tune(self.seed))
        after = evaluate(model, specs, self.val)
        return Evaluated(before, delta_m(before, full, specs), after, delta_m(after, full, specs))


def unstructured(bench: Bench, tasks: tuple[str, ...], advance: Advance) -> None:
    """CUT's table for one task set: every mask method at every sparsity, fine-tuned alike."""
    cfg, out = bench.cfg, bench.result
    teacher = bench.teacher(tasks)
    for name in cfg.mask_methods:
        m = MASK_METHODS[name]
        scores = bench.element_scores(teacher, m)
        rule = "vote" if m.fusion == "global" else m.fusion
        for s in cfg.sparsities:
            student = copy.deepcopy(teacher)
            papers = m.protocol == "papers"
            ms = masks_at_sparsity(
                scores, student, s, rule, calibrate=not papers, keep=papers_keep(s) if papers else None
            )
            apply_masks(student, ms.masks)
            if tasks == cfg.kept_tasks and name in cfg.kept_methods and s in cfg.kept_sparsities:
                out.kept.append(_kept(bench.seed, name, s, scores, student, ms.masks, ms.keep_ratio))
            result = bench.evaluated(student, tasks)
            out.mask_rows.append(
                MaskRow(bench.seed, tasks, name, s, ms.sparsity, ms.keep_ratio, ms.trunk_kept, result)
            )
            if (
                name == "cut"
                and s == max(cfg.sparsities)
                and tasks == cfg.task_sets[0]
                and bench.seed == cfg.seeds[0]
            ):
                make_permanent(student)
                out.masked_model = (tasks, ms.sparsity, student)
            advance(1, seed=bench.seed, table="unstructured", method=name, sparsity=f"{s:.0%}")


def _kept(
    seed: int,
    method: str,
    sparsity: float,
    scores: ElementScores,
    model: MultiTaskModel,
    masks: dict[str, torch.Tensor],
    rho: float,
) -> KeptShare:
    """The fused mask's kept share per layer and, for per-task scores, each task's own keep there."""
    layout = Layout(model)
    per_task = {}
    if all(t in scores for t in layout.tasks) and not math.isnan(rho):  # per-task scores, a keep ratio
        for t, flat in per_task_keeps(scores, layout, rho).items():
            per_task[t] = kept_shares(layout.unflat(flat))
    sizes = {n: int(m.numel()) for n, m in masks.items()}
    return KeptShare(seed, method, sparsity, kept_shares(masks), per_task, sizes)


def guard(bench: Bench) -> Guard:
    """CUT's vote on a single selected task: the guarded v = 1 vs. the published v = 2."""
    cfg = bench.cfg
    teacher = bench.teacher((cfg.guard_task,))
    scores = bench.element_scores(teacher, MASK_METHODS["cut"])
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


def structured(bench: Bench, advance: Advance) -> None:
    """The same scores per output channel on the product path (whole channels removed), plus the default."""
    cfg, out = bench.cfg, bench.result
    tasks = cfg.structured_tasks
    teacher = bench.teacher(tasks)
    selected = out.sizes[tasks]
    default = METHODS[DEFAULT_METHOD]
    obj = Objective(teacher.task_specs, default.target, seed=bench.seed)
    default_scores = detach_all(score(default.criterion, ScoreInputs(teacher, bench.calib, obj, bench.seed)))
    channel_methods = [n for n in cfg.mask_methods if MASK_METHODS[n].protocol == "matched"]
    for name in (*channel_methods, DEFAULT_ROW):
        for level in cfg.levels:
            student = copy.deepcopy(teacher)
            if name == DEFAULT_ROW:
                scores, m = _rekey(default_scores, teacher, student), default
                rule = m.fusion
            else:
                m = MASK_METHODS[name]
                scores = channel_scores(bench.element_scores(teacher, m), student)
                rule = "mean" if m.fusion == "global" else m.fusion
            pruner = ChannelPruner(student, min_channels=m.min_channels, combine=group_combine(m.criterion))
            size = pruner.prune_to(scores, rule, SizeTarget(max_params=int((1 - level) * selected.params)))
            recalibrate_batchnorm(student, bench.train, 8, cfg.batch_size)
            row = ChannelRow(bench.seed, name, level, size, float("nan"), bench.evaluated(student, tasks))
            row.model = student.eval()  # timed by the parent process, alone on the machine
            out.channel_rows.append(row)
            advance(1, seed=bench.seed, table="structured", method=name, level=f"{level:.0%}")


def garg(bench: Bench, criterion: str, advance: Advance) -> None:
    """One criterion's iterative run and its comparisons, every model on the same training budget.

    The dense model is the packaged model's architecture for the Garg tasks, trained from scratch here
    (its packaged weights would give the iterative arm training no other arm gets). The iterative arm
    prunes it while training on; each recorded architecture is re-initialised and trained from scratch
    for as many steps as the iterative arm had when it was recorded (the dense model's steps included),
    on the same scenes; so is each task alone on the most pruned architecture.
    """
    cfg, out = bench.cfg, bench.result
    tasks, scenes, pre = cfg.garg_tasks, len(bench.train), cfg.garg_pretrain_steps
    dense, dense_metrics = _from_scratch(bench, decompose(bench.base, tasks), pre)
    out.garg_dense.append(GargDense(bench.seed, pre, scenes, measure(dense, dense.input_size), dense_metrics))
    specs = dense.task_specs
    advance(1, seed=bench.seed, table="garg", criterion=criterion, round="dense")
    opts = replace(cfg.iterative, criterion=criterion, batch_size=cfg.batch_size, seed=bench.seed)
    res = iterative_prune(dense, bench.train, bench.val, opts)
    for p in res.points[1:]:
        steps = pre + p.steps
        _, metrics = _from_scratch(bench, p.architecture, steps)
        out.garg_rows.append(
            GargRow(
                bench.seed,
                criterion,
                p.round,
                p.channels_removed,
                p.filters_removed,
                p.size,
                p.metrics,
                delta_m(p.metrics, dense_metrics, specs),
                metrics,
                delta_m(metrics, dense_metrics, specs),
                steps,
                steps,
                scenes,
            )
        )
        advance(1, seed=bench.seed, table="garg", criterion=criterion, round=p.round)
    last, row = res.points[-1], out.garg_rows[-1]
    for task in tasks:
        single = last.architecture.select([task])
        _, metrics = _from_scratch(bench, single, row.steps_retrained)

        def dm(m: Metrics, t: str = task) -> float:
            return delta_m({t: m[t]}, dense_metrics, specs)

        out.single_rows.append(
            SingleTaskRow(
                bench.seed,
                criterion,
                last.round,
                task,
                row.steps_retrained,
                scenes,
                measure(single, single.input_size),
                trunk_params(single),
                last.size,
                trunk_params(last.architecture),
                metrics,
                dm(metrics),
                dm(row.retrained),
                dm(row.iterative),
            )
        )
        advance(1, seed=bench.seed, table="garg", criterion=criterion, single=task)


def _from_scratch(bench: Bench, architecture: MultiTaskModel, steps: int) -> tuple[MultiTaskModel, Metrics]:
    """`architecture` re-initialised and trained for `steps` on the bench's training scenes, evaluated."""
    cfg = bench.cfg
    return retrain(architecture, bench.train, bench.val, steps, cfg.retrain_lr, cfg.batch_size, bench.seed)


def trunk_params(model: MultiTaskModel) -> int:
    return sum(p.numel() for p in model.trunk.parameters())
