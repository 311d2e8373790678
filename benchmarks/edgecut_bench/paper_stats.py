"""Seeds -> mean ± sd, and the paired test that turns two methods' seeds into a win, a loss or no difference.

Both methods run on the same seeds, and a seed fixes the calibration and data draw, so the seeds are
paired: the test is on the per-seed differences a[i] - b[i], not on the two spreads. a beats b only
when a two-sided paired t-test at 5 % (scipy.stats.ttest_rel) rejects "no difference", i.e. when the
95 % confidence interval of the mean paired difference (scipy.stats.t) excludes 0; otherwise the
verdict is "no difference". One seed gives no test: "1 seed: not tested", never a win. The median of
the paired gaps is kept beside the mean because one collapsed seed or setting can dominate a mean.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from scipy import stats as sps

R = TypeVar("R")
K = TypeVar("K")
ALPHA = 0.05  # two-sided level of the paired test (a 95 % confidence interval)
Verdict = Literal["win", "loss", "no difference", "not tested"]


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


def mean_sd(values: Sequence[float], digits: int = 2) -> str:
    """ "+1.20 ± 0.30" over several seeds, "+1.20" for one (no spread to show)."""
    st = stat(values)
    return f"{st.mean:+.{digits}f}" + (f" ± {st.sd:.{digits}f}" if st.n > 1 else "")


ONE_SEED = (
    "**One seed**: every figure is a single run, and no comparison is tested (a paired test needs two "
    "seeds or more; the default run has three)."
)


@dataclass(frozen=True)
class Comparison:
    """a against b over paired seeds: the gaps a[i] - b[i], their 95 % interval and the test's verdict."""

    mean_gap: float
    median_gap: float
    ci_low: float  # the 95 % confidence interval of the mean gap (nan with one seed)
    ci_high: float
    p: float  # two-sided p of the paired t-test (nan with one seed)
    verdict: Verdict
    n: int  # seeds

    @property
    def sign(self) -> int:
        """+1 a win, -1 a loss, 0 no difference or not tested."""
        return 1 if self.verdict == "win" else -1 if self.verdict == "loss" else 0

    def flipped(self) -> Comparison:
        """b against a: the same test, the gaps negated."""
        swap: dict[Verdict, Verdict] = {"win": "loss", "loss": "win"}
        return Comparison(
            -self.mean_gap,
            -self.median_gap,
            -self.ci_high,
            -self.ci_low,
            self.p,
            swap.get(self.verdict, self.verdict),
            self.n,
        )

    def said(self, unit: str = " pp", digits: int = 2) -> str:
        """How a report states it: "+1.20 pp (95 % CI +0.40 … +2.00, p = 0.02, n = 3)", "no difference
        (p = 0.31, n = 3)" or "1 seed: not tested"."""
        if self.verdict == "not tested":
            return f"{self.n} seed{'s' if self.n != 1 else ''}: not tested"
        if self.verdict == "no difference":
            return f"no difference ({_p(self.p)}, n = {self.n})"
        f = f"{{:+.{digits}f}}"
        return (
            f"{f.format(self.mean_gap)}{unit} (95 % CI {f.format(self.ci_low)} … {f.format(self.ci_high)}, "
            f"{_p(self.p)}, n = {self.n})"
        )

    def cell(self, unit: str = " pp", digits: int = 2) -> str:
        """For a table: the mean gap always shown, then the test ("+0.24 pp, no difference (p = 0.31,
        n = 3)"); a win or a loss already starts with it."""
        if self.sign:
            return self.said(unit, digits)
        return f"{self.mean_gap:+.{digits}f}{unit}, {self.said(unit, digits)}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def paired(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> Comparison:
    """a against b, where a[i] and b[i] were measured on the same seed (the same order in both)."""
    if len(a) != len(b):
        raise ValueError(f"paired seeds: {len(a)} values against {len(b)}; both need one per seed")
    if not a:
        raise ValueError("paired seeds: no values")
    gaps = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n, m, med = len(gaps), statistics.fmean(gaps), statistics.median(gaps)
    if n < 2:
        return Comparison(m, med, math.nan, math.nan, math.nan, "not tested", n)
    sd = statistics.stdev(gaps)
    if sd <= 1e-9 * max(1.0, abs(m)):
        # the same gap on every seed (to rounding): the interval is that point (scipy's t divides by 0)
        low = high = m
        p = 1.0 if m == 0.0 else 0.0
    else:
        p = float(sps.ttest_rel(a, b).pvalue)
        half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
        low, high = m - half, m + half
    verdict: Verdict = "win" if p < alpha and m > 0 else "loss" if p < alpha and m < 0 else "no difference"
    return Comparison(m, med, low, high, p, verdict, n)


def versus(a: Sequence[float], b: Sequence[float]) -> int:
    """+1 if a beats b by the paired test over seeds, -1 if b beats a, 0 no difference (or one seed:
    untested, never a win). a and b are per-seed values in the same seed order (see `paired`)."""
    return paired(a, b).sign


def aligned(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    """Two methods' values by seed -> two lists over the seeds both have, in seed order (for `paired`)."""
    seeds = sorted(a.keys() & b.keys())
    return [a[s] for s in seeds], [b[s] for s in seeds]


@dataclass(frozen=True)
class Tally:
    wins: int
    ties: int  # no difference by the paired test
    losses: int
    gap: float  # mean over the settings of the mean paired gap
    median: float = math.nan  # median over the settings of the mean paired gap
    untested: int = 0  # settings with one seed: no test possible

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses + self.untested

    def __str__(self) -> str:
        if self.n and self.untested == self.n:
            return "not tested (1 seed)"
        more = f" ({self.untested} not tested, 1 seed)" if self.untested else ""
        return f"{self.wins} / {self.ties} / {self.losses}{more}"

    def gaps(self) -> str:
        """ "mean +12.37 pp, median +0.40 pp": the median beside the mean, which a collapse can dominate."""
        return f"mean {self.gap:+.2f} pp, median {self.median:+.2f} pp"


def tally(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Tally:
    """Wins / no difference / losses of a against b over settings, each a (a's seeds, b's seeds) pair
    in the same seed order; a setting with one seed is counted as not tested."""
    found = [paired(a, b) for a, b in pairs]
    verdicts = [c.verdict for c in found]
    gaps = [c.mean_gap for c in found]
    return Tally(
        verdicts.count("win"),
        verdicts.count("no difference"),
        verdicts.count("loss"),
        statistics.fmean(gaps) if gaps else math.nan,
        statistics.median(gaps) if gaps else math.nan,
        verdicts.count("not tested"),
    )


def verdict(name_a: str, name_b: str, t: Tally) -> str:
    """What the settings say together: a side "beats" the other only on every setting, "mostly" only
    with more wins than the other outcomes together."""
    if t.n == 0:
        return f"{name_a} and {name_b} were not both measured"
    if t.untested == t.n:
        return f"{name_a} against {name_b} is not tested (1 seed)"
    if t.wins == t.n:
        return f"{name_a} beats {name_b} on every setting"
    if t.losses == t.n:
        return f"{name_b} beats {name_a} on every setting"
    if t.ties == t.n:
        return f"{name_a} and {name_b} show no difference on any setting"
    if t.wins > t.losses + t.ties + t.untested:
        return f"{name_a} mostly beats {name_b}"
    if t.losses > t.wins + t.ties + t.untested:
        return f"{name_b} mostly beats {name_a}"
    if t.ties > t.wins + t.losses + t.untested:
        return f"{name_a} and {name_b} mostly show no difference"
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
