"""The MQTT link's own guards, without a broker: retained commands and oversized payloads are dropped."""

from __future__ import annotations

from unittest import mock

import paho.mqtt.client as mqtt

from edgecut import topics
from edgecut.agent.link_mqtt import LinkHandlers, MqttLink
from edgecut.v1 import fleet_pb2


def _link() -> tuple[MqttLink, LinkHandlers]:
    handlers = LinkHandlers(
        state=lambda online: fleet_pb2.DeviceState(device_id="d1"),
        needs=lambda: fleet_pb2.TaskNeeds(device_id="d1"),
        telemetry=lambda: fleet_pb2.Telemetry(device_id="d1"),
        on_model=mock.Mock(),
        on_command=mock.Mock(),
        on_error=mock.Mock(),
    )
    link = MqttLink("d1", "mqtt://127.0.0.1:1", handlers)
    link._client = mock.Mock()  # record publishes instead of sending them
    return link, handlers


def _message(leaf: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=topics.device_topic("d1", leaf).encode())
    msg.payload, msg.retain = payload, retain
    return msg


def test_a_retained_command_is_refused_unread_and_acknowledged() -> None:
    link, handlers = _link()
    cmd = fleet_pb2.Command(device_id="d1", command_id="c1", rollback=fleet_pb2.Rollback())
    link._on_message(link._client, None, _message(topics.COMMAND, cmd.SerializeToString(), retain=True))
    handlers.on_command.assert_not_called()  # type: ignore[attr-defined]
    topic, payload = link._client.publish.call_args.args[:2]  # type: ignore[attr-defined]
    assert (
        topic.endswith("/ack")
        and fleet_pb2.CommandAck.FromString(payload).reason == "retained command ignored"
    )
    link._on_message(link._client, None, _message(topics.COMMAND, cmd.SerializeToString()))
    handlers.on_command.assert_called_once()  # type: ignore[attr-defined]


def test_payloads_above_the_broker_limit_are_neither_read_nor_sent() -> None:
    link, handlers = _link()
    big = fleet_pb2.ModelReady(device_id="d1", build_key="x" * (topics.MAX_PAYLOAD + 1))
    link._on_message(link._client, None, _message(topics.MODEL, big.SerializeToString()))
    handlers.on_model.assert_not_called()  # type: ignore[attr-defined]
    link.publish_swap(fleet_pb2.SwapReport(device_id="d1", reason="y" * (topics.MAX_PAYLOAD + 1)))
    link._client.publish.assert_not_called()  # type: ignore[attr-defined]
    link.publish_swap(fleet_pb2.SwapReport(device_id="d1", reason="fits"))
    link._client.publish.assert_called_once()  # type: ignore[attr-defined]
