"""Issue 20's goals, judged from the rows of `edgecut bench quality` (never from hard-coded figures).

- Δm of the final shipped model >= -2 % at macs >= 0.5 and >= -5 % at macs >= 0.3 (no goal below);
- at macs >= 0.5, no kept task more than 5 % below the full model (a task's change = the mean relative
  change of its Δm metrics, as in Δm);
- the quick model within 15 s of build time, the refined one (the last distillation refinement; a
  from-scratch candidate may follow it) within 5 minutes of the request;
- speed-up / MAC cut >= 0.8 for every shipped model (onnxruntime, 1 thread, batch 1).
Each verdict says by how much a goal is missed and the measured facts behind it (one verdict per seed).
Beside the goals: each baseline (from scratch, Torch-Pruning) against what edgecut ships, paired by
seed; a baseline "wins" only when the paired t-test over seeds says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from edgecut_bench.paper_stats import Comparison, Stat, mean, paired, stat
from edgecut_bench.quality_rows import (
    QUICK,
    REFINED,
    RETRAINED,
    SCRATCH,
    SHIPPED,
    TP_FINAL,
    Case,
    Row,
    by_setting,
)

QUICK_S = 15.0
REFINED_S = 300.0
TASK_DROP = 5.0  # % below the full model, at macs >= TASK_BUDGET
TASK_BUDGET = 0.5
SPEEDUP_PER_CUT = 0.8


def delta_m_goal(budget: float) -> float | None:
    """The Δm floor (%) at a budget, or None where the issue sets none."""
    if budget >= 0.5:
        return -2.0
    if budget >= 0.3:
        return -5.0
    return None


@dataclass(frozen=True)
class Verdict:
    goal: str
    case: str
    value: str
    target: str
    met: bool | None  # None: nothing to judge (e.g. no refinement was shipped)
    detail: str = ""

    @property
    def word(self) -> str:
        return "n/a" if self.met is None else ("met" if self.met else "**missed**")


def digits(value: float, goal: float, least: int = 2) -> int:
    """Decimals (at least `least`, at most 6) that show a missed `goal` as missed: the measured value
    printed apart from the goal and the shortfall not 0 (a ratio of 0.7955 against 0.8 is 0.796, short
    by 0.004, never "0.80, short by 0.00")."""
    d = least
    while d < 6 and (round(value, d) == round(goal, d) or round(abs(goal - value), d) == 0):
        d += 1
    return d


def _worst(case: Case, row: Row) -> str:
    changes = case.task_changes(row)
    return ", ".join(f"{t} {v:+.1f} %" for t, v in sorted(changes.items(), key=lambda kv: kv[1]))


def _delta_m(case: Case) -> list[Verdict]:
    floor = delta_m_goal(case.budget)
    final = case.final()
    if floor is None or final is None:
        return []
    met = final.delta_m >= floor
    quick = case.of(QUICK)
    gain = f"; quick model {quick[0].delta_m:+.2f} %" if quick and final is not quick[0] else ""
    refined = {
        REFINED: "",
        RETRAINED: "; the from-scratch candidate beat the refined model and was shipped",
    }.get(final.kind, "; no refinement shipped (the quick model is final)")
    detail = f"per task: {_worst(case, final)}{gain}{refined}"
    d = 2 if met else digits(final.delta_m, floor)
    if not met:
        detail = f"short by {floor - final.delta_m:.{d}f} points; " + detail
    return [
        Verdict("Δm after refinement", case.name, f"{final.delta_m:+.{d}f} %", f">= {floor:g} %", met, detail)
    ]


def _tasks(case: Case) -> list[Verdict]:
    final = case.final()
    if case.budget < TASK_BUDGET or final is None:
        return []
    changes = case.task_changes(final)
    if not changes:
        return []
    task, worst = min(changes.items(), key=lambda kv: kv[1])
    met = worst >= -TASK_DROP
    detail = f"per task: {_worst(case, final)}"
    shown = 1 if met else digits(worst, -TASK_DROP, least=1)
    if not met:
        detail = f"{task} short by {-TASK_DROP - worst:.{max(shown, 2)}f} points; " + detail
    return [
        Verdict(
            f"no task > {TASK_DROP:g} % below full",
            case.name,
            f"{task} {worst:+.{shown}f} %",
            f">= -{TASK_DROP:g} %",
            met,
            detail,
        )
    ]


def _times(case: Case) -> list[Verdict]:
    out = []
    for quick in case.of(QUICK):
        met = quick.seconds <= QUICK_S
        d = 1 if met else digits(quick.seconds, QUICK_S, least=1)
        detail = "" if met else f"over by {quick.seconds - QUICK_S:.{d}f} s"
        out.append(
            Verdict(
                "quick model build time",
                case.name,
                f"{quick.seconds:.{d}f} s",
                f"<= {QUICK_S:g} s",
                met,
                detail,
            )
        )
    refined = case.of(REFINED)
    if not refined:
        out.append(
            Verdict(
                "refined model within 5 min",
                case.name,
                "-",
                f"<= {REFINED_S:g} s",
                None,
                "no refinement shipped",
            )
        )
    else:
        last = refined[-1]
        met = last.elapsed <= REFINED_S
        d = 0 if met else digits(last.elapsed, REFINED_S, least=0)
        detail = f"refinement {last.refinement}" + (
            "" if met else f"; over by {last.elapsed - REFINED_S:.{d}f} s"
        )
        if not met and len(refined) > 1:  # when the device had the one before
            detail += f"; refinement {refined[-2].refinement} came at {refined[-2].elapsed:.0f} s"
        out.append(
            Verdict(
                "refined model within 5 min",
                case.name,
                f"{last.elapsed:.{d}f} s",
                f"<= {REFINED_S:g} s",
                met,
                detail,
            )
        )
    return out


def latency_fit(case: Case) -> tuple[float, float] | None:
    """ms = a * MMACs + b, least squares over the case's rows (None without two distinct sizes)."""
    pts = [(r.macs / 1e6, r.latency_ms) for r in case.rows if r.macs > 0 and math.isfinite(r.latency_ms)]
    if len({x for x, _ in pts}) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    a = sum((x - mx) * (y - my) for x, y in pts) / var
    return (a, my - a * mx) if a > 0 else None


def _fixed_cost_cap(case: Case, row: Row, fit: tuple[float, float] | None) -> str:
    """Why a speed-up falls short of the MAC cut: a per-run cost that does not shrink with the MACs."""
    if fit is None or fit[1] <= 0:
        return ""
    a, b = fit
    big, small = case.full.macs / 1e6, row.macs / 1e6
    cap = (a * big + b) / (a * small + b) / (big / small)
    return (
        f"; over this table's models ms ≈ {a:.3g} x MMACs + {b:.2f}: that fixed per-run cost alone caps "
        f"the ratio at {cap:.2f}"
    )


def _speed(case: Case) -> list[Verdict]:
    out = []
    fit = latency_fit(case)
    for row in case.of(*SHIPPED):
        ratio = case.speedup(row) / case.mac_cut(row)
        met = ratio >= SPEEDUP_PER_CUT
        detail = (
            f"{case.speedup(row):.2f}x faster ({row.latency_ms:.2f} vs {case.full.latency_ms:.2f} ms) for a "
            f"{case.mac_cut(row):.2f}x MAC cut"
        )
        d = 2 if met else digits(ratio, SPEEDUP_PER_CUT)
        if not met:
            detail = f"short by {SPEEDUP_PER_CUT - ratio:.{d}f}; " + detail + _fixed_cost_cap(case, row, fit)
        if row.kind == RETRAINED:
            detail += (
                "; narrowed until it ran as fast as the refined model, so it has fewer MACs for the same "
                "speed: its MAC cut outgrows its speed-up by design"
            )
        out.append(
            Verdict(
                f"speed-up / MAC cut ({row.label})",
                case.name,
                f"{ratio:.{d}f}",
                f">= {SPEEDUP_PER_CUT:g}",
                met,
                detail,
            )
        )
    return out


def verdicts(cases: Sequence[Case]) -> list[Verdict]:
    out: list[Verdict] = []
    for case in cases:
        out += _delta_m(case) + _tasks(case) + _times(case) + _speed(case)
    return out


@dataclass(frozen=True)
class Against:
    """A baseline against the model edgecut ships in one setting (task set at a budget), its Δm paired
    by seed with the shipped model's over the seeds both have (paper_stats.paired)."""

    case: str  # the setting
    baseline: str
    shipped: str  # "final" (the last shipped model of each seed), "quick" or "distilled" (the lineage's last)
    baseline_delta_m: Stat
    shipped_delta_m: Stat
    test: Comparison  # baseline minus shipped
    baseline_ms: float = math.nan  # mean over those seeds
    shipped_ms: float = math.nan
    outcome: int = 1  # paper_stats.versus: 1 the baseline is ahead, 0 no difference
    # task -> (the baseline's, the shipped model's) % change against the full model, mean over the seeds:
    # where a gap in Δm comes from (one model may trade one task for another)
    tasks: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def wins(self) -> bool:
        """The baseline is better by the paired test (never with one seed)."""
        return self.test.verdict == "win"

    @property
    def slowdown(self) -> float:
        """The baseline's onnxruntime time over the shipped model's (NaN when either is unmeasured)."""
        return self.baseline_ms / self.shipped_ms


# What a baseline is compared with: edgecut's final shipped model, its quick model (a baseline given the
# quick build's training), or the last model of its distillation lineage (a baseline given the same
# training as the whole lineage: the from-scratch candidate that may follow is trained another way)
Shipped = Literal["final", "quick", "distilled"]


def _shipped(case: Case, against: Shipped) -> Row | None:
    if against == "quick":
        return next(iter(case.of(QUICK)), None)
    return case.distilled() if against == "distilled" else case.final()


def against_shipped(
    cases: Sequence[Case], kinds: Sequence[str] = (*SCRATCH, *TP_FINAL), against: Shipped = "final"
) -> list[Against]:
    """Every baseline row (by label) against edgecut's model of its setting (`against`), paired by seed.
    A seed where a row is missing (e.g. the from-scratch candidate shipped) is left out."""
    out = []
    for setting, group in by_setting(list(cases)).items():
        shipped: dict[int, Row] = {}
        baselines: dict[str, dict[int, Row]] = {}
        of_seed: dict[int, Case] = {}
        for case in group:
            seed = case.seed or 0
            row = _shipped(case, against)
            if row is None:
                continue
            shipped[seed] = row
            of_seed[seed] = case
            for r in case.of(*kinds):
                baselines.setdefault(r.label, {})[seed] = r
        for label, rows in baselines.items():
            seeds = sorted(rows.keys() & shipped.keys())
            if not seeds:
                continue
            b = [rows[s].delta_m for s in seeds]
            a = [shipped[s].delta_m for s in seeds]
            out.append(
                Against(
                    setting,
                    label,
                    against,
                    stat(b),
                    stat(a),
                    paired(b, a),
                    mean(rows[s].latency_ms for s in seeds),
                    mean(shipped[s].latency_ms for s in seeds),
                    tasks=_task_means(of_seed, rows, shipped, seeds),
                )
            )
    return out


def _task_means(
    cases: dict[int, Case], baseline: dict[int, Row], shipped: dict[int, Row], seeds: list[int]
) -> dict[str, tuple[float, float]]:
    """Per task, the baseline's and the shipped model's change against the full model, mean over `seeds`
    (a task missing from a row on any seed is left out)."""
    b = [cases[s].task_changes(baseline[s]) for s in seeds]
    a = [cases[s].task_changes(shipped[s]) for s in seeds]
    common = set.intersection(*(set(x) for x in b + a)) if seeds else set()
    return {t: (mean(x[t] for x in b), mean(x[t] for x in a)) for t in sorted(common)}
