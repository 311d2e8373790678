"""`edgecut bench generality`'s Summary bullets, rendered from the section's own tables (as the reader sees
them), so tests/unit/docs can render them again from docs/benchmarks.md and catch a stale one."""

from __future__ import annotations

import math
import re

from edgecut_bench.doc import tables

SECTION = "Generality"
LEAD = "Generality"
RANKING_LEAD = "Compute-aware ranking"  # written by generality_report.ranking_summary


def _first(cell: str) -> float:
    """The cell's leading number (`-2.89`, `+1.2 ± 0.4`, `2.05x`, `23%`)."""
    m = re.match(r"\s*([-+\u2212]?\d+(?:\.\d+)?)", cell)
    if not m:
        raise ValueError(f"no number in {cell!r}")
    return float(m.group(1).replace("\u2212", "-"))


def _span(values: list[float], fmt: str) -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


def _name(row: dict[str, str]) -> str:
    return f"{row['architecture']} {row['tasks'].replace(', ', '+')} at {row['budget']}"


def _mmacs(row: dict[str, str]) -> list[float]:
    return [float(v) for v in row["MMACs"].split(" → ")]


def _main(rows: list[dict[str, str]]) -> str:
    archs = list(dict.fromkeys(r["architecture"] for r in rows))
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    kept = [m[2] / m[1] for m in map(_mmacs, rows) if m[1] > 0] or [math.nan]  # nan: nothing measured
    speed = [_first(r["speed-up"]) for r in rows if "speed-up" in r]
    dm = [_first(r["Δm %"]) for r in rows]
    worst = min(rows, key=lambda r: _first(r["Δm %"]))
    text = (
        f"(`edgecut bench generality`, {len(archs)} architectures: {', '.join(archs)}; {len(rows)} tailorings "
        f"at {' and '.join(budgets)}; each model trained until its validation loss stopped improving, on a folder of "
        "six tasks the command writes): "
        f"the tailored models keep {_span(kept, '{:.2f}')} of the decomposed model's MACs"
    )
    if speed:
        slow = min(rows, key=lambda r: _first(r["speed-up"]))
        text += f", run {_span(speed, '{:.2f}')}× faster in onnxruntime (slowest: {_name(slow)})"
    text += f", and Δm after recovery is {_span(dm, '{:+.2f}')} % (worst: {_name(worst)})."
    dropped = [r for r in rows if _mmacs(r)[1] < _mmacs(r)[0]]
    if dropped:
        text += " Decomposition alone dropped what a pair does not read: " + "; ".join(
            f"{_name(r)} {_mmacs(r)[0]:.2f} → {_mmacs(r)[1]:.2f} MMACs" for r in dropped
        )
        text += "."
    return text


def bullets(section: str) -> dict[str, str]:
    """{lead: text after the bold lead} for what the section's tables hold (the ranking's bullet is
    rendered from the rows with the paired test over seeds: generality_report.ranking_summary)."""
    found: dict[str, str] = {}
    for rows in tables(section):
        if not rows:
            continue
        header = rows[0]
        if LEAD not in found and {"architecture", "MMACs", "Δm %"} <= set(header):
            found[LEAD] = _main(rows)
    unlearned = _UNLEARNED.search(section)
    if LEAD in found and unlearned:
        named = [f"{arch} {task}" for arch, task in _UNLEARNED_TASK.findall(unlearned.group(1))]
        found[LEAD] += (
            " Not better than the trivial baseline after training, so its Δm is not a learned skill's: "
            f"{', '.join(named)}."
        )
    return found


# generality_report.unlearned_said writes its paragraph with these, and bullets() reads it back
UNLEARNED_LEAD = "**Not better than the trivial baseline** after training: "
UNLEARNED_END = ". Such a task's Δm"


def unlearned_item(arch: str, task: str, metric: str, value: float, trivial: float) -> str:
    return f"{arch} {task} ({metric} {value:.3f}, trivial {trivial:.3f})"


_UNLEARNED = re.compile(re.escape(UNLEARNED_LEAD) + r"(.*?)" + re.escape(UNLEARNED_END))
_UNLEARNED_TASK = re.compile(r"(\S+) (\S+) \(\S+ -?[\d.]+, trivial -?[\d.]+\)")
