"""Progressive delivery end to end: the quick model, then its refinements, hot-swapped with no failed
request; a stale or forged refinement offer is not applied (real broker, real fleet server)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from edgecut import topics
from edgecut.agent.cli import _print_status
from edgecut.agent.serve import AgentClient
from edgecut.agent.trust import Stale
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import serving, signed_offer, wait_serving, wait_until

pytestmark = pytest.mark.integration
IMG = np.random.default_rng(5).random((1, 3, 64, 64), dtype=np.float32)


def _refinement(agent) -> int:
    prov = agent.status().provenance_json
    return int(json.loads(prov).get("refinement", 0)) if prov else -1


class Load:
    """Inference requests in a loop against the agent's local API until stopped; counts failures."""

    def __init__(self, address: str) -> None:
        self.address, self.ok, self.failed, self.served = address, 0, 0, set[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with AgentClient(self.address) as client:
            while not self._stop.is_set():
                try:
                    self.served.add(client.infer(IMG).artifact_id)
                    self.ok += 1
                except Exception:
                    self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_quick_model_then_refinements_hot_swap_with_no_failed_request(make_agent, fleet, capsys) -> None:
    fleet.engine.refinement_count = 2
    with fleet.engine.hold_refinements():
        agent = make_agent(tasks=["seg"])
        quick = wait_serving(agent, ["seg"])
        assert _refinement(agent) == 0
        load = Load(agent.api_address)
        wait_until(lambda: load.ok > 0)
    try:
        wait_until(lambda: _refinement(agent) == 2)
        # requests answered by the final model (refinement 1 may have been skipped on the way)
        wait_until(lambda: serving(agent) in load.served and load.ok > 10)
    finally:
        load.stop()
    assert load.failed == 0 and agent.status().failed_count == 0
    final = serving(agent)
    assert final != quick and final in load.served and quick in load.served
    prov = json.loads(agent.status().provenance_json)
    assert prov["build_key"] and prov["refinement"] == 2
    # the server's records: the key serves refinement 2; each refinement was a signed offer to the device
    key = prov["build_key"]
    rec = fleet.registry.jobs.get(key)
    assert rec is not None and (rec.artifact_id, rec.refinement) == (final, 2)
    assert wait_until(lambda: fleet.device(agent.device_id)["artifact_id"] == final)
    assert all(r["ok"] for r in fleet.swaps(agent.device_id))
    _print_status(agent.status())
    assert f"refinement 2 (refines {prov['parent_artifact_id'][:16]})" in capsys.readouterr().out


def test_stale_or_forged_refinement_offers_are_not_applied(make_agent, fleet, broker) -> None:
    fleet.engine.refinement_count = 1
    agent = make_agent(tasks=["seg"])
    wait_until(lambda: _refinement(agent) == 1)
    refined = serving(agent)
    prov = json.loads(agent.status().provenance_json)
    seq, key, quick = agent.tasks.seq, prov["build_key"], prov["parent_artifact_id"]
    common = dict(tasks=["seg"], build_key=key)
    stale = {
        # genuine fleet signatures, current needs seq, but behind what the device serves
        "older than served": signed_offer(
            b"r0", agent.device_id, seq, refinement=1, parent_artifact_id=quick, **common
        ),
        "a lineage left": signed_offer(
            b"r2", agent.device_id, seq, refinement=2, parent_artifact_id="e" * 64, **common
        ),
    }
    latest = agent._latest_ready
    for name, msg in stale.items():
        manifest = agent.trust.check_offer(msg, seq)
        with pytest.raises(Stale, match="stale, not applied"):
            agent._check_lineage(manifest)
        agent._on_model_ready(msg)  # as if the broker delivered it now: not even queued
        assert agent._latest_ready is latest and serving(agent) == refined, name
    # a further refinement of the served one is taken (the device may have missed one while offline)
    further = signed_offer(b"r3", agent.device_id, seq, refinement=3, parent_artifact_id="d" * 64, **common)
    agent._check_lineage(agent.trust.check_offer(further, seq))
    # a forged refinement (unsigned; plain fields claim refinement 5) is refused and reported
    evil = fleet_pb2.ModelReady(
        device_id=agent.device_id,
        artifact_id="c" * 64,
        sha256="c" * 64,
        size_bytes=10,
        build_key=key,
        tasks=["seg"],
        needs_seq=seq,
        refinement=5,
        parent_artifact_id=refined,
    )
    import paho.mqtt.client as mqtt

    mallory = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mallory-refine")
    mallory.connect("127.0.0.1", broker.port)
    mallory.loop_start()
    try:
        mallory.publish(
            topics.device_topic(agent.device_id, topics.MODEL), evil.SerializeToString(), qos=1
        ).wait_for_publish(5)
        report = wait_until(
            lambda: next((r for r in fleet.swaps(agent.device_id) if r["artifact_id"] == "c" * 64), None)
        )
    finally:
        mallory.disconnect()
        mallory.loop_stop()
    assert not report["ok"] and "refused" in report["reason"]
    assert serving(agent) == refined
