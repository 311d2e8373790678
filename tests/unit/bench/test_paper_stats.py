"""The paired test over seeds that decides win / no difference / loss (paper_stats), against values
computed by hand. With 3 seeds (2 degrees of freedom) Student's t has a closed form: the two-sided p of
t is 1 - |t| / sqrt(t² + 2), and the 97.5 % quantile is 4.302653."""

from __future__ import annotations

import math

import pytest

from edgecut_bench.paper_stats import aligned, paired, stat, tally, verdict, versus

T975_DF2 = 4.302653


def _p_df2(t: float) -> float:
    return 1 - abs(t) / math.sqrt(t * t + 2)


def test_a_constant_gap_with_tiny_noise_wins_even_when_the_seeds_spread_is_large() -> None:
    """Seed effects shared by both methods (10 / 50 / 90) are a spread of 40: the old rule called a
    gap of 1 a tie; paired, the gaps are 1.0, 1.1, 0.9 (mean 1, sd 0.1, t = 1 / (0.1 / sqrt 3))."""
    b = [10.0, 50.0, 90.0]
    a = [11.0, 51.1, 90.9]
    c = paired(a, b)
    t = 1.0 / (0.1 / math.sqrt(3))  # 17.32
    assert c.verdict == "win" and versus(a, b) == 1 and versus(b, a) == -1
    assert c.mean_gap == pytest.approx(1.0) and c.median_gap == pytest.approx(1.0) and c.n == 3
    assert c.p == pytest.approx(_p_df2(t), rel=1e-6)  # 0.0033
    half = T975_DF2 * 0.1 / math.sqrt(3)  # 0.2484
    assert (c.ci_low, c.ci_high) == (pytest.approx(1 - half, rel=1e-5), pytest.approx(1 + half, rel=1e-5))
    assert c.said() == "+1.00 pp (95 % CI +0.75 … +1.25, p = 0.003, n = 3)"
    assert paired(b, a).said() == "-1.00 pp (95 % CI -1.25 … -0.75, p = 0.003, n = 3)"


def test_random_with_one_collapse_is_judged_by_the_paired_test_not_by_its_spread() -> None:
    """Random pruning at Δm -98 ± 114 (one seed collapsed; the docs had -98 ± 113) against the best method: the gaps are
    28, 32.5 and 228.5 pp (mean 96.33, sd 114.48, t = 1.457), which three seeds cannot separate from 0;
    the median gap (32.5) says what most seeds saw."""
    best = [-2.0, -2.5, -1.5]
    rnd = [-30.0, -35.0, -230.0]
    assert stat(rnd).mean == pytest.approx(-98.33, abs=0.01) and stat(rnd).sd == pytest.approx(
        114.05, abs=0.01
    )
    c = paired(best, rnd)
    gaps = [28.0, 32.5, 228.5]
    sd = math.sqrt(sum((g - 96.3333) ** 2 for g in gaps) / 2)
    t = (sum(gaps) / 3) / (sd / math.sqrt(3))
    assert c.p == pytest.approx(_p_df2(t), rel=1e-4)  # 0.28
    assert c.verdict == "no difference" and c.said() == "no difference (p = 0.28, n = 3)"
    assert c.ci_low < 0 < c.ci_high
    assert c.mean_gap == pytest.approx(96.33, abs=0.01) and c.median_gap == pytest.approx(32.5)
    # a random run that collapses by about the same amount on every seed is a clear loss
    steady = [-95.0, -101.0, -99.0]
    assert paired(steady, best).verdict == "loss" and versus(steady, best) == -1


def test_one_seed_is_never_a_win() -> None:
    c = paired([0.30], [0.27])
    assert c.verdict == "not tested" and versus([0.30], [0.27]) == 0
    assert c.said() == "1 seed: not tested" and math.isnan(c.p)
    t = tally([([5.0], [1.0]), ([3.0], [2.0])])
    assert (t.wins, t.ties, t.losses, t.untested) == (0, 0, 0, 2)
    assert str(t) == "not tested (1 seed)" and verdict("a", "b", t) == "a against b is not tested (1 seed)"


def test_the_same_gap_on_every_seed_is_a_difference_and_no_gap_is_none() -> None:
    assert paired([2.0, 3.0, 4.0], [1.0, 2.0, 3.0]).verdict == "win"  # sd of the gaps 0: scipy divides by 0
    same = paired([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.verdict == "no difference" and same.p == 1.0


def test_seeds_are_paired_by_seed_number_and_must_match() -> None:
    a, b = aligned({2: 5.0, 0: 1.0, 1: 3.0}, {0: 0.0, 1: 2.0, 3: 9.0})
    assert (a, b) == ([1.0, 3.0], [0.0, 2.0])  # seed 0 then 1; seeds 2 and 3 have no partner
    with pytest.raises(ValueError, match="one per seed"):
        paired([1.0, 2.0], [1.0])


def test_a_tally_gives_the_median_gap_beside_a_mean_that_two_collapses_dominate() -> None:
    """Ten settings with a small, steady gap of +0.13 pp and two where b collapsed by 60 pp: the mean
    over the settings is (10 x 0.13 + 2 x 60) / 12 = 10.11 pp, the median 0.13 pp."""
    small = [([1.13, 1.23, 1.03], [1.0, 1.1, 0.9])] * 10  # gaps 0.13, 0.13, 0.13: a win each
    collapse = [([1.0, 1.1, 0.9], [-59.0, -58.9, -59.1])] * 2
    t = tally(small + collapse)
    assert (t.wins, t.ties, t.losses) == (12, 0, 0) and str(t) == "12 / 0 / 0"
    assert t.gap == pytest.approx((10 * 0.13 + 2 * 60) / 12) and t.median == pytest.approx(0.13)
    assert t.gaps() == "mean +10.11 pp, median +0.13 pp"
    mixed = tally([([1.0, 1.2, 0.8], [1.1, 0.9, 1.0])] * 3 + small[:1])  # no difference x 3, a win
    assert str(mixed) == "1 / 3 / 0" and verdict("a", "b", mixed) == "a and b mostly show no difference"


def test_a_side_beats_the_other_only_on_every_setting_and_mostly_only_with_a_majority() -> None:
    win = ([1.13, 1.23, 1.03], [1.0, 1.1, 0.9])
    tie = ([1.0, 1.2, 0.8], [1.1, 0.9, 1.0])
    assert verdict("a", "b", tally([win, win])) == "a beats b on every setting"
    assert verdict("a", "b", tally([win[::-1]] * 2)) == "b beats a on every setting"
    assert verdict("a", "b", tally([win, win, tie])) == "a mostly beats b"
    assert verdict("a", "b", tally([win, tie])) == "neither a nor b wins consistently"  # 1 / 1 / 0
    assert verdict("a", "b", tally([tie, tie])) == "a and b show no difference on any setting"
