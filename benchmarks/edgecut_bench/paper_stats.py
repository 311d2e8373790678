"""Seeds -> mean ± sd, and the rule that turns two methods' seeds into a win, a tie or a loss.

A difference counts only when it is larger than the spread of the seeds: a beats b when
mean(a) - mean(b) > max(sd(a), sd(b)) (sample standard deviations over seeds), loses when the
difference is below minus that, and ties otherwise. With one seed there is no spread and every
difference counts; `edgecut bench paper` runs three.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

R = TypeVar("R")
K = TypeVar("K")


def grouped(rows: Iterable[R], key: Callable[[R], K]) -> dict[K, list[R]]:
    """Rows by key, keys in first-seen order (one list entry per seed)."""
    out: dict[K, list[R]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else math.nan


@dataclass(frozen=True)
class Stat:
    mean: float
    sd: float  # sample standard deviation over seeds (0 for one)
    n: int

    def pm(self, digits: int = 2, sign: bool = True) -> str:
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        return f"{f.format(self.mean)} ± {self.sd:.{digits}f}"


def stat(values: Sequence[float]) -> Stat:
    vals = [float(v) for v in values]
    if not vals:
        return Stat(math.nan, math.nan, 0)
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))


def versus(a: Sequence[float], b: Sequence[float]) -> int:
    """+1 if a is ahead of b by more than the seeds' spread, -1 if behind by more, 0 a tie."""
    sa, sb = stat(a), stat(b)
    gap, spread = sa.mean - sb.mean, max(sa.sd, sb.sd)
    return 1 if gap > spread else -1 if gap < -spread else 0


@dataclass(frozen=True)
class Tally:
    wins: int
    ties: int
    losses: int
    gap: float  # mean over the settings of mean(a) - mean(b)

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    def __str__(self) -> str:
        return f"{self.wins} / {self.ties} / {self.losses}"


def tally(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Tally:
    """Wins / ties / losses of a against b over settings, each a (a's seeds, b's seeds) pair."""
    outcomes = [versus(a, b) for a, b in pairs]
    gaps = [stat(a).mean - stat(b).mean for a, b in pairs]
    return Tally(
        outcomes.count(1), outcomes.count(0), outcomes.count(-1), statistics.fmean(gaps) if gaps else math.nan
    )


def verdict(name_a: str, name_b: str, t: Tally) -> str:
    if t.n == 0:
        return f"{name_a} and {name_b} were not both measured"
    if t.wins > t.losses and t.wins >= t.ties:
        return f"{name_a} beats {name_b}"
    if t.losses > t.wins and t.losses >= t.ties:
        return f"{name_b} beats {name_a}"
    if t.ties > max(t.wins, t.losses):
        return f"{name_a} and {name_b} mostly tie"
    return f"neither {name_a} nor {name_b} wins consistently"


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """y at x along a curve of (x, y) points, linear between neighbours (x within the curve's range)."""
    xs, ys = zip(*sorted(points), strict=True)
    return float(np.interp(x, xs, ys))


def matched_grid(curves: Sequence[Sequence[tuple[float, float]]], n: int = 4) -> list[float]:
    """`n` evenly spaced x values inside the range every curve covers (empty if they do not overlap)."""
    if not curves or not all(curves):
        return []
    lo = max(min(x for x, _ in c) for c in curves)
    hi = min(max(x for x, _ in c) for c in curves)
    if lo > hi:
        return []
    if n == 1 or lo == hi:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]
