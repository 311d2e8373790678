"""Operator side of the command path: make a key, sign a Command, publish it, wait for the device's ack.

Reusable by a dashboard (docs/security.md): `send(...)` returns the CommandAck or raises. Commands are
published QoS 1 and never retained; the agent refuses retained, unsigned, stale and replayed ones.
"""

from __future__ import annotations

import queue
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgecut import signing, tls, topics
from edgecut.envelopes import sign_command
from edgecut.errors import EdgecutError
from edgecut.server.fleet.link.broker import BrokerAuth, parse_broker_url
from edgecut.v1 import fleet_pb2 as pb

ACTIONS = ("set-tasks", "rollback", "pin", "unpin")


class CommandFailed(EdgecutError):
    exit_code = 1


def build(device_id: str, action: str, tasks: list[str] | None = None) -> pb.Command:
    cmd = pb.Command(device_id=device_id, command_id=uuid.uuid4().hex)
    if action == "set-tasks":
        if not tasks:
            raise EdgecutError("set-tasks needs the tasks, e.g. seg,depth")
        cmd.set_tasks.tasks.extend(tasks)
    elif action == "rollback":
        cmd.rollback.SetInParent()
    elif action == "pin":
        cmd.pin.SetInParent()
    elif action == "unpin":
        cmd.unpin.SetInParent()
    else:
        raise EdgecutError(f"unknown action {action!r}: choose one of {', '.join(ACTIONS)}")
    return cmd


def send(
    broker_url: str,
    key: signing.SigningKey,
    command: pb.Command,
    auth: BrokerAuth | None = None,
    timeout_s: float = 30.0,
) -> pb.CommandAck:
    """Sign and publish `command`; the device's CommandAck for it (CommandFailed when none comes)."""
    host, port, use_tls, user, password = parse_broker_url(broker_url)
    auth = auth or BrokerAuth()
    signed = sign_command(key, command)
    acks: queue.Queue[pb.CommandAck] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgecut-op-{uuid.uuid4().hex[:8]}")
    if use_tls:
        tls.mqtt_tls(c, auth.ca_file, auth.cert_file, auth.key_file)
    if user or auth.username:
        c.username_pw_set(user or auth.username, password if user else (auth.password or None))
    c.on_subscribe = lambda *_a: subscribed.put(True)
    c.on_message = lambda _c, _u, m: acks.put(pb.CommandAck.FromString(bytes(m.payload)))
    try:
        c.connect(host, port)
    except OSError as exc:
        raise CommandFailed(f"cannot reach the broker {host}:{port}: {exc}") from exc
    c.loop_start()
    try:
        c.subscribe(topics.device_topic(command.device_id, topics.ACK), 1)
        subscribed.get(timeout=timeout_s)
        c.publish(topics.device_topic(command.device_id, topics.COMMAND), signed.SerializeToString(), qos=1)
        while True:
            try:
                ack = acks.get(timeout=timeout_s)
            except queue.Empty as exc:
                raise CommandFailed(
                    f"no acknowledgement from {command.device_id} within {timeout_s:g} s "
                    "(offline? commands are never queued for later: send it again once the device is online)"
                ) from exc
            if ack.command_id == command.command_id:
                return ack
    finally:
        c.disconnect()
        c.loop_stop()


def keygen(path: Path) -> signing.SigningKey:
    return signing.generate(path)
