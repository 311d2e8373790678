"""`edgecut bench prune`: CUT against the baselines on one model, one task pair, one data set, one run.

Rows = method x pruning level (share of the selected-task model's parameters removed), each before and
after the same recovery; columns = per-task metrics, Δm vs. the full pre-trained model, params, MACs,
measured onnxruntime latency at batch 1. Also a plot of Δm vs. params removed per method.
"""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from edgecut.server.cut.latency import model_latency_ms
from edgecut.server.cut.methods import DEFAULT_METHOD, METHODS
from edgecut.server.cut.prune import Size, measure
from edgecut.server.cut.recover import RecoveryOptions, recover
from edgecut.server.cut.tailor import TailorOptions, decompose, tailor
from edgecut.server.errors import DatasetError
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.mtl.metric_names import PRIMARY
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.mtl.sources import engine_data, labelled_tasks
from edgecut.server.progress import progress_bar
from edgecut.server.spec import Budget


@dataclass(frozen=True)
class PruneBenchConfig:
    checkpoint: Path
    tasks: tuple[str, ...] = ("seg", "depth")
    levels: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)  # share of params removed
    methods: tuple[str, ...] = (
        "random",
        "l1",
        "garg-taylor",
        "snip-union",
        "disparse-pt",
        "cut-vote",
        "cut-mean",
    )
    recovery_steps: int = 100
    n_calib: int = 512
    n_val: int = 300
    calib_batches: int = 4
    cache_dir: Path | None = None
    seed: int = 0
    model: str | None = None  # the class to build the checkpoint as (default: the one it records)
    calib_data: str | None = None  # a folder, or None for synthetic scenes
    val_data: str | None = None
    image_scale: float | None = None


@dataclass
class Row:
    method: str
    level: float
    size: Size
    latency_ms: float
    tailor_s: float
    metrics: Metrics
    delta_m: float
    metrics_rec: Metrics = field(default_factory=dict)
    delta_m_rec: float = float("nan")
    recovery_s: float = 0.0


@dataclass
class PruneBenchResult:
    cfg: PruneBenchConfig
    full_metrics: Metrics
    selected: Size
    selected_latency_ms: float
    full: Size
    rows: list[Row]
    image_size: int
    seconds: float


def run(cfg: PruneBenchConfig, show_progress: bool = True) -> PruneBenchResult:
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    base = checkpoint.load(cfg.checkpoint, cfg.model)
    size = base.input_size
    calib, val = engine_data(
        list(base.task_specs.values()),
        size,
        cfg.calib_data,
        cfg.val_data,
        cfg.cache_dir,
        cfg.n_calib,
        cfg.n_val,
        7,
        1000,
        cfg.image_scale,
    )
    if val is None or not set(cfg.tasks) <= labelled_tasks(val):
        raise DatasetError(
            f"bench prune compares per-task metrics: give --val-data FOLDER with labels for {', '.join(cfg.tasks)}"
        )
    teacher = decompose(base, cfg.tasks)
    specs = teacher.task_specs
    full_metrics = evaluate(teacher, specs, val)  # the selected heads of the original = the full model
    selected = measure(teacher, size)
    selected_latency = model_latency_ms(teacher)
    rows: list[Row] = []
    recovery = RecoveryOptions(steps=cfg.recovery_steps, seed=cfg.seed)
    with progress_bar(
        "bench prune", total=len(cfg.methods) * len(cfg.levels), enabled=show_progress
    ) as advance:
        for name in cfg.methods:
            m = METHODS[name]
            opts = TailorOptions(
                criterion=m.criterion,
                fusion=m.fusion,
                target=m.target,
                calib_batches=cfg.calib_batches,
                seed=cfg.seed,
                min_channels=m.min_channels,
            )
            for level in cfg.levels:
                t = time.perf_counter()
                rep = tailor(base, cfg.tasks, Budget(params_fraction=round(1 - level, 4)), calib, opts)
                tailor_s = time.perf_counter() - t
                metrics = evaluate(rep.model, specs, val)
                row = Row(
                    name,
                    level,
                    rep.pruned,
                    model_latency_ms(rep.model),
                    tailor_s,
                    metrics,
                    delta_m(metrics, full_metrics, specs),
                )
                if cfg.recovery_steps > 0:
                    student = copy.deepcopy(rep.model)
                    r = recover(student, teacher, calib, recovery)
                    row.metrics_rec = evaluate(student, specs, val)
                    row.delta_m_rec = delta_m(row.metrics_rec, full_metrics, specs)
                    row.recovery_s = r.seconds
                rows.append(row)
                advance(1, method=name, level=f"{level:.0%}", dm=f"{row.delta_m:+.1f}/{row.delta_m_rec:+.1f}")
    return PruneBenchResult(
        cfg,
        full_metrics,
        selected,
        selected_latency,
        measure(base, size),
        rows,
        size,
        time.perf_counter() - t0,
    )


def _primary(specs_kinds: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(t, PRIMARY[k]) for t, k in specs_kinds.items()]


def markdown(res: PruneBenchResult, kinds: Mapping[str, str], command: str) -> str:
    cols = _primary(kinds)
    c = res.cfg
    calib = f"images of the folder {c.calib_data}" if c.calib_data else "unlabelled synthetic scenes"
    pool = "the folder's images" if c.calib_data else f"{c.n_calib} unlabelled scenes"
    val = (
        f"the labelled folder {c.val_data or c.calib_data}"
        if c.val_data or c.calib_data
        else (f"{c.n_val} held-out scenes")
    )
    head = [
        f"Selected tasks: **{', '.join(c.tasks)}** of the reference model ({res.full.params / 1e3:.0f}k params, "
        f"{res.full.macs / 1e6:.1f} MMACs with all tasks; {res.selected.params / 1e3:.0f}k params, "
        f"{res.selected.macs / 1e6:.1f} MMACs after decomposition, ORT {res.selected_latency_ms:.2f} ms at batch 1). "
        f"Image {res.image_size}x{res.image_size}; importance from {c.calib_batches} calibration batches of 32 "
        f"{calib}; recovery = {c.recovery_steps} steps of distillation from the original "
        f"(AdamW 3e-3, cosine, batch 32) on {pool}, after the same BatchNorm "
        f"re-estimation (8 batches) for every method; metrics on {val}. "
        f"Levels are the share of the selected-task model's parameters removed. Δm is vs. the full pre-trained "
        f"model (higher is better, 0 = no loss). Latency: onnxruntime CPU, 1 thread, batch 1, median of 60.",
        "",
        f"Machine: {platform.machine()}, 2 cores shared, Python {platform.python_version()}, torch "
        f"{torch.__version__}. Whole run: {res.seconds / 60:.1f} min. Rerun: `{command}`.",
        "",
        *_disparse_lines(res),
    ]
    metric_hdr = " | ".join(f"{t} {k}" for t, k in cols)
    metric_hdr_rec = " | ".join(f"{t} {k} (rec.)" for t, k in cols)
    lines = [
        f"| method | removed | params | MMACs | ORT ms | speed-up | speed-up / MAC cut | {metric_hdr} | Δm % | "
        f"{metric_hdr_rec} | Δm % (rec.) | tailor s |",
        "|---|---:|---:|---:|---:|---:|---:|"
        + "---:|" * len(cols)
        + "---:|"
        + "---:|" * len(cols)
        + "---:|---:|",
    ]
    ref_vals = " | ".join(f"{res.full_metrics[t][k]:.4f}" for t, k in cols)
    lines.append(
        f"| full model | 0% | {res.selected.params / 1e3:.1f}k | {res.selected.macs / 1e6:.2f} | "
        f"{res.selected_latency_ms:.2f} | 1.00 | 1.00 | {ref_vals} | 0.00 | {ref_vals} | 0.00 | - |"
    )
    for r in res.rows:
        speed = res.selected_latency_ms / r.latency_ms
        mac_cut = res.selected.macs / r.size.macs
        vals = " | ".join(f"{r.metrics[t][k]:.4f}" for t, k in cols)
        vals_rec = " | ".join(f"{r.metrics_rec[t][k]:.4f}" if r.metrics_rec else "-" for t, k in cols)
        lines.append(
            f"| {r.method} | {1 - r.size.params / res.selected.params:.0%} | {r.size.params / 1e3:.1f}k | "
            f"{r.size.macs / 1e6:.2f} | {r.latency_ms:.2f} | {speed:.2f} | {speed / mac_cut:.2f} | {vals} | "
            f"{r.delta_m:+.2f} | {vals_rec} | {r.delta_m_rec:+.2f} | {r.tailor_s:.1f} |"
        )
    return "\n".join(head + lines)


DISPARSE_NAMES = (
    "*snip-union* is SNIP's |w·dL_t/dw| with DiSparse's union (prune a channel only where every task "
    "prunes it): DiSparse's fusion, not DiSparse. *disparse-pt* is DiSparse's own recipe for a pre-trained "
    "model: per task the summed |dL_t/dw| times w², union of the keeps."
)


def _disparse_lines(res: PruneBenchResult) -> list[str]:
    """What the union rows are, and the default's Δm beside theirs at every level (one run: no verdict)."""
    ran = [m for m in (DEFAULT_METHOD, "disparse-pt", "snip-union") if any(r.method == m for r in res.rows)]
    if not {"disparse-pt", "snip-union"} & set(ran):
        return []
    rec = res.cfg.recovery_steps > 0

    def dms(method: str) -> str:
        rows = [r for r in res.rows if r.method == method]
        return " / ".join(f"{r.delta_m_rec if rec else r.delta_m:+.2f}" for r in rows)

    levels = " / ".join(f"{lv:.0%}" for lv in res.cfg.levels)
    return [
        DISPARSE_NAMES
        + f" Δm % {'after recovery' if rec else 'without recovery'} at {levels} removed: "
        + "; ".join(f"{m} {dms(m)}" for m in ran)
        + f" (one run of seed {res.cfg.seed}: no spread is measured, so these gaps are not a ranking).",
        "",
    ]


def plot(res: PruneBenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, rec in zip(axes, (False, True), strict=True):
        for name in res.cfg.methods:
            rows = [r for r in res.rows if r.method == name]
            xs = [100 * (1 - r.size.params / res.selected.params) for r in rows]
            ys = [r.delta_m_rec if rec else r.delta_m for r in rows]
            ax.plot(xs, ys, marker="o", label=name)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_yscale("symlog", linthresh=10)  # the small losses that matter stay readable beside random's
        ax.set_xlabel("params removed (%)")
        ax.set_title("after recovery" if rec else "no recovery")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Δm vs. full model (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"tasks {', '.join(res.cfg.tasks)}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quick(cfg: PruneBenchConfig) -> PruneBenchConfig:
    return replace(
        cfg,
        levels=(0.5, 0.7),
        methods=("random", "disparse-pt", "cut-vote"),
        recovery_steps=5,
        n_calib=64,
        n_val=64,
        calib_batches=1,
    )
