"""MQTT topic names of the wire contract (edgecut/v1); shared by the agent and the server.

Every payload is a protobuf message of edgecut.v1 (see docs/protocol.md).
"""

from __future__ import annotations

import re

PREFIX = "edgecut/v1/devices"
# The largest payload either side publishes or accepts. The iotcore fallback broker (rumqttd) silently
# drops a client that publishes more than ~20 KB; 16 KiB leaves room for the MQTT framing.
MAX_PAYLOAD = 16 * 1024
SHARE_GROUP = "edgecut"  # the prefix of the shared-subscription groups: one group per topic, see shared()


def device_topic(device_id: str, leaf: str) -> str:
    """`edgecut/v1/devices/{id}/{leaf}`; leaf is one of the names below."""
    return f"{PREFIX}/{device_id}/{leaf}"


def shared(leaf: str, group: str = SHARE_GROUP) -> str:
    """Shared subscription over all devices' `leaf`, so server replicas split the messages.

    The group is `{group}-{leaf}`, one per topic: the iotcore broker (rumqttd) keeps a single filter per
    shared group and client, so needs, telemetry and swaps under one group would lose all but one of them.
    mosquitto splits either way.
    """
    return f"$share/{group}-{leaf}/{PREFIX}/+/{leaf}"


# What a device id may be (the agent's settings enforce it): one topic level, no MQTT wildcards, no
# escapes or control characters that would reach logs and the dashboard.
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def device_of(topic: str) -> str | None:
    """The device id in a device topic, or None when the topic is not one or its id is not valid."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX or not DEVICE_ID.fullmatch(parts[3]):
        return None
    return parts[3]


STATE = "state"  # DeviceState, retained; the agent's last will sets OFFLINE
NEEDS = "needs"  # TaskNeeds, QoS 1, not retained (shared subscriptions never get retained messages)
TELEMETRY = "telemetry"  # Telemetry, QoS 0
MODEL = "model"  # ModelReady, retained, server -> device
ERROR = "error"  # Error, server -> device
SWAP = "swap"  # SwapReport, device -> server
COMMAND = "command"  # Command, operator -> device, NEVER retained
ACK = "ack"  # CommandAck, device -> operator/server, the outcome of each command
STATS = "stats"  # StatsSummary, device -> server, QoS 1, never retained; only with adaptation on (issue 31)
