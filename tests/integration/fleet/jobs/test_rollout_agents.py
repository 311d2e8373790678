"""Staged rollouts with real agents: an upgraded server's new variant goes to a canary first.

Four x86 agents select seg and serve the v1 model; the server restarts with a new base model (new
build keys for everyone). A slow variant is rolled back on its canary and the other three never
receive it; a sound one is promoted to all four.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.broker import EmbeddedBroker
from edgecut.server.fleet.jobs.rollout_policy import PROMOTED, ROLLED_BACK, RolloutSettings
from tests.support.live_fleet import LiveFleet, running_fleet
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration

DEVICES = ["dev-a", "dev-b", "dev-c", "dev-d"]
# canaries must answer 10 requests on the variant and be watched 1 s after the last swap
# latency slack 5 ms: on a loaded 2-core machine these 0.1 ms test models show p95 jitter of about 2 ms
# (a sound variant was rolled back at 2.1 ms against 1.9 ms); the "slow" variant runs about 20 ms
ROLLOUT = RolloutSettings(
    observe_s=1.0, min_inferences=10, timeout_s=4 * WAIT_S, canary_fraction=0.25, latency_slack_ms=5.0
)


@pytest.fixture
def live(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[LiveFleet]:
    with running_fleet(tmp_path, broker.url, rollout=ROLLOUT) as fleet:
        yield fleet


def rollout_of(live: LiveFleet, candidate: str) -> dict[str, object] | None:
    assert live.server.rollouts is not None
    return next((r for r in live.server.rollouts.rollouts() if r["candidate_artifact"] == candidate), None)


def test_a_slow_variant_is_rolled_back_on_its_canary_and_a_sound_one_promoted(live: LiveFleet) -> None:
    for d in DEVICES:
        live.agent(d, ["seg"])
    v1 = {d: live.wait_serving(d, ["seg"]) for d in DEVICES}
    assert len(set(v1.values())) == 1
    baseline = v1[DEVICES[0]]
    wait_until(lambda: all(live.registry.devices.get(d)["telemetry"].get("inference_count") for d in DEVICES))

    # the upgrade: a new base model whose seg build is far slower on the devices
    slow_engine = OnnxTestEngine(
        live.root / "engine-v2", base_model_id="test-mtl-v2", faults={("seg",): "slow"}
    )
    live.restart_server(slow_engine)
    wait_until(lambda: len(slow_engine.builds) == 1)
    slow = wait_until(
        lambda: (live.server.rollouts.rollouts() or [None])[0] if live.server.rollouts else None
    )
    candidate = str(slow["candidate_artifact"])
    (canary,) = slow["canaries"]
    wait_until(lambda: (rollout_of(live, candidate) or {}).get("state") == ROLLED_BACK, 4 * WAIT_S)
    r = rollout_of(live, candidate)
    assert r is not None and "p95" in str(r["reason"]), r
    # the canary served the variant, then the old model again; nobody else ever swapped to it
    wait_until(lambda: live.serving(canary) == baseline)
    assert candidate in live.swapped_to(canary)
    for d in DEVICES:
        if d != canary:
            assert candidate not in live.swapped_to(d) and live.serving(d) == baseline
            assert candidate not in live.agents[d].store.bad  # it was never even offered

    # the next upgrade is sound: canary first, then everyone
    good_engine = OnnxTestEngine(live.root / "engine-v3", base_model_id="test-mtl-v3")
    live.restart_server(good_engine)
    good = wait_until(
        lambda: next(
            (
                r
                for r in (live.server.rollouts.rollouts() if live.server.rollouts else [])
                if r["candidate_artifact"] != candidate
            ),
            None,
        )
    )
    wait_until(
        lambda: (rollout_of(live, str(good["candidate_artifact"])) or {}).get("state") == PROMOTED, 4 * WAIT_S
    )
    for d in DEVICES:
        wait_until(lambda d=d: live.serving(d) == good["candidate_artifact"])


def test_a_from_scratch_refinement_reaches_the_cohort_through_a_canary(live: LiveFleet) -> None:
    """Refinement 1 keeps the quick model's architecture and goes to every device at once; refinement 2
    stands for the engine's from-scratch candidate (another architecture): canary first, then all."""
    live.engine.refinement_count, live.engine.retrained = 2, {2}
    for d in DEVICES:
        live.agent(d, ["seg"])
    assert live.server.rollouts is not None
    r = wait_until(
        lambda: next((r for r in live.server.rollouts.rollouts() if r["state"] == PROMOTED), None), 4 * WAIT_S
    )
    (only,) = live.server.rollouts.rollouts()  # refinement 1 started none
    candidate, baseline = str(r["candidate_artifact"]), str(r["baseline_artifact"])
    assert only["id"] == r["id"] and len(r["canaries"]) == 1
    assert live.server.jobs is not None
    store = live.server.jobs.store
    scratch, refined = store.meta(candidate), store.meta(baseline)
    assert scratch.method == "scratch" and scratch.params < refined.params
    rec = live.registry.jobs.get(str(r["candidate_build_key"]))  # the key serves refinement 2, made from 1
    assert rec is not None and (rec.artifact_id, rec.refinement, rec.parent_artifact_id) == (
        candidate,
        2,
        baseline,
    )
    for d in DEVICES:
        wait_until(lambda d=d: live.serving(d) == candidate)
        # the server's record of the swaps arrives over MQTT after the device has swapped
        wait_until(lambda d=d: candidate in live.swapped_to(d))
        if d not in r["canaries"]:  # the rest served refinement 1 while the canary proved it
            assert baseline in live.swapped_to(d)
