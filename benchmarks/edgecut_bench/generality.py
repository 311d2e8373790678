"""`edgecut bench generality`: the gallery architectures (examples/) trained on a folder the bench writes,
tailored for several task pairs, and the compute-aware ranking against the plain one on the reference.

One run does all of it:
1. writes rendered scenes as a labelled folder (bench/scene_folder.py: six tasks of five kinds, two of
   them declared only in tasks.json) and trains each gallery model on it briefly through the same path
   as `edgecut train --model ... --data FOLDER`;
2. tailors each for a dense pair, an image-level pair (the decoder is dropped) and a mixed pair at
   each MACs budget (0.5 and 0.3), with the default method and recovery, and measures params, MACs,
   onnxruntime latency and each task's metric before and after on the held-out folder; at the
   tightest budget the pairs with an image-level task are tailored once more with the per-task
   importance floor (cut/shares.py) switched the other way, to show what it changes;
3. tailors the packaged reference model for three task pairs at the same budget with the ranking by
   importance per MAC and with the plain importance ranking, and compares Δm after recovery.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from edgecut.server.cut.latency import model_latency_ms
from edgecut.server.cut.prune import Size, measure
from edgecut.server.cut.recover import RecoveryOptions, recover
from edgecut.server.cut.tailor import TailorOptions, decompose, tailor
from edgecut.server.errors import ImpossibleBudgetError
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import synthetic_scenes
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.mtl.folder import FolderDataset
from edgecut.server.mtl.metric_names import LOWER_IS_BETTER, PRIMARY
from edgecut.server.mtl.metrics import delta_m
from edgecut.server.mtl.train import TrainConfig, train
from edgecut.server.progress import progress_bar
from edgecut.server.spec import Budget
from edgecut_bench.scene_folder import write_scene_folder

SECTION = "Generality"
# architecture -> (module:Class, keyword arguments at the bench's size)
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet": ("edgecut.server.mtl.models:ResNetMTL", {"widths": [24, 24, 48, 96], "head_width": 32}),
    "mobilenet-fpn": ("examples.mobilenet_fpn:MobileNetFPN", {}),
    "unet": ("examples.unet:DepthwiseUNet", {}),
    "grouped": ("examples.grouped:GroupedHydra", {}),
    "mobilevit": ("examples.mobilevit:MobileViT", {}),
    "efficient-se": ("examples.efficient_se:EfficientSE", {}),
    "token-heads": ("examples.token_heads:TokenHeads", {}),
}
# every budget: a dense task beside an image-level one ("seg + sum" in issue 27); the tightest budget
# also: two image-level tasks ("left + sum"), the decoder dropped. Three pairs at every budget and the
# ranking comparison (--ranking) take about 1.5 h on the shared 2-core machine.
PAIRS: tuple[tuple[str, str], ...] = (("slant", "count"),)
TIGHT_PAIRS: tuple[tuple[str, str], ...] = (("count", "largest"),)
ALL_PAIRS: tuple[tuple[str, str], ...] = (("seg", "depth"), ("count", "largest"), ("slant", "count"))
REFERENCE_PAIRS: tuple[tuple[str, str], ...] = (("seg", "depth"), ("normals", "edges"), ("count", "seg"))


@dataclass(frozen=True)
class GeneralityConfig:
    work_dir: Path  # the folder data and the trained gallery checkpoints (reused when present)
    reference: Path  # the reference checkpoint for the ranking comparison
    cache_dir: Path | None = None
    architectures: tuple[str, ...] = tuple(ARCHITECTURES)
    pairs: tuple[tuple[str, str], ...] = PAIRS
    tight_pairs: tuple[tuple[str, str], ...] = TIGHT_PAIRS  # only at the tightest budget
    reference_pairs: tuple[
        tuple[str, str], ...
    ] = ()  # the ranking comparison (REFERENCE_PAIRS with --ranking)
    budget: float = 0.5  # MACs fraction of the selected-task model for the ranking comparison
    budgets: tuple[float, ...] = (0.5, 0.3)  # MACs fractions every gallery pair is tailored at
    floor: float = 0.0  # a per-task importance floor to compare at the tightest budget (0 = no comparison)
    image_size: int = 64
    n_train: int = 1500
    n_val: int = 300
    epochs: int = 60  # the cap: each model trains until its validation loss stops improving
    patience: int = 4  # epochs without a better validation loss before training stops
    recovery_steps: int = 200
    n_calib: int = 512
    latency_runs: int = 60
    seed: int = 0


@dataclass
class Row:
    arch: str
    tasks: tuple[str, ...]
    budget: float
    floor: float  # the per-task importance floor used (TailorOptions.task_floor)
    whole: Size  # the pair's heads on the whole trunk
    before: Size  # decomposed: the trunk parts the pair reads
    after: Size
    ms_before: float
    ms_after: float
    metrics_before: Metrics
    metrics_after: Metrics
    delta_m: float
    primary: dict[str, str]  # task -> the metric shown


@dataclass
class RankingRow:
    tasks: tuple[str, ...]
    plain: Size
    per_mac: Size
    selected: Size
    dm_plain: float
    dm_per_mac: float


@dataclass
class GeneralityResult:
    cfg: GeneralityConfig
    rows: list[Row]
    ranking: list[RankingRow]
    floors: list[tuple[Row, Row]]  # (default floor, the other floor) at the tightest budget
    impossible: list[str]  # the pairs whose budget their smallest model cannot meet, with the reason
    train_seconds: dict[str, float]
    seconds: float = 0.0
    trained: dict[str, str] = field(default_factory=dict)  # arch -> epochs and main metrics vs trivial


def quick(cfg: GeneralityConfig) -> GeneralityConfig:
    """Seconds, not minutes: a smoke test of the whole run (no meaningful figures)."""
    return replace(
        cfg,
        architectures=("unet",),
        pairs=(("count", "largest"),),
        tight_pairs=(),
        reference_pairs=(("seg", "depth"),),
        budgets=(0.5,),
        image_size=32,
        n_train=48,
        n_val=16,
        epochs=1,
        recovery_steps=2,
        n_calib=32,
        latency_runs=3,
    )


def _folders(cfg: GeneralityConfig) -> tuple[Path, Path]:
    root = cfg.work_dir / f"scenes-{cfg.image_size}-{cfg.n_train}-{cfg.n_val}"
    train_dir, val_dir = root / "train", root / "val"
    if not (root / "done").exists():
        write_scene_folder(train_dir, cfg.n_train, 11, cfg.image_size)
        write_scene_folder(val_dir, cfg.n_val, 12, cfg.image_size)
        (root / "done").write_text("ok\n")
    return train_dir, val_dir


def _trained(
    cfg: GeneralityConfig, arch: str, train_dir: Path, val_dir: Path
) -> tuple[MultiTaskModel, float, str]:
    """The gallery model trained until its validation loss stops improving (cached), its training
    seconds, and how it ended: epochs and each task's main metric against the trivial baseline."""
    spec, model_config = ARCHITECTURES[arch]
    out = cfg.work_dir / f"{arch}-{cfg.image_size}-{cfg.n_train}-{cfg.epochs}-p{cfg.patience}.pt"
    if not out.exists():
        tcfg = replace(
            TrainConfig(),
            arch=spec,
            model=model_config,
            data=str(train_dir),
            val_data=str(val_dir),
            image_size=cfg.image_size,
            epochs=cfg.epochs,
            patience=cfg.patience,
            seed=cfg.seed,
        )
        train(tcfg, out=out, show_progress=False)
    doc = checkpoint.read(out)
    return checkpoint.load(out).eval(), float(doc.get("seconds", 0.0)), _training_summary(out)


def _training_summary(out: Path) -> str:
    record = json.loads(out.with_suffix(".metrics.json").read_text())
    runs = len(record.get("curve") or record.get("loss_per_epoch") or [])
    parts = []
    for task, values in record["metrics"].items():
        key = next((k for k in values if k in set(PRIMARY.values())), next(iter(values)))
        trivial = record["trivial_baseline"].get(task, {}).get(key)
        parts.append(
            f"{task} {key} {values[key]:.3f}" + ("" if trivial is None else f" (trivial {trivial:.3f})")
        )
    return f"kept epoch {record.get('best_epoch', runs)} of {runs}: " + ", ".join(parts)


def run(cfg: GeneralityConfig, show_progress: bool = True) -> GeneralityResult:
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    train_dir, val_dir = _folders(cfg)
    recovery = RecoveryOptions(steps=cfg.recovery_steps, seed=cfg.seed)
    rows: list[Row] = []
    floors: list[tuple[Row, Row]] = []
    impossible: list[str] = []
    train_seconds: dict[str, float] = {}
    trained: dict[str, str] = {}
    default_floor = TailorOptions().task_floor
    other_floor = cfg.floor if default_floor == 0 else 0.0
    tightest = min(cfg.budgets)
    per_arch = len(cfg.budgets) * len(cfg.pairs) + len(cfg.tight_pairs) + len(_image_level_pairs(cfg))
    total = len(cfg.architectures) * (1 + per_arch) + 2 * len(cfg.reference_pairs)
    with progress_bar("bench generality", total=total, enabled=show_progress) as advance:
        for arch in cfg.architectures:
            base, train_seconds[arch], trained[arch] = _trained(cfg, arch, train_dir, val_dir)
            advance(1, arch=arch, step="trained")
            specs = list(base.task_specs.values())
            calib = FolderDataset(train_dir, cfg.image_size, specs)
            val = FolderDataset(val_dir, cfg.image_size, specs)
            for budget in cfg.budgets:
                for pair in cfg.pairs + (cfg.tight_pairs if budget == tightest else ()):
                    try:
                        rows.append(
                            _tailored(cfg, arch, base, pair, calib, val, recovery, budget, default_floor)
                        )
                    except ImpossibleBudgetError as exc:
                        impossible.append(f"{arch} {'+'.join(pair)}: {exc}")
                    advance(1, arch=arch, tasks="+".join(pair), macs=budget)
            for pair in _image_level_pairs(cfg):
                row = next(
                    (r for r in rows if r.arch == arch and r.tasks == pair and r.budget == tightest), None
                )
                if row is None:
                    continue
                other = _tailored(cfg, arch, base, pair, calib, val, recovery, tightest, other_floor)
                floors.append((row, other))
                advance(1, arch=arch, tasks="+".join(pair), floor=other_floor)
        ranking = _ranking(cfg, recovery, advance)
    return GeneralityResult(
        cfg, rows, ranking, floors, impossible, train_seconds, time.perf_counter() - t0, trained
    )


IMAGE_LEVEL = {"count", "largest"}  # the bench folder's image-level tasks


def _image_level_pairs(cfg: GeneralityConfig) -> list[tuple[str, str]]:
    """The pairs compared with and without a per-task floor (none unless `cfg.floor` is set)."""
    if cfg.floor <= 0 and TailorOptions().task_floor == 0:
        return []
    return [p for p in cfg.pairs + cfg.tight_pairs if IMAGE_LEVEL & set(p)]


def _tailored(
    cfg: GeneralityConfig,
    arch: str,
    base: MultiTaskModel,
    pair: tuple[str, str],
    calib: FolderDataset,
    val: FolderDataset,
    recovery: RecoveryOptions,
    budget: float,
    floor: float,
) -> Row:
    teacher = decompose(base, pair)
    before = evaluate(teacher, teacher.task_specs, val)
    options = TailorOptions(recovery=None, seed=cfg.seed, task_floor=floor)
    rep = tailor(base, pair, Budget(macs_fraction=budget), calib, options)
    recover(rep.model, rep.teacher, calib, recovery)
    after = evaluate(rep.model, rep.model.task_specs, val)
    return Row(
        arch,
        pair,
        budget,
        floor,
        measure(base.select(list(pair)), base.input_size),
        rep.selected,
        rep.pruned,
        model_latency_ms(teacher, cfg.latency_runs),
        model_latency_ms(rep.model, cfg.latency_runs),
        before,
        after,
        delta_m(after, before, teacher.task_specs),
        {t: PRIMARY[s.kind] for t, s in teacher.task_specs.items()},
    )


def _ranking(cfg: GeneralityConfig, recovery: RecoveryOptions, advance: Any) -> list[RankingRow]:
    base = checkpoint.load(cfg.reference)
    size = base.input_size
    calib = synthetic_scenes(cfg.n_calib, 7, size, cfg.cache_dir, show_progress=False)
    val = synthetic_scenes(cfg.n_val, 1000, size, cfg.cache_dir, show_progress=False)
    out = []
    for pair in cfg.reference_pairs:
        teacher = decompose(base, pair)
        full = evaluate(teacher, teacher.task_specs, val)
        got: dict[str, tuple[Size, float]] = {}
        costs: tuple[Literal["none", "macs"], ...] = ("none", "macs")
        for cost in costs:
            opts = TailorOptions(recovery=None, cost=cost, seed=cfg.seed)
            rep = tailor(base, pair, Budget(macs_fraction=cfg.budget), calib, opts)
            student = copy.deepcopy(rep.model)
            recover(student, rep.teacher, calib, recovery)
            metrics = evaluate(student, student.task_specs, val)
            got[cost] = (rep.pruned, delta_m(metrics, full, teacher.task_specs))
            advance(1, reference="+".join(pair), ranking=cost)
        out.append(
            RankingRow(pair, got["none"][0], got["macs"][0], rep.selected, got["none"][1], got["macs"][1])
        )
    return out


def _arrow(before: float, after: float, key: str) -> str:
    return f"{before:.3f} → {after:.3f}{'↓' if key in LOWER_IS_BETTER else '↑'}"


def markdown(res: GeneralityResult, command: str) -> str:
    c = res.cfg
    trained = ", ".join(f"{a} {s / 60:.1f} min" for a, s in res.train_seconds.items())
    budgets = " and ".join(f"{b:g}" for b in c.budgets)
    lines = [
        f"Each gallery architecture (examples/, `--model module:Class`) trained from scratch on a labelled "
        f"folder this command writes ({c.n_train} rendered {c.image_size}x{c.image_size} scenes with six tasks: "
        "seg (segmentation), depth, slant (a dense regression where 0 is a value, declared in tasks.json), "
        "edges, count and largest (image-level classes)) until its validation loss stopped improving "
        f"({c.patience} epochs without a gain, at most {c.epochs}; training: {trained}), through the same code as "
        "`edgecut train --model ... --data FOLDER`; then tailored with the default method (CUT vote, label-free "
        f"Taylor scores, per-MAC ranking) at **macs={budgets}** of the selected-task model, with "
        f"{c.recovery_steps} steps of distillation on the training folder. Pairs: "
        f"{', '.join('+'.join(p) for p in c.pairs)} at every budget"
        + (
            f", {', '.join('+'.join(p) for p in c.tight_pairs)} at macs={min(c.budgets):g}"
            if c.tight_pairs
            else ""
        )
        + ". Params and MACs are given as "
        "whole → decomposed → tailored: the pair's heads on the whole trunk, then without the trunk parts "
        "the pair does not read (decomposition), then pruned to the budget (a share of the decomposed "
        "model). Before = the decomposed model (ONNX export drops unread branches anyway, so its latency is "
        f"the one a device would see untailored), after = tailored; metrics on {c.n_val} held-out folder "
        "scenes, Δm of after vs. before; speed-up = ORT ms before / after. ORT: onnxruntime CPU, 1 thread, "
        "batch 1, median of "
        f"{c.latency_runs}. Machine: {platform.machine()}, 2 cores shared with other jobs, torch "
        f"{torch.__version__}. Whole run: {res.seconds / 60:.1f} min. Rerun: `{command}`.",
        "",
        *(
            ["How each model's training ended (main metric per task, the trivial baseline in brackets):", ""]
            + [f"- {arch}: {summary}" for arch, summary in res.trained.items()]
            + [""]
            if res.trained
            else []
        ),
        "| architecture | tasks | budget | params | MMACs | ORT ms | speed-up | task metrics (before → after) "
        "| Δm % |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in res.rows:
        metrics = "; ".join(
            f"{t} {k} {_arrow(r.metrics_before[t][k], r.metrics_after[t][k], k)}"
            for t, k in r.primary.items()
        )
        lines.append(
            f"| {r.arch} | {', '.join(r.tasks)} | macs={r.budget:g} | {r.whole.params / 1e3:.1f}k → "
            f"{r.before.params / 1e3:.1f}k → {r.after.params / 1e3:.1f}k | {r.whole.macs / 1e6:.2f} → "
            f"{r.before.macs / 1e6:.2f} → {r.after.macs / 1e6:.2f} | "
            f"{r.ms_before:.2f} → {r.ms_after:.2f} | {r.ms_before / max(r.ms_after, 1e-9):.2f}x | {metrics} "
            f"| {r.delta_m:+.2f} |"
        )
    if res.impossible:
        lines += [
            "",
            "Budgets a model cannot meet (refused before any recovery, as a device would be told):",
            "",
        ]
        lines += [f"- {line}" for line in res.impossible]
    lines += _floor_table(res)
    if not res.ranking:
        return "\n".join(lines)
    lines += [
        "",
        f"**Compute-aware ranking** on the packaged reference model, same budget (macs={c.budget:g}), method "
        f"and {c.recovery_steps}-step recovery; Δm after recovery vs. the full model on {c.n_val} held-out "
        "synthetic scenes (higher is better). *per MAC* ranks channels by importance divided by the MACs they cost "
        "(the default whenever the budget limits MACs); *plain* is the importance ranking used before.",
        "",
        "| tasks | params kept (plain → per MAC) | MACs kept (plain → per MAC) | Δm % plain | Δm % per MAC "
        "| better by |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for g in res.ranking:
        lines.append(
            f"| {', '.join(g.tasks)} | {g.plain.params / g.selected.params:.0%} → "
            f"{g.per_mac.params / g.selected.params:.0%} | {g.plain.macs / g.selected.macs:.0%} → "
            f"{g.per_mac.macs / g.selected.macs:.0%} | {g.dm_plain:+.2f} | {g.dm_per_mac:+.2f} | "
            f"{g.dm_per_mac - g.dm_plain:+.2f} pp |"
        )
    if res.ranking:
        mean = sum(g.dm_per_mac - g.dm_plain for g in res.ranking) / len(res.ranking)
        lines += ["", f"Mean difference in Δm after recovery: **{mean:+.2f} pp** (per MAC minus plain)."]
    return "\n".join(lines)


def _floor_table(res: GeneralityResult) -> list[str]:
    if not res.floors:
        return []
    c = res.cfg
    lines = [
        "",
        f"**Image-level tasks at macs={min(c.budgets):g}** (issue 27: a classification head on pooled features "
        "costs almost nothing, so the per-MAC vote could take the trunk channels only it needs). The same pairs "
        "tailored with the per-task importance floor (cut/shares.py: no kept task keeps less than this share of "
        "its own importance; lowered step by step, with a log line, when the budget needs it) at each value; "
        "same recovery and held-out scenes. The main table uses the default "
        f"(`TailorOptions.task_floor` = {TailorOptions().task_floor:g}).",
        "",
        "| architecture | tasks | floor | task metrics after | Δm % | floor | task metrics after | Δm % |",
        "|---|---|---:|---|---:|---:|---|---:|",
    ]
    for a, b in res.floors:
        cells = []
        for r in (a, b):
            after = "; ".join(f"{t} {k} {r.metrics_after[t][k]:.3f}" for t, k in r.primary.items())
            cells.append(f"{r.floor:g} | {after} | {r.delta_m:+.2f}")
        lines.append(f"| {a.arch} | {', '.join(a.tasks)} | {cells[0]} | {cells[1]} |")
    return lines
