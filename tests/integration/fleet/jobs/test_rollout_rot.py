"""A rejected variant never moves a device, even when the model it serves rotted out of the store.

Issue 26, item 5 (seen with real processes): the store quarantined the artifact a device served, a
worse variant came, the rollout was logged rejected, and the device was moved to the variant anyway
because the rejected rollout's baseline could not be offered in its place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.broker import EmbeddedBroker
from edgecut.server.fleet.jobs.rollout_policy import REJECTED, RolloutSettings
from edgecut.server.fleet.state.store import LocalStore
from tests.support.live_fleet import LiveFleet, running_fleet
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def live(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[LiveFleet]:
    with running_fleet(tmp_path, broker.url, rollout=RolloutSettings(timeout_s=4 * WAIT_S)) as fleet:
        yield fleet


def test_a_rejected_variant_does_not_replace_a_model_that_rotted_in_the_store(
    live: LiveFleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgecut.server.fleet")
    live.agent("dev-a", ["seg"])
    good = live.wait_serving("dev-a", ["seg"])
    # the bytes of the served model rot on the server's disk; its hash check quarantines them
    store = live.server.store
    assert isinstance(store, LocalStore)
    (store.root / good[:2] / f"{good}.onnx").write_bytes(b"rotted")
    assert not store.verify(good, force=True)
    # an upgrade whose seg model is far worse: the rollout gate rejects it
    worse_engine = OnnxTestEngine(
        live.root / "engine-v2", base_model_id="test-mtl-v2", faults={("seg",): "low_quality"}
    )
    live.restart_server(worse_engine)
    rollout = wait_until(
        lambda: (live.server.rollouts.rollouts() or [None])[0] if live.server.rollouts else None
    )
    assert rollout["state"] == REJECTED, rollout
    worse = str(rollout["candidate_artifact"])

    def held() -> bool:
        return any("holding" in m and worse[:12] in m and "dev-a" in m for m in caplog.messages)

    wait_until(lambda: held() or live.serving("dev-a") == worse)  # held back, or (the bug) moved
    assert live.serving("dev-a") == good and worse not in live.swapped_to("dev-a")
    assert sum("is gone from the store" in m for m in caplog.messages) <= 1
