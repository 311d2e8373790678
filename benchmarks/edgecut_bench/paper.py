"""`edgecut bench paper`: the seed papers' experiments on edgecut's reference model, over several seeds.

1. CUT's unstructured table: per-weight masks from MASK_METHODS at several sparsities, each fine-tuned
   with the same recipe, for several selected task sets; the kept share per layer and per head of some
   methods; the ORT latency of a masked model vs. the dense one, and the 1-task guard of the vote.
2. The same methods' scores summed per output channel and applied as whole channels removed
   (params, MACs, ORT latency), plus edgecut's default channel method.
3. Garg et al.: iterative Taylor and CosPrune pruning during training from a dense model trained here
   from scratch, the same architectures re-initialised and retrained from scratch, and each task alone
   on the most pruned architecture; every model trained with the same steps on the same scenes.

Every part runs once per seed (the seed picks the calibration batches, the fine-tune's order, random
scores, initialisations and projections; the base model and the validation scenes stay fixed). Parts
run in `workers` processes of one torch thread each; latencies are measured afterwards in this
process, with no other part running. The experiments are in paper_parts.py, the rows in
paper_rows.py, the markdown and the plot in paper_report.py.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from edgecut.errors import ConfigError
from edgecut.server.cut.latency import model_latency_ms
from edgecut.server.cut.masks import apply_masks, make_permanent, masks_at_sparsity
from edgecut.server.cut.methods import MASK_METHODS
from edgecut.server.cut.tailor import decompose
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.data import synthetic_scenes
from edgecut.server.progress import progress_bar
from edgecut_bench import saved_rows
from edgecut_bench.paper_parts import DEFAULT_ROW, Bench, garg, guard, structured, unstructured
from edgecut_bench.paper_rows import (
    MaskLatency,
    PaperConfig,
    PaperResult,
    PartResult,
    quick,
)

__all__ = [
    "DEFAULT_ROW",
    "PaperConfig",
    "PaperResult",
    "Part",
    "checkpoint",
    "load_rows",
    "parts",
    "quick",
    "run",
    "save_rows",
]

Kind = Literal["unstructured", "structured", "garg"]
_QUEUE: Any = None  # a worker's progress queue, set by _init_worker


@dataclass(frozen=True)
class Part:
    seed: int
    kind: Kind
    key: tuple[str, ...] = ()  # the task set (unstructured) or the criterion (garg)

    def rows(self, cfg: PaperConfig) -> int:
        if self.kind == "unstructured":
            return len(cfg.mask_methods) * len(cfg.sparsities)
        if self.kind == "structured":
            matched = [n for n in cfg.mask_methods if MASK_METHODS[n].protocol == "matched"]
            return (len(matched) + 1) * len(cfg.levels)
        # the dense model, each recorded architecture, each task alone on the last one
        return 1 + -(-cfg.iterative.rounds // cfg.iterative.record_every) + len(cfg.garg_tasks)


def parts(cfg: PaperConfig) -> list[Part]:
    """Every part of every seed, the longest first so that the workers finish together."""
    out: list[Part] = []
    for seed in cfg.seeds:
        out += [Part(seed, "garg", (c,)) for c in cfg.garg_criteria]
        out += [Part(seed, "unstructured", t) for t in cfg.task_sets]
        out.append(Part(seed, "structured"))
    order = {"garg": 0, "unstructured": 1, "structured": 2}
    return sorted(out, key=lambda p: (order[p.kind], p.seed))


def run_part(cfg: PaperConfig, part: Part, advance: Callable[..., None] | None = None) -> PartResult:
    """One part of one seed, on one torch thread."""
    torch.set_num_threads(1)
    torch.manual_seed(part.seed)
    step = advance or _to_queue
    bench = Bench(cfg, part.seed)
    t = time.perf_counter()
    if part.kind == "unstructured":
        unstructured(bench, part.key, step)
        if part.seed == cfg.seeds[0] and part.key == cfg.task_sets[0]:
            bench.result.guard = guard(bench)
    elif part.kind == "structured":
        structured(bench, step)
    else:
        garg(bench, part.key[0], step)
    bench.result.seconds[part.kind] = time.perf_counter() - t
    return bench.result


def _to_queue(n: float = 1, **fields: object) -> None:
    if _QUEUE is not None:
        _QUEUE.put((n, fields))


def _init_worker(q: Any) -> None:
    global _QUEUE
    _QUEUE = q


def _drain(q: Any, advance: Callable[..., None]) -> None:
    while True:
        try:
            n, fields = q.get_nowait()
        except queue_mod.Empty:
            return
        advance(n, **fields)


def _in_process(cfg: PaperConfig, todo: list[Part], advance: Callable[..., None]) -> list[PartResult]:
    return [run_part(cfg, p, advance) for p in todo]


def _in_workers(cfg: PaperConfig, todo: list[Part], advance: Callable[..., None]) -> list[PartResult]:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that already runs torch threads
    q = ctx.Queue()
    with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker, initargs=(q,)) as pool:
        futures = [pool.submit(run_part, cfg, p) for p in todo]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            _drain(q, advance)
        _drain(q, advance)
        return [f.result() for f in futures]


def run(cfg: PaperConfig, show_progress: bool = True) -> PaperResult:
    t0 = time.perf_counter()
    base = checkpoint.load(cfg.checkpoint)
    size = base.input_size
    # Rendered (and cached) once here, so that every part only loads them.
    synthetic_scenes(cfg.n_train, 7, size, cfg.cache_dir, show_progress)
    synthetic_scenes(cfg.n_val, 1000, size, cfg.cache_dir, show_progress)
    todo = parts(cfg)
    total = sum(p.rows(cfg) for p in todo)
    threads = torch.get_num_threads()
    with progress_bar(f"bench paper ({len(cfg.seeds)} seeds)", total=total, enabled=show_progress) as advance:
        run_all = _in_workers if cfg.workers > 1 else _in_process
        results = run_all(cfg, todo, advance)
    torch.set_num_threads(threads)
    merged = _merge(results)
    t = time.perf_counter()
    latency, dense_ms = _latencies(cfg, merged)
    merged.seconds["latency"] = time.perf_counter() - t
    merged.seconds["total"] = time.perf_counter() - t0
    assert merged.guard is not None  # the first seed's first unstructured part measures it
    return PaperResult(
        cfg,
        size,
        merged.full,
        merged.sizes,
        merged.mask_rows,
        latency,
        merged.guard,
        dense_ms,
        merged.channel_rows,
        merged.garg_rows,
        merged.kept,
        cfg.iterative.steps,
        merged.seconds,
        max(1, cfg.workers),
        merged.garg_dense,
        merged.single_rows,
    )


def _merge(results: list[PartResult]) -> PartResult:
    out = PartResult()
    for r in results:
        out.full.update(r.full)
        out.sizes.update(r.sizes)
        out.mask_rows += r.mask_rows
        out.channel_rows += r.channel_rows
        out.garg_rows += r.garg_rows
        out.garg_dense += r.garg_dense
        out.single_rows += r.single_rows
        out.kept += r.kept
        out.guard = out.guard or r.guard
        out.masked_model = out.masked_model or r.masked_model
        for k, v in r.seconds.items():
            out.seconds[k] = out.seconds.get(k, 0.0) + v
    return out


def _latencies(cfg: PaperConfig, merged: PartResult) -> tuple[MaskLatency, float]:
    """ORT latencies, measured one model at a time with no part running alongside."""
    base = checkpoint.load(cfg.checkpoint)
    if merged.masked_model is None:  # "cut" not among the methods: mask a copy with CUT's scores
        tasks = cfg.task_sets[0]
        bench = Bench(cfg, cfg.seeds[0])
        teacher = bench.teacher(tasks)
        ms = masks_at_sparsity(
            bench.element_scores(teacher, MASK_METHODS["cut"]), teacher, max(cfg.sparsities)
        )
        apply_masks(teacher, ms.masks)
        make_permanent(teacher)
        merged.masked_model = (tasks, ms.sparsity, teacher)
    tasks, sparsity, masked = merged.masked_model
    mask_latency = MaskLatency(
        tasks,
        sparsity,
        model_latency_ms(decompose(base, tasks), cfg.latency_runs),
        model_latency_ms(masked, cfg.latency_runs),
    )
    for row in merged.channel_rows:
        if row.model is not None:
            row.latency_ms = model_latency_ms(row.model, cfg.latency_runs)
            row.model = None
    return mask_latency, model_latency_ms(decompose(base, cfg.structured_tasks), cfg.latency_runs)


def save_rows(res: PaperResult, path: Path) -> None:
    saved_rows.save(res, path)


def load_rows(path: Path) -> PaperResult:
    res = saved_rows.load(path, PaperResult, "bench paper rows")
    if not hasattr(res, "single_rows") or not all(hasattr(r, "steps_retrained") for r in res.garg_rows):
        raise ConfigError(
            f"{path} holds bench paper rows from before Garg's arms were trained alike: rerun `edgecut bench paper`"
        )
    return res
