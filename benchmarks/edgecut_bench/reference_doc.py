"""`edgecut bench model`'s text: the *Reference model* section and its Summary bullet, both from the model's
metrics file (`<checkpoint>.metrics.json`, written by `edgecut train`), so neither can describe another
model than the one the benchmarks use."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from edgecut.server.mtl.metric_names import LOWER_IS_BETTER
from edgecut.server.mtl.report import metrics_markdown
from edgecut.server.paths import PACKAGED_REFERENCE, PACKAGED_REFERENCE_128

SECTION = "Reference model"
SUMMARY_LEAD = "Reference model"
# The figure a reader looks at first, per task; a task not listed shows its first metric.
HEADLINE = {  # metric, its name, the trivial baseline's name, unit
    "seg": ("miou", "segmentation mIoU", "majority class", ""),
    "depth": ("abs_err", "depth abs. error", "mean depth", " m"),
    "normals": ("mean_angle", "normals mean angle", "mean normal", "°"),
    "edges": ("f1", "edge F1", "no edges", ""),
    "count": ("accuracy", "object count accuracy", "majority class", " %"),
}


def which(checkpoint: Path, default: bool = True) -> str:
    if checkpoint.resolve() == PACKAGED_REFERENCE.resolve():
        return "the packaged reference (`edgecut/server/mtl/pretrained/reference.pt`)"
    if checkpoint.resolve() == PACKAGED_REFERENCE_128.resolve():
        return "the packaged 128 px reference (`make model-128` trains it again)"
    if not default:
        return f"the reference at `{checkpoint}`"
    return f"`{checkpoint}` (trained in this data dir; the packaged reference is another model)"


def titled(doc: dict[str, Any], default: bool) -> tuple[str, str]:
    """The section's heading and the Summary bullet's lead: the benchmarks' reference has the plain ones,
    another reference (`bench model --checkpoint`, e.g. one at a larger input) is named by its input size,
    so rendering it never replaces the default reference's text."""
    if default:
        return SECTION, SUMMARY_LEAD
    size = doc["config"]["image_size"]
    return f"{SECTION} at {size}x{size}", f"{SUMMARY_LEAD} at {size}x{size}"


def _rerun(checkpoint: Path, default: bool) -> str:
    if default:
        return (
            "`edgecut bench model` (renders this from the model's metrics file; `--retrain` trains a model "
            "into the data dir first)"
        )
    return f"`edgecut bench model --checkpoint {checkpoint}` (renders this from the model's metrics file)"


def _schedule(doc: dict[str, Any]) -> str:
    cfg = doc["config"]
    curve = doc.get("curve") or []
    if cfg.get("patience") and curve:
        stopped = doc.get("stopped") or f"{len(curve)} epochs, kept epoch {doc.get('best_epoch', len(curve))}"
        return (
            f"AdamW lr {cfg['lr']} after a warm-up epoch, times {cfg.get('lr_drop', '?')} after each epoch "
            f"without a better validation loss, until {cfg['patience']} such epochs or {cfg['epochs']} in all "
            f"({stopped})"
        )
    return f"{cfg['epochs']} epochs, AdamW one-cycle lr {cfg['lr']}"


def _scenes(doc: dict[str, Any]) -> str:
    """What it trained on: a fixed set, or new scenes every epoch (TrainConfig.fresh_scenes; a record from
    before that field trained on a fixed set)."""
    cfg = doc["config"]
    epochs = len(doc.get("curve") or []) or cfg["epochs"]
    if cfg.get("fresh_scenes") and cfg.get("data", "synthetic") == "synthetic":
        return f"{cfg['n_train']} new synthetic scenes every epoch ({epochs * cfg['n_train']} in all),"
    return f"the same {cfg['n_train']} synthetic scenes every epoch,"


def _trained_on(doc: dict[str, Any]) -> str:
    """Where it trained: what the metrics file records, else this machine (`edgecut train` then ran here)."""
    trained = doc.get("trained") or {}
    machine = trained.get("machine") or f"{platform.machine()}, 2 cores, other jobs may have shared them"
    torch = trained.get("torch")
    date = trained.get("date")
    return ", ".join(x for x in (machine, f"torch {torch}" if torch else "", date or "") if x)


def section(doc: dict[str, Any], checkpoint: Path, default: bool = True) -> str:
    """The section's body (without its heading); `default`: the reference the benchmarks use by default,
    else one named with `--checkpoint`."""
    cfg = doc["config"]
    size = cfg["image_size"]
    named = which(checkpoint, default)
    return (
        f"{named[0].upper()}{named[1:]}: `{cfg['arch']}` {cfg['model']} on "
        f"{_scenes(doc)} {size}x{size}, batch {cfg['batch_size']}, {_schedule(doc)}; "
        f"metrics on {cfg['n_val']} held-out scenes (another seed). Trivial baseline = the training set's "
        "majority class (segmentation, count) or mean (depth, normals), no edges. Training took "
        f"**{doc['seconds'] / 60:.1f} min** ({_trained_on(doc)}). Rerun: {_rerun(checkpoint, default)}.\n\n"
        + metrics_markdown(doc["metrics"], doc["trivial_baseline"])
    )


def _headline(task: str, metrics: dict[str, float], baseline: dict[str, float]) -> tuple[str, bool]:
    first = next(iter(metrics))
    key, name, trivial, unit = HEADLINE.get(task, (first, f"{task} {first}", "trivial baseline", ""))
    value, base = metrics[key], baseline.get(key)
    lower = key in LOWER_IS_BETTER

    def show(v: float) -> str:
        return f"{v * 100:.0f}{unit}" if unit == " %" else f"{v:.3g}{unit}"

    text = f"{name} {show(value)}" + ("" if base is None else f" ({trivial} {show(base)})")
    beats = base is None or (value < base if lower else value > base)
    return text, beats


def bullet(doc: dict[str, Any], checkpoint: Path, default: bool = True) -> str:
    """The Summary's bullet (after its bold lead)."""
    parts, behind = [], []
    for task, values in doc["metrics"].items():
        text, beats = _headline(task, values, doc["trivial_baseline"].get(task, {}))
        parts.append(text)
        if not beats:
            behind.append(task)
    verdict = (
        "every task beats its trivial baseline on held-out scenes"
        if not behind
        else f"not above its trivial baseline on held-out scenes: {', '.join(behind)}"
    )
    command = "edgecut bench model" + ("" if default else f" --checkpoint {checkpoint}")
    return (
        f"(`{command}`, {which(checkpoint, default)}): {verdict}: {'; '.join(parts)}. "
        f"Training: {doc['seconds'] / 60:.1f} min."
    )
