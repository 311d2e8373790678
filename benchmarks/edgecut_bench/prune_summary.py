"""`edgecut bench prune`'s two Summary bullets, rendered from the section's own table (the rows as the
reader sees them), so tests/unit/docs can render them again from docs/benchmarks.md and catch a stale one."""

from __future__ import annotations

import re

from edgecut.server.cut.methods import DEFAULT_METHOD
from edgecut_bench.doc import tables

SECTION = "Pruning: CUT vs. baselines"
QUALITY_LEAD = "CUT vs. baselines"
SPEED_LEAD = "Real speed"


def _levels(rows: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The pruned rows by level: the n-th row of every method is its n-th level."""
    by_method: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if row["method"] != "full model":
            by_method.setdefault(row["method"], []).append(row)
    n = min((len(v) for v in by_method.values()), default=0)
    return [[v[i] for v in by_method.values()] for i in range(n)]


def _pct(row: dict[str, str]) -> int:
    return int(row["removed"].rstrip("%"))


def _span(values: list[float], fmt: str = "{:.2f}") -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def _removed(level: list[dict[str, str]]) -> str:
    return _span([_pct(r) for r in level], "{:d}") + " %"


def _minus(value: float) -> str:
    return f"{value:+.2f}".replace("-", "\u2212")


def _best(level: list[dict[str, str]], column: str) -> str:
    ranked = sorted(level, key=lambda r: float(r[column]), reverse=True)
    first, second = ranked[0], ranked[1] if len(ranked) > 1 else None
    if second is None:
        return first["method"]
    gap = float(first[column]) - float(second[column])
    return f"{first['method']} (by {gap:.2f} pp over {second['method']})"


def bullets(section: str) -> dict[str, str]:
    """{lead: text after the bold lead} for the section's table; {} when it has no pruned rows."""
    found = [t for t in tables(section) if t and "method" in t[0] and "Δm % (rec.)" in t[0]]
    if not found:
        return {}
    rows = found[0]
    levels = _levels(rows)
    if not levels:
        return {}
    tasks = re.search(r"Selected tasks: \*\*(.+?)\*\*", section)
    steps = re.search(r"recovery = (\d+) steps", section)
    methods = [r["method"] for r in levels[0]]
    where = " / ".join(_removed(level).rstrip(" %") for level in levels)
    per_method = "; ".join(
        f"{m} " + " / ".join(_minus(float(level[i]["Δm % (rec.)"])) for level in levels) + " %"
        for i, m in enumerate(methods)
    )
    quality = (
        f"(`edgecut bench prune`, one run, tasks {tasks.group(1) if tasks else '?'}; {DEFAULT_METHOD} is "
        f"edgecut's default): Δm after the same {steps.group(1) if steps else ''}-step recovery at {where} % "
        f"of the parameters removed: {per_method}. Highest after recovery, per level: "
        + "; ".join(f"{_removed(level)}: {_best(level, 'Δm % (rec.)')}" for level in levels)
        + ". Before recovery: "
        + "; ".join(f"{_removed(level)}: {_best(level, 'Δm %')}" for level in levels)
        + ". One run, one seed: a gap of a few tenths is not a win (seeds: *Paper*)."
    )
    full = next(r for r in rows if r["method"] == "full model")
    ratio = [
        f"{_span([float(r['speed-up / MAC cut']) for r in level])} at {_removed(level)} removed "
        f"(lowest: {min(level, key=lambda r: float(r['speed-up / MAC cut']))['method']})"
        for level in levels
    ]
    speed = f"(same run; onnxruntime CPU, 1 thread, batch 1): speed-up per MAC cut {'; '.join(ratio)}."
    default = [r for r in rows if r["method"] == DEFAULT_METHOD]
    if default:
        mid = default[len(default) // 2]
        cut = float(full["MMACs"]) / float(mid["MMACs"])
        speed += (
            f" {DEFAULT_METHOD} at {mid['removed'].rstrip('%')} % removed runs {float(mid['speed-up']):.2f}× "
            f"faster than the unpruned model for a {cut:.2f}× MAC cut ({float(mid['speed-up / MAC cut']):.2f})."
        )
    return {QUALITY_LEAD: quality, SPEED_LEAD: speed}
