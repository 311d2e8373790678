"""The *Quality at budget* section of docs/benchmarks.md and its Δm-vs-time plot (from bench quality's rows)."""

from __future__ import annotations

import math
import os
import platform
import re
from pathlib import Path

from edgecut.server.cut.scratch import ScratchOptions
from edgecut.server.mtl.metric_names import PRIMARY
from edgecut.server.ort_latency import ROUNDS, RUNS_PER_ROUND
from edgecut_bench.quality import QualityConfig, QualityResult
from edgecut_bench.quality_goals import Against, Finding, Verdict, baseline_wins, delta_m_goal, verdicts
from edgecut_bench.quality_rows import (
    FULL,
    SCRATCH,
    SCRATCH_TIME,
    SHIPPED,
    TP_FINAL,
    TP_QUICK,
    Case,
)
from edgecut_bench.tp_baseline import ROUND_TO, VARIANTS

SECTION = "Quality at budget"
# a baseline this much slower than the shipped model is not at the same speed (the engine's tolerance)
SLOWER = ScratchOptions.max_slowdown


def _case_table(case: Case) -> list[str]:
    cols = [(t, PRIMARY[k]) for t, k in case.kinds.items()]
    head = " | ".join(f"{t} {m}" for t, m in cols)
    lines = [
        f"**{case.name}**",
        "",
        f"| model | MMACs | MAC cut | ORT ms | speed-up | speed-up / MAC cut | {head} | Δm % | build s | "
        "from request s | note |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(cols) + "---:|---:|---:|---|",
    ]
    for r in case.rows:
        vals = " | ".join(f"{r.metrics.get(t, {}).get(m, float('nan')):.4f}" for t, m in cols)
        cut, speed = case.mac_cut(r), case.speedup(r)
        build = "-" if r.kind == FULL else f"{r.seconds:.1f}"
        since = f"{r.elapsed:.1f}" if r.shipped else "-"
        label = f"**{r.label}**" if r.shipped else r.label
        lines.append(
            f"| {label} | {r.macs / 1e6:.2f} | {cut:.2f} | {r.latency_ms:.2f} | {speed:.2f} | {speed / cut:.2f} | "
            f"{vals} | {r.delta_m:+.2f} | {build} | {since} | {r.note} |"
        )
    lines += [f"- {n}" for n in case.notes]
    return lines


def _verdict_table(found: list[Verdict]) -> list[str]:
    lines = ["| goal | case | measured | goal | verdict | why / detail |", "|---|---|---:|---:|---|---|"]
    lines += [f"| {v.goal} | {v.case} | {v.value} | {v.target} | {v.word} | {v.detail} |" for v in found]
    return lines


# (baseline kinds, what they are, what they are compared with, how that model is named)
COMPARISONS: tuple[tuple[tuple[str, ...], str, Against, str], ...] = (
    (SCRATCH, "from scratch", "final", "the final model edgecut ships"),
    (TP_QUICK, "Torch-Pruning (quick)", "quick", "edgecut's quick model (the same training)"),
    (
        TP_FINAL,
        "Torch-Pruning (final)",
        "distilled",
        "the last model of edgecut's distillation lineage (the same training)",
    ),
)


def _findings(res: QualityResult) -> list[str]:
    """Like with like: scratch rows against the final shipped model, Torch-Pruning's quick rows against
    edgecut's quick model and its final rows against edgecut's last distilled model."""
    out = []
    for kinds, what, against, named in COMPARISONS:
        found = baseline_wins(res.cases, kinds, against)
        if not found:
            out.append(f"- No {what} baseline beats or ties {named}, in any case.")
            continue
        for w in found:
            verb = " wins" if w.outcome > 0 else ": no difference"
            out.append(
                f"- **{what}{verb}** at {w.case}: {w.baseline} Δm {w.baseline_delta_m:+.2f} % against "
                f"{w.shipped} {w.shipped_delta_m:+.2f} % (by {w.margin:.2f} points){_speed_note(w)}."
            )
    return out


def _speed_note(w: Finding) -> str:
    """A win bought with speed is not a win on a device whose budget is its speed: say so."""
    if not math.isfinite(w.slowdown):
        return ""
    if w.slowdown > SLOWER:
        return (
            f", but it runs {w.slowdown:.2f}x the shipped model's time ({w.baseline_ms:.2f} vs "
            f"{w.shipped_ms:.2f} ms): at the same MACs, not at the same speed"
        )
    return f", at {w.baseline_ms:.2f} vs {w.shipped_ms:.2f} ms"


def _same_time_epochs(res: QualityResult) -> str:
    """How many epochs the same-time baseline got, and whether that is about the reference's whole
    schedule (then the row also answers "trained from scratch for the full training time")."""
    batch, n = res.cfg.recipe().batch_size, res.cfg.train_scenes
    epochs = []
    for case in res.cases:
        for row in case.of(SCRATCH_TIME):
            found = re.match(r"(\d+) steps", row.note)
            if found:
                epochs.append(int(found[1]) * batch / n)
    if not epochs:
        return ""
    lo, hi = min(epochs), max(epochs)
    said = f": {lo:.1f}-{hi:.1f} epochs of the {n} scenes here"
    full = res.reference_epochs
    if 0.8 * full <= lo and hi <= 1.25 * full:
        said += (
            f", about the reference's whole {full}-epoch schedule, so this row also stands for the "
            "same task set trained from scratch at the same MACs for the full training time"
        )
    return said


def _partial(c: QualityConfig) -> list[str]:
    """A line saying which cases of the issue's matrix this run left out (empty when none)."""
    full = QualityConfig(c.checkpoint, c.data_dir)
    asked = {(ts, b) for ts in full.task_sets for b in full.budgets}
    missing = sorted(asked - {(ts, b) for ts in c.task_sets for b in c.budgets})
    if not missing:
        return []
    left = "; ".join(f"{' + '.join(ts)} @ macs {b:g}" for ts, b in missing)
    return [
        f"**Partial run**: not measured here: {left} (the defaults of `edgecut bench quality` run them).",
        "",
    ]


def markdown(res: QualityResult, command: str) -> str:
    c = res.cfg
    recipe = c.recipe()
    parts = [
        "What a device serves at its MACs budget, next to what else a user could ship at the same MACs. "
        f"Reference model (`{c.checkpoint.name}`), image {res.image_size}x{res.image_size}; every row is "
        f"evaluated on the same {c.n_val} held-out synthetic scenes; MACs counted the same way for all rows "
        "(torch-pruning's op counter); ORT = onnxruntime CPU, 1 thread, batch 1, the models of a table timed "
        f"in turns ({ROUNDS} rounds of {RUNS_PER_ROUND} runs each, the lowest per-round median, so every model "
        "sees the same load); "
        "Δm vs. the full "
        f"model (the selected tasks' heads of the original). Rows:",
        "",
        "- **quick**, **refinement n**: `TorchEngine.build` then `TorchEngine.refine` as the fleet service runs "
        f"them (importance on unlabelled calibration scenes, {c.n_calib} of them, channel pruning, BatchNorm "
        f"re-estimation, the engine's recovery: {res.recovery}; a refinement is shipped only when better on "
        "validation). "
        "*build s* = that build's wall clock; *from request s* = the lineage's wall clock up to that model.",
        f"- **refinement {res.scratch_number} (from scratch)**: the engine's from-scratch candidate, tried "
        "after the distillation refinements because the server has labelled training data: the reference "
        "architecture with every width times one factor (the widest whose MACs stay within the refined "
        "model's and that runs at most 5 % slower than it in onnxruntime on this machine; factor in the "
        "row's note), only the selected tasks' heads, randomly initialised and trained "
        f"with the reference's recipe (AdamW lr {recipe.lr:g}, wd {recipe.weight_decay:g}, batch "
        f"{recipe.batch_size}, one-cycle) on the reference's {c.train_scenes} labelled training scenes for "
        + (
            f"the reference's whole {res.reference_epochs}-epoch schedule"
            if c.scratch_epochs >= res.reference_epochs
            else f"**{c.scratch_epochs / res.reference_epochs:.0%} of the reference's {res.reference_epochs}-epoch "
            f"schedule** (scaled down to fit the run; `--scratch-epochs {res.reference_epochs}` runs it whole)"
        )
        + f", its steps cut to what fits in {c.scratch_seconds:g} s on this machine. The engine ships it only "
        "when its Δm beats the refined model's by the refinement margin; a candidate it did not ship is "
        "listed as *from-scratch candidate (not shipped)*.",
        "- **scratch, same time**: the reference architecture narrowed to the refined model's MACs (no speed "
        "check; factor per case below), the same recipe, trained for the distillation lineage's wall clock "
        f"(quick build + distillation refinements){_same_time_epochs(res)}.",
        "- **Torch-Pruning, quick / final**: Torch-Pruning called as its README shows it, "
        f"`tp.pruner.BasePruner(..., round_to={ROUND_TO})`, output layers ignored, as "
        + "; ".join(f"*{name}* ({v.about})" for name, v in VARIANTS.items())
        + " (the importances' default normalisation, scores divided by their mean; local = every layer "
        "loses the same share of its channels), `pruning_ratio=1.0` over 100 iterative steps, stepped until "
        "the MACs fit (as the authors' reproduce script meets a speed-up; rounding to 8 channels can land "
        "below the budget: MMACs column; Taylor's gradients from the labelled loss of a calibration batch "
        "per step). Then the training edgecut's own lineage gets: the same BatchNorm re-estimation and the "
        "quick build's recovery for as many steps as the quick build reached (*quick*), then the same "
        "refinement schedules, each kept only when better on validation by the same margin (*final*). "
        "*quick* is compared with edgecut's quick model, *final* with the last model of edgecut's "
        "distillation lineage.",
        "",
        "Scratch width factors: "
        + ", ".join(f"{name}: {scale:.3f}" for name, scale in res.scratch_scales.items())
        + ".",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (load average {res.load[0]:.1f} at the start, "
        f"{res.load[1]:.1f} at the end), Python {platform.python_version()}. "
        f"Whole run: {res.seconds / 60:.1f} min. Rerun: `{command}`.",
        "",
        *_partial(res.cfg),
    ]
    for case in res.cases:
        parts += [*_case_table(case), ""]
    parts += [
        "**Goals of issue 20** (judged from the rows above by benchmarks/edgecut_bench/quality_goals.py):",
        "",
        *_verdict_table(verdicts(res.cases)),
        "",
        "**Baselines that beat or tie the shipped model** (Δm of each baseline vs. the edgecut model it "
        "is compared with: from scratch vs. the final shipped model, Torch-Pruning vs. the edgecut model "
        "given the same training; a difference within the seeds' spread is *no difference*, "
        "paper_stats.versus; one seed per row here, so every gap counts):",
        "",
        *_findings(res),
    ]
    return "\n".join(parts)


def plot(res: QualityResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(res.cases)
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, case in zip(axes.flat, res.cases, strict=False):
        shipped = case.of(*SHIPPED)
        ax.plot(
            [r.elapsed for r in shipped],
            [r.delta_m for r in shipped],
            marker="o",
            color="C0",
            label="edgecut ships (quick → refined → from scratch where better)",
        )
        scratch = case.of(*SCRATCH)
        ax.plot(
            [r.seconds for r in scratch],
            [r.delta_m for r in scratch],
            marker="s",
            ls="--",
            color="C1",
            label="from scratch",
        )
        for quick, final, name, color in zip(TP_QUICK, TP_FINAL, VARIANTS, ("C2", "C3", "C4"), strict=True):
            tp = case.of(quick, final)
            if tp:
                ax.plot(
                    [r.elapsed for r in tp],
                    [r.delta_m for r in tp],
                    marker="^",
                    ls=":",
                    color=color,
                    label=f"Torch-Pruning {name} (quick → final)",
                    zorder=3,
                )
        goal = delta_m_goal(case.budget)
        if goal is not None:
            ax.axhline(goal, color="grey", ls=":", lw=1, label=f"goal {goal:g} %")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xscale("log")
        ax.set_title(case.name, fontsize=10)
        ax.set_xlabel("wall clock from request / of training (s)")
        ax.set_ylabel("Δm vs. full model (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
