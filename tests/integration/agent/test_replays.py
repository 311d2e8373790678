"""Genuine messages replayed or queued for later must not steer a device (issue 26, items 1-3).

The attacker holds no key: it only re-publishes what the fleet or an operator once signed, or relies on
the broker to deliver a genuine message later than it was meant (retained, persistent session).
"""

from __future__ import annotations

from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from edgecut import topics
from edgecut.envelopes import sign_command
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import wait_until
from tests.support.keys import operator_key

pytestmark = pytest.mark.integration


@pytest.fixture
def attacker(broker) -> Iterator[mqtt.Client]:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mallory")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    yield c
    c.disconnect()
    c.loop_stop()


def _publish(client: mqtt.Client, device_id: str, leaf: str, payload: bytes, retain: bool = False) -> None:
    client.publish(topics.device_topic(device_id, leaf), payload, qos=1, retain=retain).wait_for_publish(5)


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
    _publish(
        attacker, device, topics.COMMAND, _command(device, "while-away-retained", ["count"]), retain=True
    )
    _publish(attacker, device, topics.COMMAND, _command(device, "while-away-queued", ["depth"]))
    try:
        again = make_agent(device_id=device, state_dir=state_dir, tasks=["seg"])
        assert again.link.wait_connected(30)
        # a probe sent after the reconnect: its answer comes after anything the broker had kept
        _publish(attacker, device, topics.COMMAND, _command("someone-else", "probe", ["seg"]))
        wait_until(lambda: any(a.command_id == "probe" for a in acks))
        assert again.tasks.tasks == ["seg"]
        assert not any(a.ok for a in acks), [(a.command_id, a.reason) for a in acks]
    finally:
        _publish(attacker, device, topics.COMMAND, b"", retain=True)  # clear it
