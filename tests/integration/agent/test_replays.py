"""Genuine messages replayed or queued for later must not steer a device (issue 26, items 1-3).

The attacker holds no key: it only re-publishes what the fleet or an operator once signed, or relies on
the broker to deliver a genuine message later than it was meant (retained, persistent session).
"""

from __future__ import annotations

import json
import logging

import pytest

from edgecut import topics
from edgecut.envelopes import now_ms, sign_command, sign_manifest
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import publish_as, serving, wait_serving, wait_until
from tests.support.fleet_server import stub
from tests.support.keys import fleet_key, operator_key
from tests.support.waiting import WAIT_S

pytestmark = pytest.mark.integration


def _command(device_id: str, command_id: str, tasks: list[str]) -> bytes:
    cmd = fleet_pb2.Command(
        device_id=device_id, command_id=command_id, set_tasks=fleet_pb2.SetTasks(tasks=tasks)
    )
    return sign_command(operator_key(), cmd).SerializeToString()


def test_commands_sent_while_the_device_was_offline_are_not_obeyed_on_reconnect(
    make_agent, broker, attacker
) -> None:
    """A genuine command retained, and one merely queued, while the agent was away: neither is obeyed.

    With a persistent session the broker queued both and delivered them with retain=0 on reconnect,
    so the agent could not tell the retained one apart and obeyed it (issue 26, item 3).
    """
    agent = make_agent(tasks=["seg"])
    assert agent.link.wait_connected(30)
    device, state_dir = agent.device_id, agent.settings.state_dir
    acks: list[fleet_pb2.CommandAck] = []
    attacker.on_message = lambda c, u, m: acks.append(fleet_pb2.CommandAck.FromString(m.payload))
    attacker.subscribe(topics.device_topic(device, topics.ACK), 1)
    agent.stop()
    publish_as(
        attacker, device, topics.COMMAND, _command(device, "while-away-retained", ["count"]), retain=True
    )
    publish_as(attacker, device, topics.COMMAND, _command(device, "while-away-queued", ["depth"]))
    try:
        again = make_agent(device_id=device, state_dir=state_dir, tasks=["seg"])
        assert again.link.wait_connected(30)
        # subscribed (a clean session gets the retained command with its subscription, flagged), or
        # obeyed what the broker had queued for the old session
        wait_until(lambda: any(a.reason == "retained command ignored" or a.ok for a in acks))
        # a probe sent after the reconnect: its answer comes after anything the broker had kept
        publish_as(attacker, device, topics.COMMAND, _command("someone-else", "probe", ["seg"]))
        wait_until(lambda: any(a.command_id == "probe" for a in acks))
        assert again.tasks.tasks == ["seg"]
        assert not any(a.ok for a in acks), [(a.command_id, a.reason) for a in acks]
    finally:
        publish_as(attacker, device, topics.COMMAND, b"", retain=True)  # clear it


def _refinement(agent) -> int:
    prov = agent.status().provenance_json
    return int(json.loads(prov).get("refinement", 0)) if prov else -1


def test_a_replayed_genuine_quick_model_offer_does_not_move_a_refined_device_back(
    make_agent, fleet, broker, attacker, caplog: pytest.LogCaptureFixture
) -> None:
    """The fleet's own signed offer of the quick model (same device, same needs seq), replayed after
    the device took refinement 1, is stale: refused live and again after the agent restarts (issue 26,
    item 1: `check_refinement` let refinement 0 through)."""
    caplog.set_level(logging.INFO, logger="edgecut.agent")
    fleet.engine.refinement_count = 1
    offers: list[fleet_pb2.ModelReady] = []
    attacker.on_message = lambda c, u, m: offers.append(fleet_pb2.ModelReady.FromString(m.payload))
    attacker.subscribe(topics.device_topic("dev0", topics.MODEL), 1)  # the genuine offers, recorded
    agent = make_agent(tasks=["seg"])
    assert agent.device_id == "dev0"
    wait_until(lambda: _refinement(agent) == 1)
    refined = serving(agent)
    quick = next(o for o in offers if o.refinement == 0 and o.manifest)
    assert (
        fleet_pb2.Manifest.FromString(quick.manifest).needs_seq == agent.tasks.seq
    )  # it answers these needs

    def refusals() -> int:
        return sum(
            "stale or replayed" in r.getMessage() and quick.artifact_id[:12] in r.getMessage()
            for r in caplog.records
        )

    publish_as(attacker, agent.device_id, topics.MODEL, quick.SerializeToString(), retain=True)
    wait_until(lambda: refusals() >= 1 or serving(agent) == quick.artifact_id)  # refused, or downgraded
    assert serving(agent) == refined and _refinement(agent) == 1
    # the counter it took is kept on disk: the retained replay is refused after a restart too
    agent.stop()
    again = make_agent(device_id=agent.device_id, state_dir=agent.settings.state_dir, tasks=["seg"])
    wait_until(lambda: refusals() >= 2)
    assert serving(again) == refined
    # a server that rolls the device back signs a new offer of the same model: that one is taken
    rollback = fleet_pb2.Manifest.FromString(quick.manifest)
    rollback.offer_seq = now_ms() + 1
    blob, sig = sign_manifest(fleet_key(), rollback)
    offer = fleet_pb2.ModelReady(
        device_id=agent.device_id, artifact_id=quick.artifact_id, manifest=blob, signature=sig
    )
    again._check_lineage(again.trust.check_offer(offer, again.tasks.seq))


def test_a_plaintext_grpc_caller_never_obtains_an_offer_another_device_would_take(
    make_agent, fleet, attacker
) -> None:
    """RequestModel without mutual TLS proves no device id: its READY is unsigned, and the device it
    names refuses it (issue 26, item 2: it used to carry an offer signed for that device)."""
    agent = make_agent(tasks=["seg"])
    serving_before = wait_serving(agent, ["seg"])
    channel, stub_ = stub(fleet.address)
    with channel:
        request = fleet_pb2.ModelRequest(
            device_id=agent.device_id, tasks=["seg"], budget=fleet_pb2.Budget(macs_fraction=0.1)
        )
        ready = list(stub_.RequestModel(request, timeout=WAIT_S))[-1].ready
    assert ready.artifact_id and ready.artifact_id != serving_before  # the caller gets its answer ...
    assert not ready.manifest and not ready.signature.signature  # ... but no fleet signature
    assert not fleet.registry.offers.was_offered(agent.device_id, ready.artifact_id)
    # published as the device's offer (current needs seq in its plain fields): refused and reported
    ready.device_id, ready.needs_seq = agent.device_id, agent.tasks.seq
    publish_as(attacker, agent.device_id, topics.MODEL, ready.SerializeToString(), retain=True)
    wait_until(
        lambda: any(
            r["artifact_id"] == ready.artifact_id and not r["ok"] for r in fleet.swaps(agent.device_id)
        )
    )
    assert serving(agent) == serving_before and not agent.store.has(ready.artifact_id)
