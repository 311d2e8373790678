"""Markdown sections and the Garg plot of `edgecut bench paper`, every figure a mean (± sd) over seeds.

Every sentence that states a finding is computed from the rows of the run it describes (the findings
themselves are in paper_learned.py).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from edgecut.server.cut.masks import PAPERS_KEEP_NYUV2
from edgecut.server.cut.methods import DEFAULT_METHOD
from edgecut.server.cut.recover import ESCM_TASK_WEIGHTS
from edgecut.server.mtl.metric_names import DELTA_M_METRICS, PRIMARY
from edgecut.server.mtl.tasks import TaskSpec
from edgecut_bench import paper_learned as learned
from edgecut_bench.paper_learned import kept_table, label
from edgecut_bench.paper_rows import GargRow, PaperResult
from edgecut_bench.paper_stats import Stat, grouped, mean, stat

SECTIONS = (
    "Paper: CUT unstructured",
    "Paper: kept share per layer",
    "Paper: structured",
    "Paper: Garg reproduction",
    "Paper: what we learned",
)
SUMMARY_LEAD = "The seed papers, reproduced"
PAPER_METRICS = {  # as the papers report them
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "rel_err", "delta1", "delta2", "delta3"),
    "normals": ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"),
    "edges": ("f1",),
    "classification": ("accuracy",),
}


def _columns(tasks: Sequence[str], specs: dict[str, TaskSpec], full: bool) -> list[tuple[str, str]]:
    return [
        (t, k) for t in tasks for k in (PAPER_METRICS[specs[t].kind] if full else (PRIMARY[specs[t].kind],))
    ]


def machine(res: PaperResult) -> str:
    s = res.seconds
    return (
        f"Machine: {platform.machine()}, 2 cores (shared), torch {torch.__version__}; {len(res.cfg.seeds)} seeds "
        f"({', '.join(map(str, res.cfg.seeds))}) in {res.workers} worker process(es) of 1 thread. Whole run "
        f"**{s['total'] / 60:.1f} min** wall clock (worker time: unstructured {s.get('unstructured', 0) / 60:.1f}, "
        f"structured {s.get('structured', 0) / 60:.1f}, Garg {s.get('garg', 0) / 60:.1f} min; latencies "
        f"{s.get('latency', 0) / 60:.1f} min). Rerun: `edgecut bench paper`."
    )


def _metric_means(results: Sequence[dict[str, dict[str, float]]], cols: list[tuple[str, str]]) -> str:
    return " | ".join(f"{mean(m[t][k] for m in results):.4f}" for t, k in cols)


def _delta_m_text(specs: dict[str, TaskSpec]) -> str:
    kinds = dict.fromkeys(s.kind for s in specs.values())
    parts = ", ".join(f"{k}: {' + '.join(DELTA_M_METRICS[k])}" for k in kinds)
    return (
        f"Δm (metrics.py) = per task the mean relative change of its metrics ({parts}; lower-is-better ones "
        "sign-flipped), then the mean over tasks; vs. the full pre-trained model (its selected heads), "
        "higher is better."
    )


def unstructured_md(res: PaperResult, specs: dict[str, TaskSpec]) -> str:
    c = res.cfg
    lat = res.mask_latency
    lam = ", ".join(f"{t} {w:g}" for t, w in ESCM_TASK_WEIGHTS)
    keep = " / ".join(f"{k:g}" for k in PAPERS_KEEP_NYUV2.values())
    nominal = " / ".join(f"{s:.0%}" for s in PAPERS_KEEP_NYUV2)
    head = [
        f"Reference model at {res.image_size}x{res.image_size} input (the papers: a dilated ResNet-34 on "
        f"NYUv2 / Cityscapes images of a few hundred pixels). **Scaled to fit 90 min on 2 cores:** scores from "
        f"{c.calib_batches} calibration batches of {c.batch_size} labelled scenes (papers: B = 50 batches), "
        f"BatchNorm in train mode while scoring as in the CUT / DiSparse code; fine-tune = CUT's recipe (Adam, "
        f"weight decay 1e-4, constant lr, the selected tasks' labelled losses weighted by ESCM's lambdas "
        f"{lam}, masks fixed), {c.ft_steps} iterations at lr {c.ft_lr:g} instead of ~1000 at 1e-5, batch "
        f"{c.batch_size}, on {c.n_train} scenes, identical for every row; metrics on {c.n_val} held-out scenes "
        f"(the same for every seed). Every figure is the **mean over {len(c.seeds)} seeds**, Δm as mean ± sd.",
        "",
        "Masks cover every Conv/Linear weight of the trunk and the selected heads. Per-task scores are "
        "normalised to sum 1 and cut by one global top-k per task; the trunk is fused by the method's rule "
        "(heads keep their own task's mask); random, magnitude and SNIP-at-init are task-agnostic (one "
        "global top-k). SNIP-at-init scores a freshly initialised copy with the summed loss. *snip-union* "
        "is SNIP at the trained weights with DiSparse's union (the fusion branch ESCM's code has commented "
        "out); *disparse-pt* is DiSparse's own pre-trained recipe (per task, the sum over batches of "
        "|dL_t/dw| times w², union). Sparsity is **matched**: the per-task keep ratio (column *keep*) is "
        "chosen so that the fused mask removes the target share of the prunable weights. The papers' code "
        f"instead gives every task a hand-tuned keep ratio ({keep} for nominal {nominal} on NYUv2, in "
        "ESCM and in DiSparse's static setup) and lets the sparsity fall where the fusion puts it: that is "
        "the *cut-papers-keep* row (its *sparsity* column is what the vote really removed). *cut-distill* "
        "scores the label-free objective at second order (mean (w·d(r·f)/dw)², edgecut's own), "
        "*cut-distill-fo* at first order (mean |w·d(r·f)/dw|, the order of CUT's |w·dL/dw|), so the target "
        "and the order can be compared one at a time. " + _delta_m_text(specs) + " *before* = masked, no "
        "fine-tune.",
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
        machine(res),
    ]
    out = list(head)
    for tasks in c.task_sets:
        cols = _columns(tasks, specs, full=True)
        full = res.full[tasks]
        rows = grouped((r for r in res.mask_rows if r.tasks == tasks), lambda r: (r.method, r.target))
        out += [
            "",
            f"**Tasks {', '.join(tasks)}** ({res.sizes[tasks].params / 1e3:.0f}k params after decomposition). "
            + learned.best_line(res, tasks),
            "",
            "| method (scores/fusion/loss) | target | sparsity | keep | trunk kept | "
            + " | ".join(f"{t} {k}" for t, k in cols)
            + " | Δm % before | Δm % after |",
            "|---|---:|---:|---:|---:|" + "---:|" * len(cols) + "---:|---:|",
            "| full model | - | 0% | - | 100% | "
            + " | ".join(f"{full[t][k]:.4f}" for t, k in cols)
            + " | 0.00 | 0.00 |",
        ]
        for (method, target), rs in rows.items():
            keep_ratio = mean(r.keep_ratio for r in rs)
            keep_text = "-" if math.isnan(keep_ratio) else f"{keep_ratio:.0%}"
            out.append(
                f"| {label(method)} | {target:.0%} | {mean(r.sparsity for r in rs):.1%} | {keep_text} | "
                f"{mean(r.trunk_kept for r in rs):.0%} | "
                + _metric_means([r.result.after for r in rs], cols)
                + f" | {stat([r.result.dm_before for r in rs]).pm()} | {stat([r.result.dm_after for r in rs]).pm()} |"
            )
    return "\n".join(out)


def kept_md(res: PaperResult) -> str:
    c = res.cfg
    names, cols, sizes = kept_table(res.kept)
    if not names:
        return "No kept shares were logged (none of the logged methods ran)."
    layers = [n for n in sizes if "." in n]
    regions = [n for n in sizes if "." not in n]
    out = [
        f"Tasks {', '.join(c.kept_tasks)}: the share of each layer's weights the fused mask keeps after the "
        f"matched-sparsity cut, mean over {len(c.seeds)} seeds; the *own* columns are the mask each task's "
        "own per-task top-k keeps before CUT's vote (two tasks: the vote keeps a trunk weight only where "
        "both do). Heads keep their own task's mask.",
        "",
        *learned.kept_findings(res),
        "",
        "| layer | weights | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for n in [*regions, *layers]:
        shown = f"**{n}**" if n in regions else f"`{n}`"
        out.append(
            f"| {shown} | {sizes[n]} | " + " | ".join(f"{cols[k].get(n, math.nan):.0%}" for k in names) + " |"
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
        f"per-task scores fused at channel level by the same rule; channels coupled across layers sum their "
        f"layers' scores), BatchNorm statistics re-estimated, then the same fine-tune as above "
        f"({c.ft_steps} iterations, Adam lr {c.ft_lr:g}, ESCM's task weights). The papers' keep table has no "
        f"channel analogue and is left out. The last rows are edgecut's default channel method "
        f"(`{DEFAULT_METHOD}`, scored with BatchNorm in eval mode as the product does). Latency: "
        f"onnxruntime CPU, 1 thread, batch 1, median of {c.latency_runs}, measured after all parts finished. "
        f"Mean over {len(c.seeds)} seeds; *before* = after BatchNorm re-estimation.",
        "",
        machine(res),
        "",
        "| method (scores/fusion/loss) | removed | params | MMACs | ORT ms | speed-up | "
        + " | ".join(f"{t} {k}" for t, k in cols)
        + " | Δm % before | Δm % after |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(cols) + "---:|---:|",
        f"| full model | 0% | {sel.params / 1e3:.1f}k | {sel.macs / 1e6:.2f} | {res.dense_latency_ms:.2f} | 1.00 | "
        + " | ".join(f"{full[t][k]:.4f}" for t, k in cols)
        + " | 0.00 | 0.00 |",
    ]
    for (method, _), rs in grouped(res.channel_rows, lambda r: (r.method, r.level)).items():
        params = mean(r.size.params for r in rs)
        ms = mean(r.latency_ms for r in rs)
        out.append(
            f"| {label(method)} | {1 - params / sel.params:.0%} | {params / 1e3:.1f}k | "
            f"{mean(r.size.macs for r in rs) / 1e6:.2f} | {ms:.2f} | {res.dense_latency_ms / ms:.2f} | "
            + _metric_means([r.result.after for r in rs], cols)
            + f" | {stat([r.result.dm_before for r in rs]).pm()} | {stat([r.result.dm_after for r in rs]).pm()} |"
        )
    return "\n".join(out)


def garg_md(res: PaperResult, specs: dict[str, TaskSpec], plot_name: str | None) -> str:
    c, it = res.cfg, res.cfg.iterative
    tasks = c.garg_tasks
    cols = _columns(tasks, specs, full=False)
    pre = c.garg_pretrain_steps
    out = [
        f"Tasks {', '.join(tasks)}; only trunk filters are removed, at least {it.min_channels} per layer. "
        f"**Equal training for both arms.** Garg et al. compare the same pruned architecture trained two "
        f"ways: iteratively pruned from a dense model trained from scratch, and re-initialised and trained "
        f"from scratch like that dense model was (their train_config_models.py trains each pruned configuration "
        f"from a fresh initialisation for as many epochs as the base model on the same data). Here every "
        f"model is trained on the same {c.n_train} scenes with the same "
        f"number of optimiser steps: the dense model (the packaged model's architecture for these tasks; its "
        f"packaged weights are not used, since they carry training no retrained arm gets) is trained from "
        f"scratch for {pre} steps (AdamW lr {c.retrain_lr:g}, cosine, labelled losses, batch {c.batch_size}); "
        f"the iterative arm continues from it; each recorded architecture is re-initialised and trained from "
        f"scratch for {pre} steps plus the iterative steps it was recorded after (column *steps*: the same "
        f"for both arms, the dense model's included; same recipe as the dense model). **Scaled down for both "
        f"arms alike:** the packaged model trained far longer, and retraining every arm for that would take "
        f"hours per seed. Δm (mean ± sd) is against each seed's "
        f"dense model after its {pre} steps.",
        "",
        f"Iterative: keep training (AdamW lr {it.lr:g}, published 5e-5, raised for the short schedule; "
        f"unweighted labelled losses as in Garg's code) and remove {it.remove_per_round} channels every "
        f"{it.every} iterations (published: 100 of VGG-16's 4224 filters every 500), ranked by the criterion "
        f"on the interval's last {it.score_batches} training batches with BatchNorm normalising each batch "
        f"(Garg: every batch of the interval, a VGG without BatchNorm), for {it.rounds} rounds ({res.garg_steps} "
        f"steps). Each configuration is evaluated **after its training interval**, just before the next cut, "
        f"as Garg's code records it (round r = r cuts, then {it.every} more iterations); every "
        f"{it.record_every} rounds. Taylor = (g·dL/dg)² on a gate per channel with the mini-batch gradient of "
        "the summed loss, averaged over the batches; CosPrune = per conv filter, the cosine between the "
        "tasks' gradients of its weights, per batch, averaged over task pairs and batches, lowest first. "
        "**What a filter is here:** the residual adds couple channels (the stem with layer1's second convs, "
        "each stage's first block with its second), so the unit removed is a coupled channel, taking one "
        "output filter from every conv it couples (*channels* vs. *filters* columns); CosPrune ranks a "
        "coupled channel by the mean of its filters' cosines, Taylor by the sum of their gate scores. "
        f"Mean over {len(c.seeds)} seeds.",
        "",
        machine(res),
        "",
        "| criterion | round | channels removed | filters removed | params | steps (iterative / retrained) "
        "| scenes | Δm % iterative | Δm % retrained | "
        + " | ".join(f"{t} {k} (iter / retrained)" for t, k in cols)
        + " |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(cols),
        *_dense_row(res, cols),
    ]
    for (crit, rnd), rs in grouped(res.garg_rows, lambda r: (r.criterion, r.round)).items():
        out.append(
            f"| {crit} | {rnd} | {mean(r.channels_removed for r in rs):.0f} | "
            f"{mean(r.filters_removed for r in rs):.0f} | {mean(r.size.params for r in rs) / 1e3:.1f}k | "
            f"{_span(r.steps_iterative for r in rs)} / {_span(r.steps_retrained for r in rs)} | "
            f"{_span(r.scenes for r in rs)} | "
            f"{stat([r.dm_iterative for r in rs]).pm()} | {stat([r.dm_retrained for r in rs]).pm()} | "
            + " | ".join(
                f"{mean(r.iterative[t][k] for r in rs):.4f} / {mean(r.retrained[t][k] for r in rs):.4f}"
                for t, k in cols
            )
            + " |"
        )
    out += ["", *learned.garg_findings(res.garg_rows, res.cfg.garg_criteria, res.single_rows)]
    out += _single_task_table(res, specs)
    if plot_name:
        out += ["", f"![each task's metric vs. params, mean ± sd over seeds]({plot_name})"]
    return "\n".join(out)


def _span(values: Iterable[int]) -> str:
    """One figure when every seed agrees (they do: the budget is configured), else the range."""
    vs = sorted(set(values))
    return str(vs[0]) if len(vs) == 1 else f"{vs[0]}–{vs[-1]}"


def _dense_row(res: PaperResult, cols: list[tuple[str, str]]) -> list[str]:
    dense = res.garg_dense
    if not dense:
        return []
    values = " | ".join(f"{mean(d.metrics[t][k] for d in dense):.4f}" for t, k in cols)
    return [
        f"| dense, from scratch | - | 0 | 0 | {mean(d.size.params for d in dense) / 1e3:.1f}k | "
        f"{_span(d.steps for d in dense)} | {_span(d.scenes for d in dense)} | 0.00 | - | {values} |"
    ]


def _single_task_table(res: PaperResult, specs: dict[str, TaskSpec]) -> list[str]:
    if not res.single_rows:
        return []
    out = [
        "| criterion | round | task | single-task params (trunk) | multi-task params (trunk) | steps | scenes "
        "| task metric single / multi retrained / multi iterative | Δm % single-task | Δm % multi retrained "
        "| Δm % multi iterative |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    multi = {(r.seed, r.criterion, r.round): r for r in res.garg_rows}
    for (crit, rnd, task), rs in grouped(res.single_rows, lambda r: (r.criterion, r.round, r.task)).items():
        key = PRIMARY[specs[task].kind]
        ms = [multi[(r.seed, r.criterion, r.round)] for r in rs]
        out.append(
            f"| {crit} | {rnd} | {task} | {mean(r.size.params for r in rs) / 1e3:.1f}k "
            f"({mean(r.trunk_params for r in rs) / 1e3:.1f}k) | {mean(r.multi_size.params for r in rs) / 1e3:.1f}k "
            f"({mean(r.multi_trunk_params for r in rs) / 1e3:.1f}k) | {_span(r.steps for r in rs)} | "
            f"{_span(r.scenes for r in rs)} | {key} {mean(r.metrics[task][key] for r in rs):.4f} / "
            f"{mean(m.retrained[task][key] for m in ms):.4f} / {mean(m.iterative[task][key] for m in ms):.4f} | "
            f"{stat([r.dm for r in rs]).pm()} | {stat([r.dm_multi_retrained for r in rs]).pm()} | "
            f"{stat([r.dm_multi_iterative for r in rs]).pm()} |"
        )
    return ["", *out]


def plot_garg(res: PaperResult, specs: dict[str, TaskSpec], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = res.cfg.garg_tasks
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        key = PRIMARY[specs[task].kind]
        for crit in dict.fromkeys(r.criterion for r in res.garg_rows):
            by_round = grouped((r for r in res.garg_rows if r.criterion == crit), lambda r: r.round)
            pts = sorted(by_round.values(), key=lambda rs: -mean(r.size.params for r in rs))
            xs = [mean(r.size.params for r in rs) / 1e3 for rs in pts]
            for arm, marker, ls in (("iterative", "o", "-"), ("retrained", "s", "--")):
                ys: list[Stat] = [stat([_arm(r, arm)[task][key] for r in rs]) for rs in pts]
                ax.errorbar(
                    xs,
                    [y.mean for y in ys],
                    yerr=[y.sd for y in ys],
                    marker=marker,
                    ls=ls,
                    capsize=2,
                    label=f"{arm} {crit}" if arm == "iterative" else f"retrained ({crit} arch.)",
                )
        if res.garg_dense:
            dense = mean(d.metrics[task][key] for d in res.garg_dense)
            ax.axhline(dense, color="grey", lw=0.8, label="dense, from scratch")
        ax.set_xlabel("params (k)")
        ax.set_title(f"{task} {key}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Garg et al. reproduction, mean ± sd over {len(res.cfg.seeds)} seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arm(row: GargRow, arm: str) -> dict[str, dict[str, float]]:
    return row.iterative if arm == "iterative" else row.retrained


def sections(res: PaperResult, specs: dict[str, TaskSpec], plot_name: str | None) -> dict[str, str]:
    bodies = (
        unstructured_md(res, specs),
        kept_md(res),
        structured_md(res, specs),
        garg_md(res, specs, plot_name),
        learned.learned_md(res, machine(res)),
    )
    return dict(zip(SECTIONS, bodies, strict=True))


def summary_bullet(res: PaperResult) -> str:
    return learned.summary(res)
