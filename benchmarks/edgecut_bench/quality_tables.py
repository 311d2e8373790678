"""bench quality's rows over seeds as tables: one row per model of a setting (means over the seeds, Δm
mean ± sd), the goals' verdicts collapsed over the seeds, each baseline against the shipped model with
its paired test, and the Summary's bullet."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from edgecut.server.mtl.metric_names import PRIMARY
from edgecut_bench.paper_stats import mean, mean_sd
from edgecut_bench.quality_goals import Against, Verdict, against_shipped, verdicts
from edgecut_bench.quality_rows import (
    FULL,
    QUICK,
    REFINED,
    RETRAINED,
    SCRATCH,
    SCRATCH_CANDIDATE,
    TP_FINAL,
    TP_QUICK,
    Case,
    Row,
    by_setting,
)

if TYPE_CHECKING:
    from edgecut_bench.quality import QualityResult

LEAD = "Quality at budget"  # the Summary bullet's lead

CANDIDATE = "from-scratch candidate"  # one table row whether or not a seed shipped it
# table order by kind; the baselines follow in first-seen order
_ORDER = {FULL: 0, QUICK: 1, REFINED: 2, RETRAINED: 3, SCRATCH_CANDIDATE: 3}


def _key(r: Row) -> str:
    return CANDIDATE if r.kind in (RETRAINED, SCRATCH_CANDIDATE) else r.label


def _notes(by_seed: list[tuple[int | None, str]]) -> str:
    said = {n for _, n in by_seed if n}
    if len(said) <= 1:
        return next(iter(said), "")
    return "; ".join(f"seed {seed}: {n}" for seed, n in by_seed if n)


def _table_row(group: list[Case], rows: list[tuple[Case, Row]], label: str, note: str) -> str:
    """One model of a setting: each figure the mean over the seeds that have it (Δm mean ± sd)."""
    cols = [(t, PRIMARY[k]) for t, k in group[0].kinds.items()]
    vals = " | ".join(f"{mean(r.metrics.get(t, {}).get(m, math.nan) for _, r in rows):.4f}" for t, m in cols)
    cut = mean(c.mac_cut(r) for c, r in rows)
    speed = mean(c.speedup(r) for c, r in rows)
    ratio = mean(c.speedup(r) / c.mac_cut(r) for c, r in rows)
    full = rows[0][1].kind == FULL
    build = "-" if full else f"{mean(r.seconds for _, r in rows):.1f}"
    shipped = [r.elapsed for _, r in rows if r.shipped]
    since = f"{mean(shipped):.1f}" if shipped else "-"
    return (
        f"| {label} | {mean(r.macs for _, r in rows) / 1e6:.2f} | {cut:.2f} | "
        f"{mean(r.latency_ms for _, r in rows):.2f} | {speed:.2f} | {ratio:.2f} | {vals} | "
        f"{mean_sd([r.delta_m for _, r in rows])} | {build} | {since} | {note} |"
    )


def case_table(group: list[Case]) -> list[str]:
    """A setting's table: one row per model over its seeds (`group`, one Case per seed), then with
    several seeds the model each seed ends on (what the device serves)."""
    n = len(group)
    cols = [(t, PRIMARY[k]) for t, k in group[0].kinds.items()]
    head = " | ".join(f"{t} {m}" for t, m in cols)
    seeds = ", ".join(str(c.seed) for c in group if c.seed is not None)
    lines = [
        f"**{group[0].setting}**" + (f" (seeds {seeds}; mean over seeds, Δm mean ± sd)" if n > 1 else ""),
        "",
        f"| model | MMACs | MAC cut | ORT ms | speed-up | speed-up / MAC cut | {head} | Δm % | build s | "
        "from request s | note |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(cols) + "---:|---:|---:|---|",
    ]
    models: dict[str, list[tuple[Case, Row]]] = {}
    for case in group:
        for r in case.rows:
            models.setdefault(_key(r), []).append((case, r))
    ranked = sorted(
        models,
        key=lambda k: (
            _ORDER.get(models[k][0][1].kind, len(_ORDER)),
            min(r.refinement for _, r in models[k]),
        ),
    )
    for key in ranked:
        rows = models[key]
        shipped = sum(r.shipped for _, r in rows)
        label = rows[0][1].label
        if key == CANDIDATE:
            shipped_rows = [r for _, r in rows if r.shipped]
            label = shipped_rows[0].label if shipped_rows else label
        label = f"**{label}**" if shipped == n else label
        note = _notes([(c.seed, r.note) for c, r in rows])
        if n > 1 and 0 < shipped < n:
            note = f"shipped in {shipped} of {n} seeds" + (f"; {note}" if note else "")
        elif n > 1 and len(rows) < n:
            note = f"{len(rows)} of {n} seeds" + (f"; {note}" if note else "")
        lines.append(_table_row(group, rows, label, note))
    finals = [(c, f) for c in group if (f := c.final()) is not None]
    if n > 1 and finals:
        which = _notes([(c.seed, f.label) for c, f in finals])
        lines.append(_table_row(group, finals, "*what the device serves (the last shipped)*", which))
    for case in group:
        lines += [f"- {f'seed {case.seed}: ' if n > 1 else ''}{note}" for note in case.notes]
    return lines


def _setting(case: str) -> str:
    return re.sub(r", seed \d+$", "", case)


def collapsed(found: list[Verdict]) -> list[Verdict]:
    """One verdict per goal and setting over its seeds: the values side by side, met when every seed
    met it, else missed in k of n seeds with the missed seeds' details."""
    groups: dict[tuple[str, str], list[Verdict]] = {}
    for v in found:
        groups.setdefault((v.goal, _setting(v.case)), []).append(v)
    out = []
    for (goal, setting), vs in groups.items():
        if len(vs) == 1:
            out.append(vs[0])
            continue
        judged = [v for v in vs if v.met is not None]
        missed = [v for v in judged if not v.met]
        met = None if not judged else not missed
        detail = "; ".join(f"{v.case[len(setting) + 2 :]}: {v.detail}" for v in missed if v.detail)
        if missed:
            detail = f"missed in {len(missed)} of {len(vs)} seeds" + (f" ({detail})" if detail else "")
        else:
            detail = vs[0].detail if len({v.detail for v in vs}) == 1 else ""
        value = " / ".join(v.value for v in vs)
        out.append(Verdict(goal, f"{setting} ({len(vs)} seeds)", value, vs[0].target, met, detail))
    return out


def verdict_table(found: list[Verdict]) -> list[str]:
    lines = ["| goal | case | measured | goal | verdict | why / detail |", "|---|---|---:|---:|---|---|"]
    lines += [f"| {v.goal} | {v.case} | {v.value} | {v.target} | {v.word} | {v.detail} |" for v in found]
    return lines


def comparison_table(found: list[Against]) -> list[str]:
    lines = [
        "| case | baseline | Δm % baseline | against | Δm % edgecut | baseline minus edgecut (paired test) |",
        "|---|---|---:|---|---:|---|",
    ]
    lines += [
        f"| {a.case} | {a.baseline} | {a.baseline_delta_m.pm()} | {a.shipped} | {a.shipped_delta_m.pm()} | "
        f"{'**' if a.wins else ''}{a.test.cell()}{'**' if a.wins else ''} |"
        for a in found
    ]
    return lines


def _outcomes(found: list[Against]) -> str:
    """Baseline better / no difference / worse (or not tested) over the settings, by the paired test."""
    said = [a.test.verdict for a in found]
    if found and all(v == "not tested" for v in said):
        return f"not tested (1 seed) in {len(found)} comparisons"
    return f"{said.count('win')} / {said.count('no difference')} / {said.count('loss')}"


def summary(res: QualityResult) -> str:
    """The Summary's bullet (after LEAD): what the device serves per setting, mean ± sd over seeds, and
    the baselines against it counted by the paired test; never a win the seeds cannot separate."""
    groups = by_setting(res.cases)
    seeds = {c.seed for c in res.cases}
    finals = "; ".join(
        f"{setting} {mean_sd([f.delta_m for c in group if (f := c.final()) is not None], 1)} %"
        for setting, group in groups.items()
    )
    quick = [r for c in res.cases for r in c.of(QUICK)]
    goals = collapsed(verdicts(res.cases))
    missed = [v for v in goals if v.met is False]
    counts = sorted({len(group) for group in groups.values()})
    said = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
    if len(counts) > 1:  # a run split over seeds and cases, not every case on every seed yet
        said = f"{counts[0]}–{counts[-1]} seeds per case"
    return (
        f"(`{res.command or 'edgecut bench quality'}`, {said}, "
        f"{res.seconds / 60:.1f} min): what the device serves in the end, Δm vs. the full model"
        f"{' (mean ± sd over seeds)' if len(seeds) > 1 else ''}: {finals}; the quick model ships after "
        f"{min(r.seconds for r in quick):.0f}–{max(r.seconds for r in quick):.0f} s of build time. "
        "Baselines against it (better / no difference / worse by a paired t-test over the seeds): from "
        f"scratch {_outcomes(against_shipped(res.cases, SCRATCH, 'final'))}, Torch-Pruning given the same "
        f"training (quick vs. quick) {_outcomes(against_shipped(res.cases, TP_QUICK, 'quick'))} and (final vs. "
        f"the last distilled model) {_outcomes(against_shipped(res.cases, TP_FINAL, 'distilled'))}. Goals "
        "of issue "
        f"20: {len(goals) - len(missed)} of {len(goals)} met"
        + (f" on every seed; missed: {', '.join(sorted({v.goal for v in missed}))}" if missed else "")
        + "; details in *Quality at budget*."
    )
