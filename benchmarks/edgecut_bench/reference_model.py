"""`edgecut bench model`'s additions to the *Reference model* section (reference_doc writes the rest):
the validation curve of a converging run, and, for each `--compare` checkpoint (a model trained from
scratch for some of the tasks, an earlier reference), both evaluated on the same validation scenes with
Δm of that model against the reference over its own tasks: a positive Δm means it beats the reference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.data import synthetic_scenes
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.mtl.metric_names import LOWER_IS_BETTER, PRIMARY
from edgecut.server.mtl.metrics import delta_m


@dataclass(frozen=True)
class Compared:
    name: str  # the checkpoint's file name
    about: str  # how it was trained, from its record
    tasks: tuple[str, ...]
    metrics: Metrics
    delta_m: float  # % against the reference over `tasks`; > 0: it beats the reference


def _about(doc: dict[str, Any]) -> str:
    cfg = doc.get("train_config") or {}
    tasks = ", ".join(cfg.get("tasks") or ()) or "all tasks"
    best = doc.get("best_epoch")
    trained = f"best of {len(doc['curve'])} epochs: epoch {best}" if doc.get("curve") else "fixed schedule"
    widths = cfg.get("model", {})
    return (
        f"{tasks}; {widths}; {cfg.get('epochs', '?')}-epoch cap, patience {cfg.get('patience', 0)}; {trained}"
        + (
            "; balanced task losses (its losses are not comparable with an unbalanced run's)"
            if cfg.get("balance")
            else ""
        )
    )


def compare(
    reference: Path, others: list[Path], cfg: dict[str, Any], cache_dir: Path | None
) -> tuple[Metrics, list[Compared]]:
    """The reference's metrics and each of `others`', on the reference's validation scenes."""
    val = synthetic_scenes(
        cfg["n_val"], cfg["seed"] + 1000, cfg["image_size"], cache_dir, show_progress=False
    )
    ref_model = checkpoint.load(reference)
    ref_metrics = evaluate(ref_model, ref_model.task_specs, val)
    out = []
    for path in others:
        model = checkpoint.load(path)
        metrics = evaluate(model, model.task_specs, val)
        tasks = tuple(model.task_specs)
        dm = delta_m(metrics, {t: ref_metrics[t] for t in tasks}, model.task_specs)
        out.append(Compared(path.name, _about(checkpoint.read(path)), tasks, metrics, dm))
    return ref_metrics, out


def _curve_table(curve: list[dict[str, float]], best: int) -> str:
    lines = [
        "| epoch | training loss | validation loss | learning rate | minutes |",
        "|---:|---:|---:|---:|---:|",
    ]
    for p in curve:
        mark = " (kept)" if int(p["epoch"]) == best else ""
        lines.append(
            f"| {int(p['epoch'])}{mark} | {p['train_loss']:.4f} | {p['val_loss']:.4f} | {p['lr']:.2e} | "
            f"{p['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)


def _main_metric(task_metrics: dict[str, float]) -> str:
    name = next((k for k in task_metrics if k in set(PRIMARY.values())), next(iter(task_metrics)))
    return f"{name} {task_metrics[name]:.4f} ({'lower' if name in LOWER_IS_BETTER else 'higher'} is better)"


def _compare_table(rows: list[Compared], ref: Metrics) -> str:
    lines = [
        "| model | how trained | tasks | its metrics | the reference's | Δm vs. reference |",
        "|---|---|---|---|---|---:|",
    ]
    for r in rows:
        mine = "; ".join(f"{t}: {_main_metric(r.metrics[t])}" for t in r.tasks)
        theirs = "; ".join(f"{t}: {_main_metric(ref[t])}" for t in r.tasks)
        lines.append(
            f"| {r.name} | {r.about} | {', '.join(r.tasks)} | {mine} | {theirs} | {r.delta_m:+.2f} % |"
        )
    return "\n".join(lines)


def extras(doc: dict[str, Any], compared: list[Compared], ref: Metrics) -> str:
    """What follows reference_doc's section: the training curve, and the `--compare` models."""
    body = ""
    curve = doc.get("curve") or []
    if curve:
        body += "\n\n**Training curve** (the validation loss decides when to stop):\n\n" + _curve_table(
            curve, int(doc.get("best_epoch", 0))
        )
    if compared:
        beaten = [c for c in compared if c.delta_m > 0]
        verdict = (
            "**none beats the reference**"
            if not beaten
            else "**beaten by " + ", ".join(f"{c.name} ({c.delta_m:+.2f} %)" for c in beaten) + "**"
        )
        body += (
            "\n\n**Against other models** on the same validation scenes (`--compare CKPT`; a model trained "
            f"from scratch for some tasks with `edgecut train --tasks ...`): {verdict}.\n\n"
            + _compare_table(compared, ref)
        )
    return body


def load_record(ckpt: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ckpt.with_suffix(".metrics.json").read_text())
    return doc
