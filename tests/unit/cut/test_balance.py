"""No task left behind: a task starved by the channel ranking is weighted up and the model rebuilt
once; a task still behind is reported on the artifact."""

from __future__ import annotations

import pytest
import torch

from edgecut.server.cut.balance import leave_no_task_behind, rebalanced, starved, task_changes, trade_off
from edgecut.server.cut.fusion import fuse
from edgecut.server.engine import load_engine
from edgecut.server.mtl import checkpoint
from edgecut.server.spec import Budget, BuildSpec


def test_only_a_task_behind_while_another_stays_near_is_starved() -> None:
    assert starved({"seg": -0.02, "count": -0.21}) == ["count"]
    assert starved({"seg": -0.08, "count": -0.21}) == []  # the budget is tight for both: no rebalance
    assert starved({"seg": -0.01, "count": -0.04}) == []
    assert starved({"a": 0.0, "b": -0.3, "c": -0.1}, share=0.05) == ["b", "c"]


def test_task_changes_use_the_delta_m_metrics_of_each_kind() -> None:
    changes = task_changes(
        {"depth": {"abs_err": 0.6, "delta1": 0.5}, "count": {"accuracy": 0.664}},
        {"depth": {"abs_err": 0.5, "delta1": 0.9}, "count": {"accuracy": 0.836}},
        {"depth": "depth", "count": "classification"},
    )
    assert changes["depth"] == pytest.approx(-0.2)  # lower is better; delta1 is not a Δm metric
    assert changes["count"] == pytest.approx(-0.2057, abs=1e-4)


def test_the_starved_task_is_weighted_up_by_its_shortfall_within_a_cap() -> None:
    w = rebalanced({"seg": 2.0}, {"seg": -0.01, "count": -0.10}, ["count"], share=0.05)
    assert w == {"seg": 2.0, "count": 3.0}
    assert rebalanced({}, {"seg": 0.0, "count": -0.9}, ["count"], 0.05)["count"] == 4.0


def _fake_build(quality: dict[str, float]):
    """A 'model' whose count quality rises with count's fusion weight; records every build."""
    calls: list[dict[str, float]] = []

    def build(weights: dict[str, float]) -> dict[str, float]:
        calls.append(weights)
        w = weights.get("count", 1.0)
        return {"seg": quality["seg"], "count": quality["count"] + quality["gain"] * (w - 1)}

    return build, calls


def test_a_starved_task_is_rebuilt_once_and_the_better_build_kept() -> None:
    build, calls = _fake_build({"seg": -0.01, "count": -0.21, "gain": 0.06})
    out = leave_no_task_behind(build, dict, {}, share=0.05)
    assert len(calls) == 2 and out.rebuilt
    assert out.weights["count"] == 4.0 and out.build["count"] == pytest.approx(-0.03)
    assert out.trade_off == ""


def test_a_rebuild_that_does_not_help_keeps_the_first_and_reports_the_trade_off() -> None:
    build, calls = _fake_build({"seg": -0.01, "count": -0.21, "gain": -0.01})
    out = leave_no_task_behind(build, dict, {}, share=0.05)
    assert len(calls) == 2 and out.rebuilt and out.weights == {}
    assert out.build["count"] == pytest.approx(-0.21)
    assert out.trade_off == "count -21.0 % against the full model while seg stays within 5 % at this budget"


def test_without_rebuild_a_starved_task_is_built_once_and_reported() -> None:
    build, calls = _fake_build({"seg": -0.01, "count": -0.21, "gain": 0.06})
    out = leave_no_task_behind(build, dict, {}, share=0.05, rebuild=False)
    assert len(calls) == 1 and not out.rebuilt
    assert out.trade_off == "count -21.0 % against the full model while seg stays within 5 % at this budget"


def test_balanced_builds_and_tight_budgets_are_built_once() -> None:
    for quality in ({"seg": -0.01, "count": -0.02, "gain": 1.0}, {"seg": -0.2, "count": -0.3, "gain": 1.0}):
        build, calls = _fake_build(quality)
        out = leave_no_task_behind(build, dict, {}, share=0.05)
        assert len(calls) == 1 and not out.rebuilt
    assert (
        trade_off({"seg": -0.2, "count": -0.3}, 0.05)
        == "count -30.0 %, seg -20.0 % against the full model at this budget"
    )


def test_a_heavier_task_keeps_channels_the_vote_would_drop() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    plain = fuse("vote", scores)
    assert torch.equal(fuse("vote", scores, torch.tensor([1.0, 1.0])), plain)
    assert torch.equal(fuse("vote", scores, torch.tensor([3.0, 3.0])), plain)
    favoured = fuse("vote", scores, torch.tensor([4.0, 1.0]))
    assert favoured.argmax() == 3 and favoured.argmin() == 0  # the first task's ranking now leads


def test_engine_rebalances_a_starved_task_and_reports_what_remains(tmp_path, trained_small) -> None:
    """A tiny model with one task starved by a user priority of 0.05: the engine weights it up and
    rebuilds; the artifact carries the per-task changes, the weights used and any trade-off left."""
    checkpoint.save(tmp_path / "m.pt", trained_small)
    engine = load_engine(
        tmp_path / "m.pt", tmp_path, "synthetic", n_calib=48, n_val=32, recovery_steps=3, refine_steps=()
    )
    spec = BuildSpec.create(["seg", "depth"], Budget(macs_fraction=0.5), {"seg": 0.05})
    engine.balance_share = 10.0  # nothing counts as behind: one build, to see where each task lands
    first = engine.build(spec, lambda *a: None)
    first.cleanup()
    changes = first.meta.task_changes
    assert first.extras["rebalanced"] == 0.0 and first.meta.trade_off == ""
    worst, best = sorted(changes, key=changes.__getitem__)
    assert changes[worst] < changes[best]
    share = (-changes[worst] - changes[best]) / 200  # between the two tasks: exactly one is behind
    engine.balance_share = share
    built = engine.build(spec, lambda *a: None)
    built.cleanup()
    meta = built.meta
    assert built.extras["rebalanced"] == 1.0
    if meta.fusion_weights != {"seg": 0.05, "depth": 1.0}:  # the rebuild was kept: it weighted worst up
        assert meta.fusion_weights[worst] > dict(spec.priorities).get(worst, 1.0)
        assert min(meta.task_changes.values()) > changes[worst]
    assert (meta.trade_off != "") == (meta.task_changes[worst] < -100 * share)
    assert (worst in meta.trade_off) == (meta.task_changes[worst] < -100 * share)

    # With refinements to follow, the quick build ships at once: no rebuild, the lag reported on it.
    quick = load_engine(
        tmp_path / "m.pt", tmp_path, "synthetic", n_calib=48, n_val=32, recovery_steps=3, refine_steps=(3,)
    )
    quick.balance_share = share
    shipped = quick.build(spec, lambda *a: None)
    shipped.cleanup()
    assert shipped.extras["rebalanced"] == 0.0 and shipped.meta.fusion_weights == {"seg": 0.05, "depth": 1.0}
    lag = shipped.meta.task_changes
    assert (worst in shipped.meta.trade_off) == (lag[worst] < -100 * share)
