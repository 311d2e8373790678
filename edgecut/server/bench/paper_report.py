"""Markdown sections, the Garg plot and the "what we learned" paragraph of `edgecut bench paper`.

Every sentence that states a finding is computed from the rows of the run it describes.
"""

from __future__ import annotations

import math
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from edgecut.server.bench.paper import DEFAULT_ROW, ChannelRow, GargRow, MaskRow, PaperResult
from edgecut.server.cut.methods import DEFAULT_METHOD, MASK_METHODS, METHODS
from edgecut.server.mtl.metric_names import PRIMARY
from edgecut.server.mtl.tasks import TaskSpec

SECTIONS = (
    "Paper: CUT unstructured",
    "Paper: structured",
    "Paper: Garg reproduction",
    "Paper: what we learned",
)
PAPER_METRICS = {  # as the papers report them
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "rel_err", "delta1", "delta2", "delta3"),
    "normals": ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"),
    "edges": ("f1",),
    "classification": ("accuracy",),
}
SIMILAR_PP = 5.0  # two criteria "give similar quality" when their Δm differ by less than this on average


def _columns(tasks: Sequence[str], specs: dict[str, TaskSpec], full: bool) -> list[tuple[str, str]]:
    return [
        (t, k) for t in tasks for k in (PAPER_METRICS[specs[t].kind] if full else (PRIMARY[specs[t].kind],))
    ]


def _label(name: str) -> str:
    if name == DEFAULT_ROW:
        m = METHODS[DEFAULT_METHOD]
        return f"edgecut default ({m.criterion}/{m.fusion}/{m.target})"
    m = MASK_METHODS[name]
    return f"{name} ({m.criterion}/{m.fusion}/{m.target})"


def _machine(res: PaperResult) -> str:
    s = res.seconds
    return (
        f"Machine: {platform.machine()}, 2 cores, torch {torch.__version__}, {torch.get_num_threads()} threads. "
        f"Whole run {s['total'] / 60:.1f} min (unstructured {s['unstructured'] / 60:.1f}, structured "
        f"{s['structured'] / 60:.1f}, Garg {s['garg'] / 60:.1f}). Rerun: `edgecut bench paper`."
    )


def unstructured_md(res: PaperResult, specs: dict[str, TaskSpec]) -> str:
    c = res.cfg
    lat = res.mask_latency
    head = [
        f"Reference model at {res.image_size}x{res.image_size} input (the papers: a dilated ResNet-34 on "
        f"NYUv2 / Cityscapes images of a few hundred pixels). **Scaled to fit 90 min on 2 cores:** scores from "
        f"{c.calib_batches} calibration batches of {c.batch_size} labelled scenes (papers: B = 50 batches); "
        f"fine-tune = CUT's recipe (Adam, weight decay 1e-4, constant lr, the selected tasks' labelled losses, "
        f"masks fixed), {c.ft_steps} iterations at lr {c.ft_lr:g} instead of ~1000 at 1e-5, batch "
        f"{c.batch_size}, on {c.n_train} scenes, identical for every row; metrics on {c.n_val} held-out scenes.",
        "",
        "Masks cover every Conv/Linear weight of the trunk and the selected heads. Per-task scores are "
        "normalised to sum 1 and cut by one global top-k per task; the trunk is fused by the method's rule "
        "(heads keep their own task's mask); random, magnitude and SNIP-at-init are task-agnostic (one "
        "global top-k). SNIP-at-init scores a freshly initialised copy with the summed loss and its mask is "
        "applied to the trained weights before the same fine-tune. Sparsity is **matched**: the per-task "
        "keep ratio (column *keep*) is chosen so that the fused mask removes the target share of the "
        "prunable weights (with the papers' keep = 1 - sparsity, the union would prune less and the vote "
        "more than the target). Δm is vs. the full pre-trained model (its selected heads), higher is better; "
        "*before* = masked, no fine-tune.",
        "",
        f"Why the product prunes channels: onnxruntime (CPU, 1 thread, batch 1) runs the dense "
        f"{'+'.join(lat.tasks)} model in **{lat.dense_ms:.2f} ms** and the CUT-masked one at "
        f"{lat.sparsity:.0%} sparsity (zeros folded into the weights) in **{lat.masked_ms:.2f} ms** "
        f"({lat.dense_ms / lat.masked_ms:.2f}x): zeros in dense kernels cost the same time.",
        "",
        f"1-task guard: with **{res.guard.task}** alone at {res.guard.sparsity:.0%} sparsity (per-task keep "
        f"{1 - res.guard.sparsity:.0%}), the vote with v = min(2, 1) = 1 keeps "
        f"**{res.guard.trunk_kept_guarded:.1%}** of the trunk's weights; the published v = 2 keeps "
        f"{res.guard.trunk_kept_published:.1%}.",
        "",
        _machine(res),
    ]
    out = list(head)
    for tasks in c.task_sets:
        cols = _columns(tasks, specs, full=True)
        full = res.full[tasks]
        out += [
            "",
            f"**Tasks {', '.join(tasks)}** ({res.sizes[tasks].params / 1e3:.0f}k params after decomposition)",
            "",
            "| method (scores/fusion/loss) | target | sparsity | keep | trunk kept | "
            + " | ".join(f"{t} {k}" for t, k in cols)
            + " | Δm % before | Δm % after |",
            "|---|---:|---:|---:|---:|" + "---:|" * len(cols) + "---:|---:|",
            "| full model | - | 0% | - | 100% | "
            + " | ".join(f"{full[t][k]:.4f}" for t, k in cols)
            + " | 0.00 | 0.00 |",
        ]
        for r in (r for r in res.mask_rows if r.tasks == tasks):
            keep = "-" if math.isnan(r.keep_ratio) else f"{r.keep_ratio:.0%}"
            out.append(
                f"| {_label(r.method)} | {r.target:.0%} | {r.sparsity:.1%} | {keep} | {r.trunk_kept:.0%} | "
                + " | ".join(f"{r.result.after[t][k]:.4f}" for t, k in cols)
                + f" | {r.result.dm_before:+.2f} | {r.result.dm_after:+.2f} |"
            )
    return "\n".join(out)


def structured_md(res: PaperResult, specs: dict[str, TaskSpec]) -> str:
    c = res.cfg
    tasks = c.structured_tasks
    sel = res.sizes[tasks]
    cols = _columns(tasks, specs, full=True)
    full = res.full[tasks]
    out = [
        f"The same per-weight scores as above, summed per output channel, steer the product path: whole "
        f"channel groups removed with torch-pruning's dependency graph until the share of the "
        f"{', '.join(tasks)} model's parameters in *removed* is gone (task-agnostic scores ranked directly, "
        f"per-task scores fused at channel level by the same rule), BatchNorm statistics re-estimated, then "
        f"the same fine-tune as above ({c.ft_steps} iterations, Adam lr {c.ft_lr:g}). The last rows are "
        f"edgecut's default channel method (`{DEFAULT_METHOD}`). Latency: onnxruntime CPU, 1 thread, batch 1, "
        f"median of {c.latency_runs}. Same scaling as above; *before* = after BatchNorm re-estimation.",
        "",
        _machine(res),
        "",
        "| method (scores/fusion/loss) | removed | params | MMACs | ORT ms | speed-up | "
        + " | ".join(f"{t} {k}" for t, k in cols)
        + " | Δm % before | Δm % after |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(cols) + "---:|---:|",
        f"| full model | 0% | {sel.params / 1e3:.1f}k | {sel.macs / 1e6:.2f} | {res.dense_latency_ms:.2f} | 1.00 | "
        + " | ".join(f"{full[t][k]:.4f}" for t, k in cols)
        + " | 0.00 | 0.00 |",
    ]
    for r in res.channel_rows:
        out.append(
            f"| {_label(r.method)} | {1 - r.size.params / sel.params:.0%} | {r.size.params / 1e3:.1f}k | "
            f"{r.size.macs / 1e6:.2f} | {r.latency_ms:.2f} | {res.dense_latency_ms / r.latency_ms:.2f} | "
            + " | ".join(f"{r.result.after[t][k]:.4f}" for t, k in cols)
            + f" | {r.result.dm_before:+.2f} | {r.result.dm_after:+.2f} |"
        )
    return "\n".join(out)


def garg_findings(rows: list[GargRow]) -> list[str]:
    """The two findings of Garg et al., each stated as holding or not on these rows."""
    crits = list(dict.fromkeys(r.criterion for r in rows))
    out = []
    if len(crits) >= 2:
        a, b = crits[:2]
        by = {(r.criterion, r.round): r for r in rows}
        gaps = [
            abs(by[(a, k)].dm_iterative - by[(b, k)].dm_iterative) for (c, k) in by if c == a and (b, k) in by
        ]
        if gaps:
            gap = statistics.fmean(gaps)
            verdict = "holds" if gap < SIMILAR_PP else "does not hold"
            out.append(
                f"Finding 1 (the two criteria give similar quality at equal size) **{verdict}** here: at the "
                f"same number of filters removed, iterative {a} and {b} differ by {gap:.1f} pp of Δm on average "
                f"(we call under {SIMILAR_PP:.0f} pp similar)."
            )
    last = max((r.round for r in rows), default=0)
    extreme = [r for r in rows if r.round == last]
    if extreme:
        better = [r for r in extreme if r.dm_retrained > r.dm_iterative]
        verdict = "holds" if len(better) == len(extreme) else "partly holds" if better else "does not hold"
        detail = "; ".join(
            f"{r.criterion}: {r.size.params / 1e3:.0f}k params, iterative Δm {r.dm_iterative:+.1f} %, "
            f"re-initialised and retrained {r.dm_retrained:+.1f} %"
            for r in extreme
        )
        out.append(
            f"Finding 2 (at extreme pruning the same architecture retrained from scratch beats iterative "
            f"pruning) **{verdict}** here at the most pruned checkpoint ({detail})."
        )
    return out


def garg_md(res: PaperResult, specs: dict[str, TaskSpec], plot_name: str | None) -> str:
    c, it = res.cfg, res.cfg.iterative
    tasks = c.garg_tasks
    cols = _columns(tasks, specs, full=False)
    out = [
        f"Tasks {', '.join(tasks)}; only trunk filters are removed, at least {it.min_channels} per layer. "
        f"Iterative: from the trained weights, keep training (AdamW lr {it.lr:g}, published 5e-5, raised "
        f"for the short schedule; labelled losses, batch {c.batch_size}) and remove {it.remove_per_round} "
        f"filters every {it.every} iterations (published: 100 of VGG-16's 4224 every 500), ranked by the "
        f"criterion on the last {it.score_batches} training batches, for {it.rounds} rounds; evaluated every "
        f"{it.record_every} rounds. Retrained: each recorded architecture re-initialised and trained from "
        f"scratch for the same {res.garg_steps} steps as the whole iterative run (AdamW lr {c.retrain_lr:g}, "
        f"cosine, labelled losses). Δm vs. the full pre-trained model.",
        "",
        _machine(res),
        "",
        "| criterion | round | filters removed | params | Δm % iterative | Δm % retrained | "
        + " | ".join(f"{t} {k} (iter / retrained)" for t, k in cols)
        + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(cols),
    ]
    for r in res.garg_rows:
        out.append(
            f"| {r.criterion} | {r.round} | {r.filters_removed} | {r.size.params / 1e3:.1f}k | "
            f"{r.dm_iterative:+.2f} | {r.dm_retrained:+.2f} | "
            + " | ".join(f"{r.iterative[t][k]:.4f} / {r.retrained[t][k]:.4f}" for t, k in cols)
            + " |"
        )
    out += ["", *garg_findings(res.garg_rows)]
    if plot_name:
        out += ["", f"![each task's metric vs. params]({plot_name})"]
    return "\n".join(out)


def _compare(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, float]:
    wins = sum(x > y for x, y in zip(a, b, strict=True))
    return wins, len(a), statistics.fmean(x - y for x, y in zip(a, b, strict=True)) if a else 0.0


def _pairs_masks(rows: list[MaskRow], a: str, b: str) -> tuple[list[float], list[float]]:
    by = {(r.tasks, r.target, r.method): r.result.dm_after for r in rows}
    keys = [(t, s) for (t, s, m) in by if m == a and (t, s, b) in by]
    return [by[(t, s, a)] for t, s in keys], [by[(t, s, b)] for t, s in keys]


def _pairs_channels(rows: list[ChannelRow], a: str, b: str) -> tuple[list[float], list[float]]:
    by = {(r.level, r.method): r.result.dm_after for r in rows}
    keys = [lv for (lv, m) in by if m == a and (lv, b) in by]
    return [by[(lv, a)] for lv in keys], [by[(lv, b)] for lv in keys]


def _verdict(name_a: str, name_b: str, results: list[tuple[int, int, float]]) -> str:
    results = [r for r in results if r[1] > 0]
    if not results:
        return f"{name_a} and {name_b} were not both measured"
    ahead = [w > n / 2 and d > 0 for w, n, d in results]
    behind = [w < n / 2 and d < 0 for w, n, d in results]
    if all(ahead):
        return f"{name_a} beats {name_b}"
    if all(behind):
        return f"{name_b} beats {name_a}"
    return f"neither {name_a} nor {name_b} wins consistently"


def learned_md(res: PaperResult) -> str:
    vu_m = _compare(*_pairs_masks(res.mask_rows, "cut", "disparse"))
    vu_c = _compare(*_pairs_channels(res.channel_rows, "cut", "disparse"))
    dl_m = _compare(*_pairs_masks(res.mask_rows, "cut-distill", "cut"))
    dl_c = _compare(*_pairs_channels(res.channel_rows, "cut-distill", "cut"))
    means = {
        m: statistics.fmean(r.result.dm_after for r in res.channel_rows if r.method == m)
        for m in dict.fromkeys(r.method for r in res.channel_rows)
    }
    ranked = sorted(means, key=lambda m: means[m], reverse=True)
    lines = [
        f"*Does the vote beat the union?* {_verdict('the vote', 'the union', [vu_m, vu_c])}: after the same "
        f"fine-tune, CUT (vote) has the higher Δm in {vu_m[0]} of {vu_m[1]} unstructured settings (mean "
        f"{vu_m[2]:+.2f} pp vs. DiSparse's union) and {vu_c[0]} of {vu_c[1]} structured ones ({vu_c[2]:+.2f} pp).",
        f"*Does distillation beat labelled scoring?* {_verdict('distillation', 'labels', [dl_m, dl_c])}: "
        f"scores from the label-free distillation objective give the higher Δm in {dl_m[0]} of {dl_m[1]} "
        f"unstructured settings ({dl_m[2]:+.2f} pp) and {dl_c[0]} of {dl_c[1]} structured ones "
        f"({dl_c[2]:+.2f} pp).",
    ]
    if ranked:
        best = ranked[0]
        runner = f", ahead of {_label(ranked[1])} ({means[ranked[1]]:+.2f} %)" if len(ranked) > 1 else ""
        levels = "/".join(f"{lv:.0%}" for lv in res.cfg.levels)
        current = means.get(DEFAULT_ROW)
        if best == DEFAULT_ROW:
            tail = "that is the current default, so it stays."
        elif current is not None:
            tail = (
                f"the current default `{DEFAULT_METHOD}` scores {current:+.2f} %, {means[best] - current:.2f} pp "
                f"behind, so these numbers say the default should become {_label(best)}."
            )
        else:
            tail = "the current default was not measured."
        lines.append(
            f"*edgecut's default* is the method with the best mean Δm after fine-tuning on the structured "
            f"(shipping) path over {levels} params removed: **{_label(best)}** at {means[best]:+.2f} %{runner}; "
            + tail
        )
    lines.append(_machine(res))
    return " ".join(lines[:-1]) + "\n\n" + lines[-1]


def plot_garg(res: PaperResult, specs: dict[str, TaskSpec], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = res.cfg.garg_tasks
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    full = res.full[tasks]
    for ax, task in zip(axes[0], tasks, strict=True):
        key = PRIMARY[specs[task].kind]
        for crit in dict.fromkeys(r.criterion for r in res.garg_rows):
            rows = sorted((r for r in res.garg_rows if r.criterion == crit), key=lambda r: r.size.params)
            xs = [r.size.params / 1e3 for r in rows]
            ax.plot(xs, [r.iterative[task][key] for r in rows], marker="o", label=f"iterative {crit}")
            ax.plot(
                xs,
                [r.retrained[task][key] for r in rows],
                marker="s",
                ls="--",
                label=f"retrained ({crit} arch.)",
            )
        ax.axhline(full[task][key], color="grey", lw=0.8, label="full model")
        ax.set_xlabel("params (k)")
        ax.set_title(f"{task} {key}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Garg et al. reproduction: iterative pruning vs. re-initialised and retrained")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sections(res: PaperResult, specs: dict[str, TaskSpec], plot_name: str | None) -> dict[str, str]:
    bodies = (
        unstructured_md(res, specs),
        structured_md(res, specs),
        garg_md(res, specs, plot_name),
        learned_md(res),
    )
    return dict(zip(SECTIONS, bodies, strict=True))
