"""The pure verdicts of a staged rollout: quality before any device, canaries after."""

from __future__ import annotations

from edgecut.model_meta import InputSpec, ModelMeta, OutputSpec
from edgecut.server.fleet.jobs.rollout_policy import (
    CanaryWatch,
    RolloutSettings,
    baseline_p95,
    canary_count,
    judge_canaries,
    judge_quality,
    task_quality,
)

S = RolloutSettings(
    observe_s=10, min_inferences=20, max_error_rate=0.05, max_p95_ratio=1.5, latency_slack_ms=1
)


def meta(miou: float, abs_err: float, pixel_acc: float = 0.9) -> ModelMeta:
    return ModelMeta(
        base_model="m",
        tasks=["seg", "depth"],
        input=InputSpec(shape=[None, 3, 8, 8], mean=[0, 0, 0], std=[1, 1, 1]),
        outputs={
            "seg": OutputSpec(name="seg", kind="segmentation", shape=[None, 2, 8, 8]),
            "depth": OutputSpec(name="depth", kind="depth", shape=[None, 1, 8, 8]),
        },
        params=1,
        macs=1,
        full_params=2,
        full_macs=2,
        metrics={
            "seg": {"miou": miou, "pixel_acc": pixel_acc},
            "depth": {"abs_err": abs_err, "rel_err": 0.2},
        },
        reference_metrics={"seg": {"miou": 0.6, "pixel_acc": 0.9}, "depth": {"abs_err": 0.1, "rel_err": 0.2}},
    )


def test_task_quality_uses_the_delta_m_signs() -> None:
    q = task_quality(meta(miou=0.54, abs_err=0.12))
    assert round(q["seg"] or 0, 4) == -0.05  # miou -10 %, pixel_acc 0: mean -5 %
    assert round(q["depth"] or 0, 4) == -0.1  # abs_err +20 % worse (lower is better), rel_err 0


def test_quality_gate_floor_and_regression() -> None:
    good, base = meta(0.59, 0.1), meta(0.6, 0.1)
    assert judge_quality(good, base, S).ok
    collapsed = meta(0.06, 0.1, pixel_acc=0.18)  # seg miou -90 %, pixel acc -80 %: below the -50 % floor
    v = judge_quality(collapsed, base, S)
    assert not v.ok and "task seg" in v.reason and "floor" in v.reason
    worse = meta(0.5, 0.1)  # -8 % on seg where the model it replaces had 0 %: more than 5 points worse
    v = judge_quality(worse, base, S)
    assert not v.ok and "worse than the model it replaces" in v.reason
    assert judge_quality(worse, None, S).ok  # nothing to regress from: only the floor applies


def test_unmeasured_quality_fails_only_when_required() -> None:
    m = meta(0.6, 0.1).model_copy(update={"metrics": {}})
    assert not judge_quality(m, None, S).ok
    assert judge_quality(m, None, S.model_copy(update={"require_quality": False})).ok


def watch(swapped: float, answered: int, failed: int, p95: float) -> CanaryWatch:
    w = CanaryWatch(swapped_at=swapped)
    w.observe(100, 0, 0.0)
    w.observe(100 + answered - failed, failed, p95)
    return w


def test_canaries_pass_only_after_enough_traffic_and_time() -> None:
    w = {"c1": watch(0.0, 25, 0, 2.0)}
    assert judge_canaries(w, 2.0, 0.0, now=5.0, s=S) is None  # observe_s not over yet
    v = judge_canaries(w, 2.0, 0.0, now=11.0, s=S)
    assert v is not None and v.ok
    few = {"c1": watch(0.0, 5, 0, 2.0)}
    assert judge_canaries(few, 2.0, 0.0, now=11.0, s=S) is None  # 5 of 20 requests: wait


def test_slow_or_failing_canary_fails() -> None:
    slow = judge_canaries({"c1": watch(0.0, 25, 0, 9.0)}, 2.0, 0.0, now=1.0, s=S)
    assert slow is not None and not slow.ok and "p95 9.0 ms above the bound 4.0 ms" in slow.reason
    failing = judge_canaries({"c1": watch(0.0, 40, 4, 2.0)}, 2.0, 0.0, now=1.0, s=S)
    assert failing is not None and not failing.ok and "error rate 10.0%" in failing.reason


def test_a_refused_swap_fails_at_once_and_silence_fails_at_the_timeout() -> None:
    refused = CanaryWatch(refused="outputs not finite")
    v = judge_canaries({"c1": refused}, 2.0, 0.0, now=0.0, s=S)
    assert v is not None and not v.ok and "refused" in v.reason
    silent = {"c1": CanaryWatch()}
    assert judge_canaries(silent, 2.0, 0.0, now=S.timeout_s - 1, s=S) is None
    v = judge_canaries(silent, 2.0, 0.0, now=S.timeout_s + 1, s=S)
    assert v is not None and not v.ok and "too little traffic" in v.reason


def test_counters_that_restart_with_the_agent_start_the_count_again() -> None:
    w = CanaryWatch(swapped_at=0.0)
    w.observe(500, 0, 1.0)
    w.observe(10, 0, 1.0)  # the agent restarted: its counters began at 0 again
    w.observe(40, 0, 1.0)
    assert w.answered == 30


def test_baseline_is_the_live_control_group_else_the_start_value() -> None:
    assert baseline_p95({"a": 2.0, "b": 4.0, "c": 0.0}, 9.0) == 3.0
    assert baseline_p95({}, 9.0) == 9.0


def test_canary_count() -> None:
    assert canary_count(4, S) == 1 and canary_count(10, S) == 3 and canary_count(1, S) == 1
    assert canary_count(3, S.model_copy(update={"min_canaries": 5})) == 3
