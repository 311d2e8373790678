"""bench quality: the goal verdicts and the findings come from the rows, and the section renders them
(one case per seed; baselines against the shipped model by the paired test over seeds)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from edgecut.errors import ConfigError
from edgecut_bench.quality import QualityConfig, QualityResult, merged
from edgecut_bench.quality_goals import against_shipped, latency_fit, verdicts
from edgecut_bench.quality_report import markdown, plot
from edgecut_bench.quality_rows import (
    FULL,
    QUICK,
    REFINED,
    RETRAINED,
    SCRATCH_CANDIDATE,
    SCRATCH_TIME,
    TP_FINAL,
    TP_MAGNITUDE,
    TP_QUICK,
    TP_TAYLOR,
    Case,
    Row,
)

FULL_METRICS = {"seg": {"miou": 0.80, "pixel_acc": 0.90}, "depth": {"abs_err": 0.50, "rel_err": 0.10}}


def _metrics(seg: float, depth: float) -> dict[str, dict[str, float]]:
    """Both seg metrics `seg` % changed, both depth errors `depth` % changed (positive = worse error)."""
    return {
        "seg": {"miou": 0.80 * (1 + seg / 100), "pixel_acc": 0.90 * (1 + seg / 100)},
        "depth": {"abs_err": 0.50 * (1 + depth / 100), "rel_err": 0.10 * (1 + depth / 100)},
    }


def _row(
    kind: str, label: str, macs: int, ms: float, s: float, el: float, seg: float, depth: float, dm: float
) -> Row:
    return Row(kind, label, macs, 1000, ms, s, el, _metrics(seg, depth), dm)


def _case(budget: float, quick_s: float, refined_dm: float, refined_depth: float, refined_ms: float) -> Case:
    case = Case(("seg", "depth"), budget, {"seg": "segmentation", "depth": "depth"})
    case.rows = [
        Row(FULL, "full model", 100, 1000, 10.0, 0.0, 0.0, FULL_METRICS, 0.0),
        _row(QUICK, "quick", 50, 6.0, quick_s, quick_s, -3.0, 5.0, -4.0),
        _row(REFINED, "refinement 1", 50, refined_ms, 60.0, quick_s + 60.0, -1.0, refined_depth, refined_dm),
        _row(SCRATCH_TIME, "scratch, same time", 50, 6.0, 70.0, 70.0, -10.0, 10.0, -10.0),
        _row(SCRATCH_CANDIDATE, "from-scratch candidate (not shipped)", 50, 6.0, 80.0, 80.0, -2.0, 2.0, -2.0),
        _row(TP_TAYLOR, "Torch-Pruning taylor", 50, 6.0, 20.0, 20.0, -5.0, 5.0, -5.0),
    ]
    return case


SEED_SHIFT = (0.0, 0.6, -0.5)  # what a seed does to every row of its case (a shared draw)
ROW_NOISE = (0.0, 0.1, -0.1)  # ... and to one row alone


def _seeded(case: Case, seeds: int = 3) -> list[Case]:
    """`case` on `seeds` seeds: every Δm moved by the seed's shared shift, the non-shipped rows by a
    little noise of their own, so that each baseline's gap to the shipped model varies by ±0.1."""
    out = []
    for s in range(seeds):
        c = copy.deepcopy(case)
        c.seed = s
        for r in c.rows:
            if r.kind != FULL:
                r.delta_m += SEED_SHIFT[s] + (0.0 if r.shipped else ROW_NOISE[s])
        out.append(c)
    return out


def _by_goal(found: list, goal: str) -> list:
    return [v for v in found if v.goal.startswith(goal)]


def test_rows_that_meet_every_goal_are_judged_met() -> None:
    case = _case(0.5, quick_s=9.0, refined_dm=-1.5, refined_depth=1.0, refined_ms=5.5)
    found = verdicts([case])
    assert {v.goal.split(" (")[0] for v in found} == {
        "Δm after refinement",
        "no task > 5 % below full",
        "quick model build time",
        "refined model within 5 min",
        "speed-up / MAC cut",
    }
    assert all(v.met for v in found), [v for v in found if not v.met]


def test_a_missed_goal_says_missed_and_by_how_much() -> None:
    # refined Δm -3.5 at macs 0.5 (goal -2), depth 7 % worse (goal 5 %), quick 20 s (goal 15), refined at
    # 8 ms for a 2x MAC cut: speed-up 1.25, ratio 0.625 (goal 0.8)
    case = _case(0.5, quick_s=20.0, refined_dm=-3.5, refined_depth=7.0, refined_ms=8.0)
    found = verdicts([case])
    (dm,) = _by_goal(found, "Δm")
    assert dm.met is False and dm.word == "**missed**"
    assert "short by 1.50 points" in dm.detail
    (task,) = _by_goal(found, "no task")
    assert task.met is False and task.value.startswith("depth -7.0")
    assert "short by 2.00 points" in task.detail
    (quick,) = _by_goal(found, "quick")
    assert quick.met is False and "over by 5.0 s" in quick.detail
    speed = {v.goal: v for v in _by_goal(found, "speed-up")}
    assert speed["speed-up / MAC cut (refinement 1)"].met is False
    assert "short by 0.18" in speed["speed-up / MAC cut (refinement 1)"].detail
    assert speed["speed-up / MAC cut (quick)"].met  # 10/6 = 1.67x for a 2x cut: 0.83


def test_a_goal_missed_by_less_than_the_shown_digits_is_shown_apart_from_it() -> None:
    # refined: Δm -2.004 against >= -2; 10 / 6.28 ms = 1.592x for a 2x MAC cut: ratio 0.7962 against 0.8
    case = _case(0.5, quick_s=9.0, refined_dm=-2.004, refined_depth=5.04, refined_ms=6.28)
    found = verdicts([case])
    (dm,) = _by_goal(found, "Δm")
    assert not dm.met and dm.value == "-2.004 %" and "short by 0.004 points" in dm.detail
    (task,) = _by_goal(found, "no task")
    assert not task.met and task.value.startswith("depth -5.04") and "short by 0.04 points" in task.detail
    speed = {v.goal: v for v in _by_goal(found, "speed-up")}["speed-up / MAC cut (refinement 1)"]
    assert not speed.met and speed.value == "0.796" and "short by 0.004;" in speed.detail
    for verdict in found:
        assert "short by 0.00;" not in verdict.detail and "short by 0.00 " not in verdict.detail


def test_a_build_time_over_by_less_than_a_tenth_is_shown_apart_from_the_goal() -> None:
    (quick,) = _by_goal(
        verdicts([_case(0.5, quick_s=15.03, refined_dm=-1.0, refined_depth=1.0, refined_ms=5.0)]), "quick"
    )
    assert not quick.met and quick.value == "15.03 s" and "over by 0.03 s" in quick.detail


def test_a_late_last_refinement_says_when_the_one_before_came() -> None:
    case = _case(0.5, quick_s=10.0, refined_dm=-1.0, refined_depth=1.0, refined_ms=5.0)
    case.of(REFINED)[0].refinement = 1
    late = copy.deepcopy(case.of(REFINED)[0])
    late.label, late.refinement, late.elapsed = "refinement 2", 2, 359.4
    case.rows.insert(3, late)
    (refined,) = _by_goal(verdicts([case]), "refined")
    assert not refined.met and refined.value == "359 s"
    assert "refinement 2; over by 59 s; refinement 1 came at 70 s" in refined.detail


def test_goal_thresholds_follow_the_budget() -> None:
    # -3.5 misses -2 at macs 0.5 but meets -5 at macs 0.3, where the per-task rule does not apply
    found = verdicts([_case(0.3, quick_s=9.0, refined_dm=-3.5, refined_depth=7.0, refined_ms=5.5)])
    (dm,) = _by_goal(found, "Δm")
    assert dm.met and dm.target == ">= -5 %"
    assert not _by_goal(found, "no task")


def test_without_a_refinement_the_quick_model_is_judged_and_the_time_goal_is_open() -> None:
    case = _case(0.5, quick_s=9.0, refined_dm=-1.0, refined_depth=1.0, refined_ms=5.5)
    case.rows = [r for r in case.rows if r.kind != REFINED]
    found = verdicts([case])
    (dm,) = _by_goal(found, "Δm")
    assert dm.value == "-4.00 %" and dm.met is False and "no refinement shipped" in dm.detail
    (refined,) = _by_goal(found, "refined")
    assert refined.met is None and refined.word == "n/a"


def test_a_baseline_beats_the_shipped_model_only_by_the_paired_test_over_seeds() -> None:
    case = _case(0.5, quick_s=9.0, refined_dm=-3.0, refined_depth=1.0, refined_ms=5.5)
    found = {a.baseline: a for a in against_shipped(_seeded(case))}
    # the candidate (-2 %) against the refined model (-3 %): gaps 1.0, 1.1, 0.9 over three seeds
    won = found["from-scratch candidate (not shipped)"]
    assert won.wins and won.test.mean_gap == pytest.approx(1.0) and won.test.n == 3
    assert won.case == "seg + depth @ macs 0.5" and won.test.p < 0.01
    assert found["scratch, same time"].test.verdict == "loss"  # -10 % against -3 %
    # against the quick model (-4 %), Torch-Pruning's -5 % loses
    tp = {a.baseline: a for a in against_shipped(_seeded(case), TP_QUICK, "quick")}["Torch-Pruning taylor"]
    assert tp.test.verdict == "loss" and tp.shipped == "quick"
    # one seed: the same 1-point gap is not tested, and never a win
    (one,) = [a for a in against_shipped([case]) if a.baseline.startswith("from-scratch")]
    assert not one.wins and one.test.said() == "1 seed: not tested"


def test_a_gap_the_seeds_cannot_separate_is_no_difference() -> None:
    case = _case(0.5, quick_s=9.0, refined_dm=-3.0, refined_depth=1.0, refined_ms=5.5)
    cases = _seeded(case)
    for c, dm in zip(cases, (-1.0, -4.5, -3.2), strict=True):  # the candidate: +2.0, -2.1, -0.3 vs refined
        (cand,) = c.of(SCRATCH_CANDIDATE)
        refined = c.final()
        assert refined is not None
        cand.delta_m = refined.delta_m + {-1.0: 2.0, -4.5: -2.1, -3.2: -0.3}[dm]
    (a,) = [a for a in against_shipped(cases) if a.baseline.startswith("from-scratch")]
    assert a.test.verdict == "no difference" and a.test.said().startswith("no difference (p = ")


def test_the_section_states_verdicts_and_wins_and_the_plot_is_written(tmp_path: Path) -> None:
    case = _case(0.5, quick_s=20.0, refined_dm=-3.0, refined_depth=1.0, refined_ms=5.5)
    cases = _seeded(case)
    short = QualityConfig(Path("reference.pt"), tmp_path, scratch_epochs=2.0)
    res = QualityResult(
        short, cases, 64, 90.0, {c.name: 0.7 for c in cases}, recovery="60 steps", reference_epochs=8
    )
    text = markdown(res, "edgecut bench quality")
    assert "**missed**" in text and "over by 5.0 s" in text
    assert "missed in 3 of 3 seeds" in text and "| 20.0 s / 20.0 s / 20.0 s |" in text  # quick build time
    assert (
        "**from scratch wins** at seg + depth @ macs 0.5: from-scratch candidate (not shipped) Δm -1.97 ± 0.65 % "
        "against the final model edgecut ships -2.97 ± 0.55 % (by +1.00 pp (95 % CI +0.75 … +1.25, p = 0.003, n = 3))"
        in text
    )
    # 6.0 ms against the refined model's 5.5: a better Δm bought with speed is said to be one
    assert "but it runs 1.09x the shipped model's time (6.00 vs 5.50 ms): at the same MACs, not" in text
    # one table per setting, Δm mean ± sd over the seeds, and where each seed ends
    assert text.count("**seg + depth @ macs 0.5**") == 1 and "(seeds 0, 1, 2; mean over seeds" in text
    assert "| **refinement 1** | 0.00 | 2.00 | 5.50 |" in text
    order = [ln.split(" | ")[0] for ln in text.splitlines() if ln.startswith("| ") and " | 2.00 | " in ln]
    assert (
        order[:3] == ["| **quick**", "| **refinement 1**", "| from-scratch candidate (not shipped)"]
        and "| -2.97 ± 0.55 |" in text
    )
    assert "| *what the device serves (the last shipped)* |" in text
    assert "| scratch, same time | seg + depth @ macs 0.5 |" not in text
    assert (
        "| seg + depth @ macs 0.5 | scratch, same time | -9.97 ± 0.65 | final | -2.97 ± 0.55 | -7.00 pp"
        in text
    )
    assert "Scratch width factors: seg + depth @ macs 0.5: 0.700." in text
    one = markdown(QualityResult(short, [case], 64, 90.0, {case.name: 0.7}), "x")
    assert "1 seed: not tested" in one and "No from scratch baseline beats" not in one
    assert "- from scratch against the final model edgecut ships: not tested (one seed" in one
    assert (
        "above in 1 of 2 comparisons: from-scratch candidate (not shipped) at seg + depth @ macs 0.5." in one
    )
    assert "**One seed**" in one and "± " not in one.split("**Goals")[0].split("**seg + depth")[1]
    assert "for 2 epochs (the engine's: 8; the reference itself trained 8)" in text
    default = markdown(
        QualityResult(
            QualityConfig(Path("reference.pt"), tmp_path), [case], 64, 90.0, {}, reference_epochs=41
        ),
        "x",
    )
    assert "for 8 epochs (the engine's default; the reference itself trained 41)" in default
    plot(res, tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_a_partial_run_names_the_cases_it_left_out(tmp_path: Path) -> None:
    case = _case(0.5, quick_s=9.0, refined_dm=-1.0, refined_depth=1.0, refined_ms=5.5)
    cfg = QualityConfig(Path("reference.pt"), tmp_path, task_sets=(("seg", "depth"),), budgets=(0.5,))
    text = markdown(
        QualityResult(cfg, [case], 64, 90.0, {case.name: 0.7}, reference_epochs=8), "edgecut bench quality"
    )
    assert (
        "**Partial run**: not measured here: seg + depth @ macs 0.3; seg + depth + normals @ macs 0.3; "
        "seg + depth + normals @ macs 0.5" in text
    )
    assert "; 1 seed of the default 3 (the defaults" in text
    every: list[Case] = []  # the default matrix on the default three seeds
    for tasks in (("seg", "depth"), ("seg", "depth", "normals")):
        for budget in (0.5, 0.3):
            one = _case(budget, 9.0, -1.0, 1.0, 5.5)
            one.tasks = tasks
            every += _seeded(one)
    whole = QualityResult(
        QualityConfig(Path("reference.pt"), tmp_path), every, 64, 90.0, {}, reference_epochs=8
    )
    assert "Partial run" not in markdown(whole, "edgecut bench quality")
    # a split run where one task set has a seed fewer: the section says which case ran on which seeds
    uneven = QualityResult(
        QualityConfig(Path("reference.pt"), tmp_path),
        [c for c in every if not (c.tasks == ("seg", "depth", "normals") and c.seed == 2)],
        64,
        90.0,
        {},
        reference_epochs=8,
    )
    text = markdown(uneven, "edgecut bench quality")
    assert "seeds per case of the default 3: seg + depth @ macs 0.5: 0, 1, 2;" in text
    assert "seg + depth + normals @ macs 0.3: 0, 1 (the defaults" in text
    assert "the cases ran on up to 3 seeds" in text and "every case ran on" not in text


def test_a_speed_up_short_of_the_mac_cut_is_explained_by_the_fixed_cost_it_measures() -> None:
    """Latencies that follow ms = a x MMACs + b: the verdict of a miss names the fitted per-run cost and
    the ratio it alone allows, instead of only 'missed'."""
    case = _case(0.5, quick_s=9.0, refined_dm=-1.5, refined_depth=1.0, refined_ms=5.5)
    for r in case.rows:
        r.macs = {100: 100_000_000, 50: 50_000_000}[r.macs]
        r.latency_ms = 2e-6 * r.macs + 4.0  # full 204 ms, the halved models 104 ms
    assert latency_fit(case) == pytest.approx((2.0, 4.0))
    (quick,) = [v for v in _by_goal(verdicts([case]), "speed-up / MAC cut") if "quick" in v.goal]
    assert quick.met and quick.value == "0.98" and "fixed" not in quick.detail  # 204 / 104 / 2

    for r in case.rows:
        r.latency_ms = 2e-6 * r.macs + 100.0  # a large per-run cost: full 300 ms, halved 200 ms
    (quick,) = [v for v in _by_goal(verdicts([case]), "speed-up / MAC cut") if "quick" in v.goal]
    assert not quick.met and quick.value == "0.75"  # 300 / 200 / 2
    assert "ms ≈ 2 x MMACs + 100.00: that fixed per-run cost alone caps the ratio at 0.75" in quick.detail


def test_a_shipped_from_scratch_candidate_is_final_and_the_refined_time_goal_stays_on_refinements() -> None:
    case = _case(0.5, quick_s=9.0, refined_dm=-2.5, refined_depth=1.0, refined_ms=5.5)
    retrained = _row(RETRAINED, "refinement 2 (from scratch)", 48, 5.0, 240.0, 310.0, 1.0, -1.0, 1.0)
    case.rows.insert(3, retrained)
    assert case.final() is retrained
    found = verdicts([case])
    (dm,) = _by_goal(found, "Δm")
    assert dm.met and dm.value == "+1.00 %" and "from-scratch candidate beat the refined model" in dm.detail
    (refined,) = _by_goal(found, "refined")
    assert refined.met and refined.value == "69 s"  # the distillation refinement, not the 310 s candidate
    (speed,) = [v for v in found if v.goal == "speed-up / MAC cut (refinement 2 (from scratch))"]
    assert "its MAC cut outgrows its speed-up by design" in speed.detail
    # nothing beats what is shipped now, on any seed
    assert [a.baseline for a in against_shipped(_seeded(case)) if a.test.verdict != "loss"] == []


def test_a_saved_run_renders_again_without_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgecut.cli import main
    from edgecut_bench import saved_rows

    case = _case(0.5, quick_s=9.0, refined_dm=-1.0, refined_depth=1.0, refined_ms=5.5)
    res = QualityResult(
        QualityConfig(Path("reference.pt"), tmp_path), [case], 64, 90.0, {}, reference_epochs=8
    )
    res.command = "edgecut bench quality --budgets 0.5"
    rows, out = tmp_path / "rows.pkl", tmp_path / "bench.md"
    saved_rows.save(res, rows)
    argv = [
        "bench",
        "quality",
        "--render-from",
        str(rows),
        "--out",
        str(out),
        "--plot",
        str(tmp_path / "q.png"),
    ]
    assert main(argv) == 0
    text = out.read_text()
    assert "## Quality at budget" in text and "Rerun: `edgecut bench quality --budgets 0.5`" in text
    assert (tmp_path / "q.png").exists()
    # a file that holds something else is refused in one sentence
    saved_rows.save({"not": "rows"}, tmp_path / "other.pkl")
    capsys.readouterr()
    assert main(["bench", "quality", "--render-from", str(tmp_path / "other.pkl"), "--out", ""]) != 0
    err = capsys.readouterr().err
    assert "does not hold bench quality rows (it holds a dict)" in err and "Traceback" not in err


def test_the_same_time_baseline_says_how_many_epochs_it_got(tmp_path: Path) -> None:
    case = _case(0.5, quick_s=9.0, refined_dm=-1.0, refined_depth=1.0, refined_ms=5.5)
    (same,) = case.of(SCRATCH_TIME)
    same.note = "1500 steps"  # 1500 x 32 / 6000 scenes = 8.0 epochs, the reference's own schedule
    res = QualityResult(
        QualityConfig(Path("reference.pt"), tmp_path), [case], 64, 90.0, {}, reference_epochs=8
    )
    text = markdown(res, "x")
    assert "8.0-8.0 epochs of the 6000 scenes here, about the reference's whole 8-epoch schedule" in text
    same.note = "300 steps"
    text = markdown(res, "x")
    assert "1.6-1.6 epochs of the 6000 scenes here" in text and "whole 8-epoch schedule, so" not in text


def test_runs_of_other_seeds_render_as_one_section_and_a_case_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full run split over CI jobs (one seed each) renders one section from their saved rows."""
    from edgecut.cli import main
    from edgecut_bench import saved_rows

    cases = _seeded(_case(0.5, quick_s=9.0, refined_dm=-3.0, refined_depth=1.0, refined_ms=5.5))
    files = []
    for c in cases:
        cfg = QualityConfig(
            Path("reference.pt"), tmp_path, seeds=(c.seed or 0,), cases=((c.tasks, c.budget),)
        )
        res = QualityResult(
            cfg, [c], 64, 600.0, {c.name: 0.7}, command=f"edgecut bench quality --seeds {c.seed}"
        )
        files.append(tmp_path / f"rows-{c.seed}.pkl")
        saved_rows.save(res, files[-1])
    out = tmp_path / "bench.md"
    assert main(["bench", "quality", "--render-from", *map(str, files), "--out", str(out), "--plot", ""]) == 0
    text = out.read_text()
    assert "(seeds 0, 1, 2; mean over seeds" in text and "Whole run: 30.0 min" in text
    assert "**from scratch wins** at seg + depth @ macs 0.5" in text  # the paired test over the 3 files
    assert "Rerun: `edgecut bench quality --seeds 0; edgecut bench quality --seeds 1; edgecut" in text
    assert main(["bench", "quality", "--render-from", str(files[0]), "--out", "", "--plot", ""]) == 0
    capsys.readouterr()
    assert main(["bench", "quality", "--render-from", str(files[0]), str(files[0]), "--out", ""]) != 0
    err = capsys.readouterr().err
    assert "two of the row files measured seg + depth @ macs 0.5, seed 0" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--seeds", "0,x", "--seeds must be integers >= 0 separated by ','"),
        ("--seeds", "1,1", "--seeds must be distinct integers >= 0"),
        ("--cases", "seg,depth@big", "--cases must be TASKS@BUDGET separated by ';'"),
        ("--cases", "seg,depth", "--cases must be TASKS@BUDGET separated by ';'"),
    ],
)
def test_bad_seeds_or_cases_are_refused_in_one_sentence(
    flag: str, value: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgecut.cli import main

    assert main(["bench", "quality", "--data-dir", str(tmp_path), flag, value, "--out", ""]) != 0
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_cases_select_the_task_set_and_budget_pairs_to_run(tmp_path: Path) -> None:
    from edgecut_bench.cli import _cases

    cases = _cases("seg,depth@0.5; seg,depth,normals@0.3")
    assert cases == ((("seg", "depth"), 0.5), (("seg", "depth", "normals"), 0.3))
    cfg = QualityConfig(Path("reference.pt"), tmp_path, cases=cases)
    assert cfg.matrix() == list(cases)
    assert len(QualityConfig(Path("reference.pt"), tmp_path).matrix()) == 4  # every task set x budget


def test_the_summary_bullet_counts_baselines_by_the_paired_test_and_gives_the_final_model_per_case(
    tmp_path: Path,
) -> None:
    from edgecut_bench.quality_tables import summary

    cases = _seeded(_case(0.5, quick_s=9.0, refined_dm=-3.0, refined_depth=1.0, refined_ms=5.5))
    cfg = QualityConfig(Path("reference.pt"), tmp_path)
    res = QualityResult(cfg, cases, 64, 7200.0, {}, command="edgecut bench quality")
    said = summary(res)
    assert said.startswith("(`edgecut bench quality`, 3 seeds, 120.0 min): what the device serves in the end")
    assert "seg + depth @ macs 0.5 -3.0 ± 0.6 %" in said and "after 9–9 s of build time" in said
    # scratch same time loses, the candidate wins (+1.0 on every seed); Torch-Pruning loses to the quick one
    assert "from scratch 1 / 0 / 1, Torch-Pruning given the same training (quick vs. quick) 0 / 0 / 1" in said
    assert "missed: Δm after refinement" in said
    one = summary(QualityResult(cfg, [_case(0.5, 9.0, -3.0, 1.0, 5.5)], 64, 60.0, {}))
    assert "from scratch not tested (1 seed) in 2 comparisons" in one and "mean ± sd" not in one


def test_torch_pruning_is_compared_like_with_like_and_an_equal_result_is_no_difference(
    tmp_path: Path,
) -> None:
    """Torch-Pruning's quick rows against edgecut's quick model, its final rows against the last model of
    edgecut's distillation lineage (the same training), not against a from-scratch model shipped after it."""
    case = _case(0.5, quick_s=9.0, refined_dm=-3.0, refined_depth=1.0, refined_ms=5.5)
    case.rows.insert(3, _row(RETRAINED, "refinement 2 (from scratch)", 48, 5.0, 240.0, 310.0, 1.0, -1.0, 1.0))
    case.rows += [
        _row(TP_MAGNITUDE, "Torch-Pruning magnitude, quick", 50, 6.0, 9.0, 9.0, -3.0, 4.0, -2.5),
        _row(TP_FINAL[0], "Torch-Pruning magnitude, final", 50, 5.5, 60.0, 69.0, -1.0, 1.0, -3.0),
        _row(TP_FINAL[1], "Torch-Pruning taylor, final", 50, 5.5, 60.0, 69.0, -2.0, 2.0, -3.5),
    ]
    assert case.distilled() is case.of(REFINED)[0] and case.final() is case.of(RETRAINED)[0]
    cases = _seeded(case)
    quick = {a.baseline: a for a in against_shipped(cases, TP_QUICK, "quick")}
    assert quick["Torch-Pruning magnitude, quick"].shipped == "quick"
    assert quick["Torch-Pruning magnitude, quick"].test.verdict == "win"  # +1.5 points on every seed
    final = {a.baseline: a for a in against_shipped(cases, TP_FINAL, "distilled")}
    assert final["Torch-Pruning magnitude, final"].test.verdict == "no difference"  # 0 ± 0.1 points
    assert final["Torch-Pruning taylor, final"].test.verdict == "loss"
    assert all(a.test.verdict == "loss" for a in against_shipped(cases, TP_FINAL))  # vs the shipped +1 %
    text = markdown(
        QualityResult(QualityConfig(Path("reference.pt"), tmp_path), cases, 64, 90.0, {}, reference_epochs=8),
        "x",
    )
    assert (
        "**Torch-Pruning (quick) wins** at seg + depth @ macs 0.5: Torch-Pruning magnitude, quick Δm" in text
    )
    assert "No Torch-Pruning (final) baseline beats the last model of edgecut's distillation lineage" in text
    assert "round_to=8" in text


def test_a_win_says_per_task_where_the_gap_comes_from(tmp_path: Path) -> None:
    """A baseline that trades one task for another: its win names each task's change beside edgecut's,
    so a reader sees the gap is depth bought with segmentation."""
    case = _case(0.5, quick_s=9.0, refined_dm=-3.0, refined_depth=4.0, refined_ms=5.5)
    case.rows.append(_row(TP_FINAL[1], "Torch-Pruning taylor, final", 50, 5.5, 60.0, 69.0, -3.0, -1.0, -1.0))
    cases = _seeded(case)
    (won,) = [a for a in against_shipped(cases, TP_FINAL, "distilled")]
    assert won.wins
    assert won.tasks["depth"] == pytest.approx((1.0, -4.0)) and won.tasks["seg"] == pytest.approx(
        (-3.0, -1.0)
    )
    text = markdown(
        QualityResult(QualityConfig(Path("reference.pt"), tmp_path), cases, 64, 90.0, {}, reference_epochs=8),
        "x",
    )
    assert (
        "per task against the full model (mean over the seeds, the baseline's vs edgecut's): "
        "depth +1.0 vs -4.0 %, seg -3.0 vs -1.0 %." in text
    )


def test_rows_of_a_run_split_over_checkouts_merge_and_other_runs_do_not(tmp_path: Path) -> None:
    """Seeds run in other checkouts (CI jobs) hold other checkpoint and data paths: they merge by the
    checkpoint's name and content; another reference, other settings or a case measured twice do not."""

    def run(seed: int, where: str, sha: str = "abc", **settings: int) -> QualityResult:
        case = _case(0.5, quick_s=9.0, refined_dm=-1.0, refined_depth=1.0, refined_ms=5.5)
        case.seed = seed
        cfg = QualityConfig(Path(where) / "pretrained/reference.pt", Path(where) / ".edgecut", **settings)
        return QualityResult(cfg, [case], 64, 60.0, {}, checkpoint_sha256=sha)

    both = merged([run(0, "/ci/job0"), run(1, "/ci/job1")])
    assert sorted(c.seed or 0 for c in both.cases) == [0, 1] and both.seconds == 120.0
    for other, said in (
        (run(1, "/ci/job1", sha="def"), "different reference models"),
        (run(1, "/ci/job1", n_val=64), "different settings"),
        (run(0, "/ci/job1"), "two of the row files measured"),
    ):
        with pytest.raises(ConfigError, match=said):
            merged([run(0, "/ci/job0"), other])
