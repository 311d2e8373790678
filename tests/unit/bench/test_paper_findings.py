"""The findings of `edgecut bench paper` from its rows: seeds -> wins / ties / losses, Garg's finding 1
at matched parameter counts, the best methods per setting and where each mask keeps its weights."""

from __future__ import annotations

import pytest

from edgecut.server.bench.paper_learned import best, garg_findings, kept_table
from edgecut.server.bench.paper_rows import GargRow, KeptShare
from edgecut.server.bench.paper_stats import interpolate, matched_grid, stat, tally, versus
from edgecut.server.cut.prune import Size


def test_a_gap_within_the_seeds_spread_is_a_tie_not_a_win() -> None:
    assert stat([1.0, 2.0, 3.0]).sd == pytest.approx(1.0)
    close = ([0.30, 0.26, 0.34], [0.27, 0.25, 0.29])  # +0.03 pp, one seed's noise is 0.04
    clear = ([5.0, 5.1, 4.9], [1.0, 1.2, 0.8])
    assert versus(*close) == 0 and versus(*clear) == 1 and versus(*reversed(clear)) == -1
    t = tally([close, clear, tuple(reversed(clear))])
    assert (t.wins, t.ties, t.losses) == (1, 1, 1) and str(t) == "1 / 1 / 1"
    assert versus([0.30], [0.27]) == 1  # one seed: no spread, every difference counts


def _garg(criterion: str, seed: int, rnd: int, params: float, dm: float) -> GargRow:
    return GargRow(seed, criterion, rnd, rnd * 10, rnd * 20, Size(0, int(params)), {}, dm, {}, dm - 5)


def test_finding_one_compares_the_criteria_at_matched_parameter_counts_not_rounds() -> None:
    """Both criteria lie on one Δm-vs-params line, but at each round B has removed more parameters:
    paired by round they look 10 pp apart, at matched sizes they are the same."""
    rows = []
    for seed, noise in enumerate((0.0, 0.4, -0.4)):
        rows += [_garg("a", seed, 4, 400e3, -10 + noise), _garg("a", seed, 8, 200e3, -30 + noise)]
        rows += [_garg("b", seed, 4, 300e3, -20 - noise), _garg("b", seed, 8, 100e3, -40 - noise)]
    text = "\n".join(garg_findings(rows, ("a", "b")))
    assert "Finding 1 (the two criteria give similar quality at equal size) **holds**" in text
    assert "| 200.0k | -30.00 ± 0.40 | -30.00 ± 0.40 | tie |" in text
    assert "| 300.0k |" in text and "| 400.0k |" not in text  # only where both curves reach
    assert interpolate([(400e3, -10), (200e3, -30)], 250e3) == pytest.approx(-25)
    assert matched_grid([[(400.0, 0.0), (200.0, 0.0)], [(300.0, 0.0), (100.0, 0.0)]], 3) == [200, 250, 300]


def test_finding_two_pairs_each_architecture_with_its_retrained_copy_at_the_last_round() -> None:
    rows = [_garg("a", s, 8, 100e3, -50 + s) for s in range(3)]  # retrained = Δm - 5: worse
    text = "\n".join(garg_findings(rows, ("a",)))
    assert "Finding 2" in text and "**does not hold**" in text and "(iterative ahead)" in text


def test_the_best_method_includes_those_tied_within_the_spread_and_skips_the_papers_keep_row() -> None:
    methods = {
        "magnitude": [-1.0, -1.1, -0.9],
        "cut": [-1.05, -1.3, -0.8],  # tied with magnitude
        "snip-union": [-9.0, -9.1, -8.9],
        "cut-papers-keep": [5.0, 5.0, 5.0],  # another sparsity: not a contender
    }
    assert best(methods) == ["magnitude", "cut"]


def test_kept_shares_are_weighted_by_layer_size_into_trunk_and_heads() -> None:
    sizes = {"trunk.a": 100, "trunk.b": 300, "heads.seg.out": 50, "heads.depth.out": 50}
    fused = {"trunk.a": 1.0, "trunk.b": 0.0, "heads.seg.out": 0.5, "heads.depth.out": 0.2}
    own = {"seg": dict(fused), "depth": dict(fused)}
    kept = [KeptShare(s, "cut", 0.9, fused, own, sizes) for s in (0, 1)]
    names, cols, all_sizes = kept_table(kept)
    assert names == ["cut 90%", "cut 90%: seg's own", "cut 90%: depth's own"]
    assert cols["cut 90%"]["trunk"] == pytest.approx(0.25)  # 100 of 400 trunk weights
    assert cols["cut 90%"]["head seg"] == 0.5 and all_sizes["trunk"] == 400
