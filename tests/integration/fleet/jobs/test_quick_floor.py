"""The quick model's quality floor with real agents, broker and server: a quick model far below the full
model is not offered; the device keeps serving its model, is told why (and so is the dashboard), and
gets the first refinement that passes the floor, or the key's last model when none is left to come."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.broker import EmbeddedBroker
from tests.support.live_fleet import LiveFleet, running_fleet
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# The test engine's "low_quality" seg model: mIoU 0.18 against the full model's 0.60, Δm -70 %; each
# refinement closes half the gap: refinement 1 -35 %, refinement 2 -17.5 % (above the -25 % floor).
LOW = {("seg",): "low_quality"}


@pytest.fixture
def live(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[LiveFleet]:
    with running_fleet(tmp_path, broker.url) as fleet:  # the server's default floor: -25 %
        yield fleet


def _refinement(live: LiveFleet, device_id: str) -> int:
    prov = live.agents[device_id].status().provenance_json
    return int(json.loads(prov).get("refinement", 0)) if prov else -1


def _seg_job(live: LiveFleet):
    return next(
        (j for j in live.registry.jobs.all() if j.spec.get("tasks") == ["seg"] and "refine" not in j.spec),
        None,
    )


def test_a_quick_model_below_the_floor_is_held_and_the_refinement_that_passes_is_offered(
    live: LiveFleet,
) -> None:
    agent = live.agent("dev-a", ["depth"])
    first = live.wait_serving("dev-a", ["depth"])
    live.engine.faults.update(LOW)
    live.engine.refinement_count = 2
    with live.engine.hold_refinements():
        agent.tasks.set(["seg"])  # the user's change: a new build, whose quick model is far too poor
        quick = wait_until(lambda: (j := _seg_job(live)) is not None and j.state == "done" and j)
        why = "quick model -70.0 % below the -25 % floor; waiting for the refined model"
        # the device keeps serving its model and says why; so do the registry and the dashboard
        wait_until(lambda: why in agent.status().last_error)
        assert live.serving("dev-a") == first
        assert live.registry.devices.get("dev-a")["last_error"] == why
        assert why in str(live.api("/api/v1/devices/dev-a"))
        assert not live.registry.offers.was_offered("dev-a", quick.artifact_id)
    # refinement 1 (-35 %) is held too; refinement 2 (-17.5 %) passes and is offered
    wait_until(lambda: _refinement(live, "dev-a") == 2)
    rec = live.registry.jobs.get(quick.build_key)
    assert rec is not None and rec.refinement == 2 and live.serving("dev-a") == rec.artifact_id
    wait_until(lambda: rec.artifact_id in live.swapped_to("dev-a"))
    assert live.swapped_to("dev-a") == [first, rec.artifact_id]  # never the held models
    refined_1 = live.registry.jobs.get(f"{quick.build_key}~r1")
    assert refined_1 is not None and not live.registry.offers.was_offered("dev-a", refined_1.artifact_id)
    assert agent.status().failed_count == 0


def test_when_no_refinement_passes_the_keys_last_model_is_offered(live: LiveFleet) -> None:
    agent = live.agent("dev-b", ["depth"])
    first = live.wait_serving("dev-b", ["depth"])
    live.engine.faults.update(LOW)
    live.engine.refinement_count, live.engine.not_better = 1, {1}
    with live.engine.hold_refinements():
        agent.tasks.set(["seg"])
        wait_until(lambda: "below the -25 % floor" in agent.status().last_error)
        assert live.serving("dev-b") == first
    # refinement 1 is not better: nothing else comes, so the quick model is what the key has
    quick = live.wait_serving("dev-b", ["seg"])
    assert _refinement(live, "dev-b") == 0
    job = _seg_job(live)
    assert job is not None and quick == job.artifact_id


def test_a_device_asking_again_while_held_is_not_offered_it(live: LiveFleet) -> None:
    """The cache hit of a held key is held too (a restart, a second device with the same needs)."""
    live.engine.faults.update(LOW)
    live.engine.refinement_count = 1
    with live.engine.hold_refinements():
        a = live.agent("dev-c", ["seg"])
        wait_until(lambda: "below the -25 % floor" in a.status().last_error)
        b = live.agent("dev-d", ["seg"])  # same needs: a cache hit of the held quick model
        wait_until(lambda: "below the -25 % floor" in b.status().last_error)
        assert not a.status().artifact_id and not b.status().artifact_id  # nothing to serve yet
        job = _seg_job(live)
        assert job is not None and len(live.engine.builds) == 1
        assert not live.registry.offers.was_offered("dev-d", job.artifact_id)
    # refinement 1 (-35 %) is the key's last and best: both devices get it
    for d in ("dev-c", "dev-d"):
        wait_until(lambda d=d: _refinement(live, d) == 1)
