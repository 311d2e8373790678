"""The findings of `edgecut bench paper` from its rows: seeds -> wins / no difference / losses (the
paired test itself: test_paper_stats.py), Garg's finding 1
at matched parameter counts, the best methods per setting and where each mask keeps its weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.server.cut.prune import Size
from edgecut_bench.paper_learned import (
    DEFAULT_ROW,
    best,
    garg_findings,
    kept_findings,
    kept_table,
    summary_methods,
)
from edgecut_bench.paper_learned import default_lines as learned_lines
from edgecut_bench.paper_rows import (
    ChannelRow,
    Evaluated,
    GargRow,
    Guard,
    KeptShare,
    MaskLatency,
    PaperConfig,
    PaperResult,
)
from edgecut_bench.paper_stats import interpolate, matched_grid


def _garg(criterion: str, seed: int, rnd: int, params: float, dm: float) -> GargRow:
    steps = 100 + 25 * rnd
    return GargRow(
        seed, criterion, rnd, rnd * 10, rnd * 20, Size(0, int(params)), {}, dm, {}, dm - 5, steps, steps, 1024
    )


def test_finding_one_compares_the_criteria_at_matched_parameter_counts_not_rounds() -> None:
    """Both criteria lie on one Δm-vs-params line, but at each round B has removed more parameters:
    paired by round they look 10 pp apart, at matched sizes they are the same."""
    rows = []
    for seed, noise in enumerate((0.0, 0.4, -0.4)):
        rows += [_garg("a", seed, 4, 400e3, -10 + noise), _garg("a", seed, 8, 200e3, -30 + noise)]
        rows += [_garg("b", seed, 4, 300e3, -20 - noise), _garg("b", seed, 8, 100e3, -40 - noise)]
    text = "\n".join(garg_findings(rows, ("a", "b")))
    assert "Finding 1 (the two criteria give similar quality at equal size) **holds**" in text
    assert "| 200.0k | -30.00 ± 0.40 | -30.00 ± 0.40 | no difference (p = 1.00, n = 3) |" in text
    assert "| 300.0k |" in text and "| 400.0k |" not in text  # only where both curves reach
    assert interpolate([(400e3, -10), (200e3, -30)], 250e3) == pytest.approx(-25)
    assert matched_grid([[(400.0, 0.0), (200.0, 0.0)], [(300.0, 0.0), (100.0, 0.0)]], 3) == [200, 250, 300]


def test_finding_two_pairs_each_architecture_with_its_retrained_copy_at_the_last_round() -> None:
    rows = [_garg("a", s, 8, 100e3, -50 + s) for s in range(3)]  # retrained = Δm - 5: worse
    text = "\n".join(garg_findings(rows, ("a",)))
    assert "Finding 2" in text and "**does not hold**" in text
    assert "(iterative ahead by +5.00 pp (95 % CI +5.00 … +5.00, p < 0.001, n = 3))" in text


def test_the_best_method_includes_those_the_paired_test_cannot_separate_and_skips_the_papers_keep_row() -> (
    None
):
    methods = {
        "magnitude": {0: -1.0, 1: -1.1, 2: -0.9},
        "cut": {0: -1.05, 1: -1.3, 2: -0.8},  # gaps 0.05, 0.2, -0.1: no difference
        "snip-union": {0: -9.0, 1: -9.1, 2: -8.9},
        "random": {0: -30.0, 1: -35.0, 2: -230.0},  # one seed collapsed: three seeds cannot separate it
        "cut-papers-keep": {0: 5.0, 1: 5.0, 2: 5.0},  # another sparsity: not a contender
    }
    assert best(methods) == ["magnitude", "cut", "random"]
    assert best({m: {0: v[0]} for m, v in methods.items()}) == ["magnitude"]  # one seed: no test, no ties


def test_kept_shares_are_weighted_by_layer_size_into_trunk_and_heads() -> None:
    sizes = {"trunk.a": 100, "trunk.b": 300, "heads.seg.out": 50, "heads.depth.out": 50}
    fused = {"trunk.a": 1.0, "trunk.b": 0.0, "heads.seg.out": 0.5, "heads.depth.out": 0.2}
    own = {"seg": dict(fused), "depth": dict(fused)}
    kept = [KeptShare(s, "cut", 0.9, fused, own, sizes) for s in (0, 1)]
    names, cols, all_sizes = kept_table(kept)
    assert names == ["cut 90%", "cut 90%: seg's own", "cut 90%: depth's own"]
    assert cols["cut 90%"]["trunk"] == pytest.approx(0.25)  # 100 of 400 trunk weights
    assert cols["cut 90%"]["head seg"] == 0.5 and all_sizes["trunk"] == 400


def _result(kept: list[KeptShare], channel_rows: list | None = None) -> PaperResult:
    cfg = PaperConfig(Path("m.pt"), kept_methods=("magnitude", "cut"), seeds=(0, 1))
    lat = MaskLatency(("seg", "depth"), 0.9, 1.0, 1.0)
    guard = Guard("seg", 0.9, 0.1, 0.0)
    return PaperResult(
        cfg, 64, {}, {}, [], lat, guard, 1.0, channel_rows or [], [], kept, 0, {"total": 60.0}, 2
    )


def test_kept_findings_tell_a_task_that_starves_the_trunk_from_a_vote_that_does() -> None:
    """The run's own case: CUT's masks at 90 % against magnitude's, per layer and per region."""
    sizes = {"trunk.a": 900, "trunk.deep": 100, "heads.seg.out": 100, "heads.depth.out": 100}
    mag = {"trunk.a": 0.117, "trunk.deep": 0.05, "heads.seg.out": 0.04, "heads.depth.out": 0.11}
    cut = {"trunk.a": 0.10, "trunk.deep": 0.0, "heads.seg.out": 0.17, "heads.depth.out": 0.10}
    own = {
        t: {"trunk.a": 0.14, "trunk.deep": 0.01, "heads.seg.out": 0.17, "heads.depth.out": 0.10}
        for t in ("seg", "depth")
    }
    kept = [KeptShare(s, "magnitude", 0.9, mag, {}, sizes) for s in (0, 1)]
    kept += [KeptShare(s, "cut", 0.9, cut, own, sizes) for s in (0, 1)]
    text = " ".join(kept_findings(_result(kept)))
    assert "Against magnitude, CUT keeps 9% vs 11% of the trunk" in text
    assert "`trunk.deep`: 0% vs 5%" in text and "the per-task scores, not the vote, empty it" in text
    assert "CUT spends clearly more than magnitude on the seg head (17% vs 4%)" in text
    assert "no one task's scores starve the shared layers" in text
    assert "clearly less than magnitude of the" not in text  # depth's head: 10 % vs 11 % is not starving
    assert "these masks do not show it" in text


def test_the_default_stays_unless_the_best_method_beats_it_across_levels() -> None:
    def rows(method: str, dms: list[float]) -> list[ChannelRow]:
        return [
            ChannelRow(s, method, lv, Size(0, 0), 1.0, Evaluated({}, 0.0, {}, dm))
            for lv, dm in zip((0.3, 0.5, 0.7), dms, strict=True)
            for s in range(2)
        ]

    mixed = rows(DEFAULT_ROW, [-1.0, -2.0, -9.0]) + rows("cut-distill", [-2.0, -2.0, -5.0])
    text = " ".join(learned_lines(_result([], mixed)))
    assert (
        "1 / 1 / 1 W / N / L" in text and "no consistent gap across the levels, so the default stays" in text
    )
    # it names the default first, so the best method is never read as the default (issue 29)
    assert "*edgecut's default* is `cut-vote`. The best mean Δm" in text
    behind = rows(DEFAULT_ROW, [-3.0, -4.0, -9.0]) + rows("cut-distill", [-2.0, -2.0, -5.0])
    assert "the default should become cut-distill" in " ".join(learned_lines(_result([], behind)))


def test_the_summary_names_every_method_tied_at_the_cut_off_and_always_cut_and_magnitude() -> None:
    """Seen in the 2026-12-07 run: snip-init, snip-union and cut were each best or inseparable in 6
    settings, and the top-3 cut-off named snip-init alone, leaving out CUT, the method reproduced."""
    counts = {
        m: ["s"] * n for m, n in [("disparse-pt", 11), ("random", 7), ("snip-init", 6), ("snip-union", 6)]
    }
    counts |= {"cut": ["s"] * 6, "cut-distill": ["s"] * 4, "magnitude": ["s"]}
    assert summary_methods(counts) == ["disparse-pt", "random", "snip-init", "snip-union", "cut", "magnitude"]
    assert summary_methods({"a": ["s"] * 3, "b": ["s"] * 2, "c": ["s"], "d": []}) == [
        "a",
        "b",
        "c",
        "cut",
        "magnitude",
    ]
