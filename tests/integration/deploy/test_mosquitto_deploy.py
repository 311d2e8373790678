"""deploy/mosquitto on a real mosquitto: TLS only, a valid client certificate for everyone, and an ACL
that keeps a device under its own edgecut/v1/devices/{id}/ topics (certificates from issue-cert.sh).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgecut import topics
from edgecut.broker import mosquitto_path
from edgecut.server.fleet.link.broker import server_subscriptions
from tests.support.secure_broker import Client, Pki, SecureBroker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed; .ci/run installs it"),
]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def secure_broker(pki: Pki, tmp_path: Path) -> Iterator[SecureBroker]:
    b = SecureBroker(pki, tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def _client(
    made: list[Client], broker: SecureBroker, name: str, ident: dict[str, Path] | None, ca: Path
) -> Client:
    c = Client(broker, name, ident, ca)
    made.append(c)
    return c


def _server(made: list[Client], broker: SecureBroker, pki: Pki, ca: Path) -> Client:
    """A server replica's client, connected and subscribed to the shared groups and retained state."""
    server = _client(made, broker, "srv-1", pki.server(), ca)
    assert server.connect() == "connected"
    granted = server.subscribe(server_subscriptions())
    assert not any(r.is_failure for r in granted), granted
    return server


def test_a_device_publishes_and_reads_only_under_its_own_id(
    pki: Pki, secure_broker: SecureBroker, clients: list[Client]
) -> None:
    ca = pki.root / "ca" / "ca.crt"
    server = _server(clients, secure_broker, pki, ca)
    cam1 = _client(clients, secure_broker, "edgecut-agent-cam-1", pki.device("cam-1"), ca)
    assert cam1.connect() == "connected"
    cam1.subscribe([("edgecut/v1/devices/+/model", 1), ("edgecut/v1/devices/+/command", 1)])

    # publishing as another device, or writing what only a server writes: refused by the broker
    for leaf in (topics.NEEDS, topics.STATE, topics.SWAP, topics.TELEMETRY):
        assert cam1.publish(topics.device_topic("cam-2", leaf), b"forged").is_failure
    forged_model = cam1.publish(topics.device_topic("cam-1", topics.MODEL), b"forged model")
    assert str(forged_model) == "Not authorized"
    assert cam1.publish(topics.device_topic("cam-1", topics.COMMAND), b"forged command").is_failure
    # its own topics are fine
    assert not cam1.publish(topics.device_topic("cam-1", topics.NEEDS), b"mine").is_failure

    with server.changed:
        assert server.changed.wait_for(lambda: server.messages, 10)
    time.sleep(0.3)  # anything forged would have come before "mine" (one client's QoS 1 stays in order)
    assert server.messages == [(topics.device_topic("cam-1", topics.NEEDS), b"mine")]

    # the server answers both devices; cam-1 subscribed with a wildcard, yet gets only its own
    for dev in ("cam-2", "cam-1"):
        assert not server.publish(
            topics.device_topic(dev, topics.MODEL), f"model for {dev}".encode()
        ).is_failure
        assert not server.publish(
            topics.device_topic(dev, topics.COMMAND), f"cmd for {dev}".encode()
        ).is_failure
    with cam1.changed:
        assert cam1.changed.wait_for(lambda: len(cam1.messages) >= 2, 10)
    time.sleep(0.3)
    assert sorted(cam1.messages) == [
        (topics.device_topic("cam-1", topics.COMMAND), b"cmd for cam-1"),
        (topics.device_topic("cam-1", topics.MODEL), b"model for cam-1"),
    ]


def test_a_device_sends_statistics_only_under_its_own_id_and_only_servers_read_them(
    pki: Pki, secure_broker: SecureBroker, clients: list[Client]
) -> None:
    """Issue 31: a summary's topic names its sender, so the server's device-id check means something."""
    ca = pki.root / "ca" / "ca.crt"
    server = _server(clients, secure_broker, pki, ca)
    cam1 = _client(clients, secure_broker, "edgecut-agent-cam-1", pki.device("cam-1"), ca)
    cam2 = _client(clients, secure_broker, "edgecut-agent-cam-2", pki.device("cam-2"), ca)
    assert cam1.connect() == "connected" and cam2.connect() == "connected"
    cam2.subscribe([("edgecut/v1/devices/+/stats", 1), ("edgecut/v1/devices/cam-1/stats", 1)])

    assert cam1.publish(topics.device_topic("cam-2", topics.STATS), b"forged").is_failure
    assert not cam1.publish(topics.device_topic("cam-1", topics.STATS), b"cam-1 stats").is_failure
    assert not cam2.publish(topics.device_topic("cam-2", topics.STATS), b"cam-2 stats").is_failure
    with server.changed:
        assert server.changed.wait_for(lambda: len(server.messages) >= 2, 10)
    time.sleep(0.3)  # a forged one would have come before the devices' own (QoS 1 stays in order)
    assert sorted(server.messages) == [
        (topics.device_topic("cam-1", topics.STATS), b"cam-1 stats"),
        (topics.device_topic("cam-2", topics.STATS), b"cam-2 stats"),
    ]
    assert cam2.messages == []  # not even its own comes back: devices never read statistics


def test_clients_without_a_valid_certificate_are_refused(
    pki: Pki, secure_broker: SecureBroker, clients: list[Client], tmp_path: Path
) -> None:
    ca = pki.root / "ca" / "ca.crt"
    no_cert = _client(clients, secure_broker, "anon", None, ca)
    assert no_cert.connect().startswith("refused")
    other_ca = Pki(tmp_path / "other-pki")  # a certificate for the right name from the wrong CA
    stranger = _client(clients, secure_broker, "stranger", other_ca.device("cam-1"), ca)
    assert stranger.connect().startswith("refused")
    # and nobody speaks plain MQTT on this port
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5)
    connacks: list[object] = []
    closed = threading.Event()
    plain.on_connect = lambda *a: connacks.append(a[3])
    plain.on_disconnect = lambda *_a: closed.set()
    plain.connect("127.0.0.1", secure_broker.port)
    plain.loop_start()
    try:
        assert closed.wait(10) and not any(not r.is_failure for r in connacks)  # type: ignore[attr-defined]
    finally:
        plain.disconnect()
        plain.loop_stop()


def test_a_rotated_certificate_replaces_the_old_one(
    pki: Pki, secure_broker: SecureBroker, clients: list[Client], tmp_path: Path
) -> None:
    ca = pki.root / "ca" / "ca.crt"
    first = pki.device("cam-7")
    kept = {k: tmp_path / f"old-{p.name}" for k, p in first.items()}
    for k, p in first.items():
        kept[k].write_bytes(p.read_bytes())
    assert "revoked 1 earlier" in pki.run("device", "cam-7")  # issuing again is the rotation
    secure_broker.restart()  # the broker reads the new CRL
    assert _client(clients, secure_broker, "cam-7-new", pki.device("cam-7"), ca).connect() == "connected"
    assert _client(clients, secure_broker, "cam-7-old", kept, ca).connect().startswith("refused")
    pki.run("revoke", "cam-7")  # a lost device
    secure_broker.restart()
    assert (
        _client(clients, secure_broker, "cam-7-lost", pki.device("cam-7"), ca).connect().startswith("refused")
    )


def test_the_issuing_script_refuses_ids_that_are_not_one_topic_level(pki: Pki) -> None:
    for bad in ("cam/1", "cam+", "#", "server@edgecut", "", "x" * 65):
        with pytest.raises(RuntimeError, match="device id"):
            pki.run("device", bad)
