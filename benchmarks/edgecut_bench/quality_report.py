"""The *Quality at budget* section of docs/benchmarks.md and its Δm-vs-time plot (from bench quality's rows)."""

from __future__ import annotations

import math
import os
import platform
import re
from pathlib import Path

from edgecut.server.cut.scratch import ScratchOptions
from edgecut.server.ort_latency import ROUNDS, RUNS_PER_ROUND
from edgecut_bench.paper_stats import ALPHA, ONE_SEED
from edgecut_bench.quality import QualityConfig, QualityResult
from edgecut_bench.quality_goals import Against, Shipped, against_shipped, delta_m_goal, verdicts
from edgecut_bench.quality_rows import (
    SCRATCH,
    SCRATCH_TIME,
    SHIPPED,
    TP_FINAL,
    TP_QUICK,
    by_setting,
)
from edgecut_bench.quality_tables import case_table, collapsed, comparison_table, verdict_table
from edgecut_bench.tp_baseline import ROUND_TO, VARIANTS

SECTION = "Quality at budget"
# a baseline this much slower than the shipped model is not at the same speed (the engine's tolerance)
SLOWER = ScratchOptions.max_slowdown


# (baseline kinds, what they are, what they are compared with, how that model is named)
COMPARISONS: tuple[tuple[tuple[str, ...], str, Shipped, str], ...] = (
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
    edgecut's quick model and its final rows against edgecut's last distilled model; a win only by the
    paired test over seeds."""
    out: list[str] = []
    table: list[Against] = []
    for kinds, what, against, named in COMPARISONS:
        found = against_shipped(res.cases, kinds, against)
        table += found
        wins = [a for a in found if a.wins]
        if found and all(a.test.verdict == "not tested" for a in found):
            ahead = [a for a in found if a.baseline_delta_m.mean > a.shipped_delta_m.mean]
            out.append(
                f"- {what} against {named}: not tested (one seed; a paired test needs two or more). On this "
                f"seed the baseline's Δm is above in {len(ahead)} of {len(found)} comparisons"
                + (": " + "; ".join(f"{a.baseline} at {a.case}" for a in ahead) if ahead else "")
                + "."
            )
            continue
        if not wins:
            out.append(f"- No {what} baseline beats {named} by the paired test, in any case.")
            continue
        for w in wins:
            out.append(
                f"- **{what} wins** at {w.case}: {w.baseline} Δm {w.baseline_delta_m.pm()} % against "
                f"{named} {w.shipped_delta_m.pm()} % (by {w.test.said()}){_speed_note(w)}{_per_task(w)}."
            )
    return [*comparison_table(table), "", *out]


def _per_task(w: Against) -> str:
    """Where the gap comes from: each task's change against the full model, baseline beside edgecut."""
    if not w.tasks:
        return ""
    parts = [f"{t} {b:+.1f} vs {a:+.1f} %" for t, (b, a) in w.tasks.items()]
    return (
        "; per task against the full model (mean over the seeds, the baseline's vs edgecut's): "
        + ", ".join(parts)
    )


def _speed_note(w: Against) -> str:
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


def _partial(res: QualityResult) -> list[str]:
    """A line saying which cases and seeds of the issue's matrix this run left out (empty when none)."""
    c = res.cfg
    full = QualityConfig(c.checkpoint, c.data_dir)
    missing = sorted(set(full.matrix()) - {(case.tasks, case.budget) for case in res.cases})
    seeds = len(_seeds(res)) or 1
    said = []
    if missing:
        left = "; ".join(f"{' + '.join(ts)} @ macs {b:g}" for ts, b in missing)
        said.append(f"not measured here: {left}")
    per_setting = _seeds_per_setting(res)
    if len(set(per_setting.values())) > 1:  # the seeds differ between cases: say which ran on which
        said.append(
            "seeds per case of the default "
            f"{len(full.seeds)}: "
            + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in per_setting.items())
        )
    elif seeds < len(full.seeds):
        said.append(f"{seeds} seed{'s' if seeds > 1 else ''} of the default {len(full.seeds)}")
    if not said:
        return []
    return [
        f"**Partial run**: {'; '.join(said)} (the defaults of `edgecut bench quality` run them).",
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
        + _scratch_epochs(c.scratch_epochs, res.reference_epochs)
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
        "Scratch width factors: " + _scales(res) + ".",
        "",
        _seeds_said(res),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (load average {res.load[0]:.1f} at the start, "
        f"{res.load[1]:.1f} at the end), Python {platform.python_version()}. "
        f"Whole run: {res.seconds / 60:.1f} min. Rerun: `{command}`.",
        "",
        *_partial(res),
    ]
    for group in by_setting(res.cases).values():
        parts += [*case_table(group), ""]
    parts += [
        "**Goals of issue 20** (judged from the rows above by benchmarks/edgecut_bench/quality_goals.py"
        + (", on each seed" if len(_seeds(res)) > 1 else "")
        + "):",
        "",
        *verdict_table(collapsed(verdicts(res.cases))),
        "",
        "**Baselines against the shipped model** (Δm of each baseline against the edgecut model it is "
        "compared with: from scratch vs. the final shipped model, Torch-Pruning vs. the edgecut model "
        "given the same training; paired by seed, a baseline wins only where the paired test says so):",
        "",
        *_findings(res),
    ]
    return "\n".join(parts)


def _scratch_epochs(epochs: float, reference: int) -> str:
    """How long the candidate trains, beside the engine's default and the reference's own schedule."""
    engine = ScratchOptions().epochs
    said = f"{epochs:g} epochs" + (
        " (the engine's default" if epochs == engine else f" (the engine's: {engine:g}"
    )
    return said + (f"; the reference itself trained {reference})" if reference else ")")


def _seeds(res: QualityResult) -> list[int]:
    return sorted({c.seed for c in res.cases if c.seed is not None})


def _scales(res: QualityResult) -> str:
    """Each setting's from-scratch width factor (one per seed when they differ)."""
    by: dict[str, list[str]] = {}
    for case in res.cases:
        if case.name in res.scratch_scales:
            by.setdefault(case.setting, []).append(f"{res.scratch_scales[case.name]:.3f}")
    return ", ".join(f"{k}: {' / '.join(dict.fromkeys(v))}" for k, v in by.items())


def _seeds_per_setting(res: QualityResult) -> dict[str, tuple[int, ...]]:
    return {k: tuple(c.seed or 0 for c in group) for k, group in by_setting(res.cases).items()}


def _seeds_said(res: QualityResult) -> str:
    seeds = _seeds(res)
    if len(seeds) < 2:
        return ONE_SEED
    same = len(set(_seeds_per_setting(res).values())) == 1
    ran = (
        f"every case ran on {len(seeds)} seeds ({', '.join(map(str, seeds))})"
        if same
        else f"the cases ran on up to {len(seeds)} seeds ({', '.join(map(str, seeds))}; which case on which: "
        "*Partial run* below; a case on one seed is not tested)"
    )
    return (
        f"**Seeds**: {ran}. A seed draws the "
        "calibration scenes (seed 0: the engine's own) and everything random in every build and training "
        "(scoring batches, recovery and training order, the from-scratch models' initialisation); the "
        "validation and training scenes are the same for all. Figures are means over the seeds, Δm mean ± "
        "sd; a baseline is compared with the model edgecut ships by a paired t-test over the seeds "
        f"(two-sided, {ALPHA * 100:g} %): a win or a loss only where the 95 % interval of the mean per-seed gap "
        "excludes 0, else *no difference*."
    )


def plot(res: QualityResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(by_setting(res.cases).values())
    n = len(groups)
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, group in zip(axes.flat, groups, strict=False):
        for i, case in enumerate(group):  # one line per seed, labelled once
            first = i == 0
            alpha = 0.8 if first else 0.45
            shipped = case.of(*SHIPPED)
            ax.plot(
                [r.elapsed for r in shipped],
                [r.delta_m for r in shipped],
                marker="o",
                color="C0",
                alpha=alpha,
                label="edgecut ships (quick → refined → from scratch where better)" if first else None,
            )
            scratch = case.of(*SCRATCH)
            ax.plot(
                [r.seconds for r in scratch],
                [r.delta_m for r in scratch],
                marker="s",
                ls="--",
                color="C1",
                alpha=alpha,
                label="from scratch" if first else None,
            )
            for quick, final, name, color in zip(
                TP_QUICK, TP_FINAL, VARIANTS, ("C2", "C3", "C4"), strict=True
            ):
                tp = case.of(quick, final)
                if tp:
                    ax.plot(
                        [r.elapsed for r in tp],
                        [r.delta_m for r in tp],
                        marker="^",
                        ls=":",
                        color=color,
                        alpha=alpha,
                        label=f"Torch-Pruning {name} (quick → final)" if first else None,
                        zorder=3,
                    )
        case = group[0]
        goal = delta_m_goal(case.budget)
        if goal is not None:
            ax.axhline(goal, color="grey", ls=":", lw=1, label=f"goal {goal:g} %")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xscale("log")
        seeds = f" ({len(group)} seeds)" if len(group) > 1 else ""
        ax.set_title(case.setting + seeds, fontsize=10)
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
