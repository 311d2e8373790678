"""The *Generality* section of docs/benchmarks.md from bench generality's rows: each tailoring as a mean
over its seeds (Δm mean ± sd), and the compute-aware ranking against the plain one by a paired test over
seeds, the conclusion generated from that test."""

from __future__ import annotations

import platform
import re
from collections.abc import Sequence

import torch

from edgecut.server.cut.tailor import TailorOptions
from edgecut.server.mtl.metric_names import LOWER_IS_BETTER, no_better
from edgecut_bench.generality import GeneralityResult, RankingRow, Row
from edgecut_bench.generality_summary import UNLEARNED_END, UNLEARNED_LEAD, unlearned_item
from edgecut_bench.paper_stats import ALPHA, ONE_SEED, Tally, grouped, mean, mean_sd, paired, tally, verdict

SECTION = "Generality"


def _seeds(res: GeneralityResult) -> list[int]:
    return sorted({r.seed for r in res.rows} | {g.seed for g in res.ranking})


def _arrow(before: float, after: float, key: str) -> str:
    return f"{before:.3f} → {after:.3f}{'↓' if key in LOWER_IS_BETTER else '↑'}"


def _row(rs: list[Row]) -> str:
    """One tailoring over its seeds: sizes and times as means, Δm mean ± sd."""
    r = rs[0]
    metrics = "; ".join(
        f"{t} {k} "
        + _arrow(mean(x.metrics_before[t][k] for x in rs), mean(x.metrics_after[t][k] for x in rs), k)
        for t, k in r.primary.items()
    )
    ms_before, ms_after = mean(x.ms_before for x in rs), mean(x.ms_after for x in rs)
    return (
        f"| {r.arch} | {', '.join(r.tasks)} | macs={r.budget:g} | {r.whole.params / 1e3:.1f}k → "
        f"{r.before.params / 1e3:.1f}k → {mean(x.after.params for x in rs) / 1e3:.1f}k | "
        f"{r.whole.macs / 1e6:.2f} → {r.before.macs / 1e6:.2f} → {mean(x.after.macs for x in rs) / 1e6:.2f} | "
        f"{ms_before:.2f} → {ms_after:.2f} | {ms_before / max(ms_after, 1e-9):.2f}x | {metrics} "
        f"| {mean_sd([x.delta_m for x in rs])} |"
    )


def _seeds_said(res: GeneralityResult) -> str:
    seeds = _seeds(res)
    if len(seeds) < 2:
        return ONE_SEED
    return (
        f"**Seeds**: every tailoring ran on {len(seeds)} seeds ({', '.join(map(str, seeds))}): a seed draws "
        "the calibration images (seed 0: the folder in its order; another seed: another order, whose first "
        "batches score the channels) and every random choice of the tailoring and the recovery; the trained "
        "models and the held-out scenes are the same for all. Figures are means over the seeds, Δm mean ± sd."
    )


def markdown(res: GeneralityResult, command: str) -> str:
    c = res.cfg
    trained = ", ".join(f"{a} {s / 60:.1f} min" for a, s in res.train_seconds.items())
    budgets = " and ".join(f"{b:g}" for b in c.budgets)
    lines = [
        f"Each gallery architecture (examples/, `--model module:Class`) trained from scratch on a labelled "
        f"folder this command writes ({c.n_train} rendered {c.image_size}x{c.image_size} scenes with six tasks: "
        "seg (segmentation), depth, slant (a dense regression where 0 is a value, declared in tasks.json), "
        "edges, count and largest (image-level classes)) "
        + (
            "with balanced task losses (each divided by its loss before training, `--balance-tasks`) "
            if c.balance
            else ""
        )
        + f"until its validation loss stopped improving ({c.patience} epochs without a gain, at most {c.epochs}; "
        f"training: {trained}), through the same code as "
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
        _seeds_said(res),
        "",
        *(
            ["How each model's training ended (main metric per task, the trivial baseline in brackets):", ""]
            + [f"- {arch}: {summary}" for arch, summary in res.trained.items()]
            + [""]
            + ([unlearned_said(res.trained, c.balance), ""] if unlearned(res.trained) else [])
            if res.trained
            else []
        ),
        "| architecture | tasks | budget | params | MMACs | ORT ms | speed-up | task metrics (before → after) "
        "| Δm % |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for rs in grouped(res.rows, lambda r: (r.arch, r.tasks, r.budget, r.floor)).values():
        lines.append(_row(rs))
    if res.impossible:
        lines += [
            "",
            "Budgets a model cannot meet (refused before any recovery, as a device would be told):",
            "",
        ]
        lines += [f"- {line}" for line in res.impossible]
    lines += _floor_table(res)
    lines += _ranking(res)
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
        "| architecture | tasks | floor | task metrics after | Δm % | floor | task metrics after | Δm % "
        "| second minus first (paired test) |",
        "|---|---|---:|---|---:|---:|---|---:|---|",
    ]
    for pairs in grouped(res.floors, lambda p: (p[0].arch, p[0].tasks)).values():
        cells = []
        for side in (0, 1):
            rs = [p[side] for p in pairs]
            after = "; ".join(
                f"{t} {k} {mean(r.metrics_after[t][k] for r in rs):.3f}" for t, k in rs[0].primary.items()
            )
            cells.append(f"{rs[0].floor:g} | {after} | {mean_sd([r.delta_m for r in rs])}")
        test = paired([p[1].delta_m for p in pairs], [p[0].delta_m for p in pairs])
        a = pairs[0][0]
        lines.append(f"| {a.arch} | {', '.join(a.tasks)} | {cells[0]} | {cells[1]} | {test.cell()} |")
    return lines


def ranking_tally(rows: Sequence[RankingRow]) -> Tally:
    """Per MAC against plain over the task pairs, each pair judged by the paired test over its seeds."""
    return tally(
        [
            ([g.dm_per_mac for g in gs], [g.dm_plain for g in gs])
            for gs in grouped(sorted(rows, key=lambda g: g.seed), lambda g: g.tasks).values()
        ]
    )


def ranking_conclusion(rows: Sequence[RankingRow]) -> str:
    """The ranking comparison's sentence, from the paired test (never a win the seeds cannot separate)."""
    by_pair = grouped(rows, lambda g: g.tasks)
    n_seeds = max((len(gs) for gs in by_pair.values()), default=0)
    t = ranking_tally(rows)
    pairs = f"{t.n} task pair{'s' if t.n != 1 else ''}"
    if t.untested == t.n:
        return (
            f"Per MAC minus plain over the {pairs}: {t.gaps()} — one seed, so not tested: run "
            "`--seeds 0,1,2` (the default) to tell a difference from noise."
        )
    said = verdict("the per-MAC ranking", "the plain one", t)
    return (
        f"{said[:1].upper()}{said[1:]}: over the {pairs}, {t} "
        f"(better / no difference / worse by a paired t-test over {n_seeds} seeds, two-sided, {ALPHA * 100:g} %); "
        f"per MAC minus plain {t.gaps()}."
    )


def _ranking(res: GeneralityResult) -> list[str]:
    if not res.ranking:
        return []
    c = res.cfg
    lines = [
        "",
        f"**Compute-aware ranking** on the packaged reference model, same budget (macs={c.budget:g}), method "
        f"and {c.recovery_steps}-step recovery; Δm after recovery vs. the full model on {c.n_val} held-out "
        "synthetic scenes (higher is better). *per MAC* ranks channels by importance divided by the MACs they cost "
        "(the default whenever the budget limits MACs); *plain* is the importance ranking used before. "
        "Both rankings of a seed tailor from the same calibration draw (seed s: scenes of seed 7 + 1000 s), so "
        "they are compared by a paired test over the seeds.",
        "",
        "| tasks | params kept (plain → per MAC) | MACs kept (plain → per MAC) | Δm % plain | Δm % per MAC "
        "| per MAC minus plain (paired test) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for gs in grouped(sorted(res.ranking, key=lambda g: g.seed), lambda g: g.tasks).values():
        sel = gs[0].selected
        test = paired([g.dm_per_mac for g in gs], [g.dm_plain for g in gs])
        lines.append(
            f"| {', '.join(gs[0].tasks)} | {mean(g.plain.params for g in gs) / sel.params:.0%} → "
            f"{mean(g.per_mac.params for g in gs) / sel.params:.0%} | "
            f"{mean(g.plain.macs for g in gs) / sel.macs:.0%} → {mean(g.per_mac.macs for g in gs) / sel.macs:.0%} "
            f"| {mean_sd([g.dm_plain for g in gs])} | {mean_sd([g.dm_per_mac for g in gs])} | "
            f"{test.cell()} |"
        )
    lines += ["", ranking_conclusion(res.ranking)]
    return lines


RANKING_LEAD = "Compute-aware ranking"


def ranking_summary(res: GeneralityResult) -> str:
    """The Summary's bullet for the ranking comparison (after RANKING_LEAD), its verdict from the test."""
    g = res.ranking
    kept = [x.per_mac.params / x.selected.params for x in g]
    plain = [x.plain.params / x.selected.params for x in g]
    return (
        f"(`{res.command or 'edgecut bench generality --ranking'}`, {len(_seeds(res))} seed(s)): ranking "
        "channels by importance per MAC when the budget limits MACs keeps "
        f"{min(kept):.0%}–{max(kept):.0%} of the reference model's parameters at macs={res.cfg.budget:g} "
        f"instead of {min(plain):.0%}–{max(plain):.0%}. Δm after recovery, {_lower_first(ranking_conclusion(g))}"
    )


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


_TRAINED_TASK = re.compile(r"(\S+) (\S+) (-?[\d.]+) \(trivial (-?[\d.]+)\)")


def unlearned(trained: dict[str, str]) -> list[tuple[str, str, str, float, float]]:
    """(architecture, task, metric, model, trivial) where a trained gallery model's main metric is not
    better than the trivial baseline's, read from each model's training summary as the section shows it."""
    out = []
    for arch, summary in trained.items():
        for task, metric, value, trivial in _TRAINED_TASK.findall(summary):
            v, t = float(value), float(trivial)
            if no_better(metric, v, t):
                out.append((arch, task, metric, v, t))
    return out


def unlearned_said(trained: dict[str, str], balanced: bool) -> str:
    found = unlearned(trained)
    listed = "; ".join(unlearned_item(*item) for item in found)
    how = (
        "balanced task losses (each divided by its loss before training) did not lift it"
        if balanced
        else "the gallery's training (unweighted labelled losses, stopped by the validation loss of all six "
        "tasks) left it there; what was tried against it: *Slant on the gallery* below"
    )
    return (
        f"{UNLEARNED_LEAD}{listed}{UNLEARNED_END} below measures how "
        f"well tailoring keeps a head that does no better than a constant, not a learned skill; {how}."
    )
