"""Two server replicas on each broker: every needs, telemetry and swap message reaches exactly one.

The replicas here are MQTT clients subscribing the server's own filters (`server_subscriptions`), so
the test measures the broker's sharing, which the fleet server relies on. iotcore (rumqttd) keeps one
filter per shared group and client: with one group for all three topics, two of them were lost.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgecut import topics
from edgecut.broker import EmbeddedBroker, mosquitto_path
from edgecut.server.fleet.link.broker import server_subscriptions
from edgecut.v1 import fleet_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.broker]

PER_TOPIC = 60
DEVICES = 6
BARRIER = "edgecut-test/barrier"
WORK = (topics.NEEDS, topics.TELEMETRY, topics.SWAP)


class Replica:
    """Subscribes what a server replica subscribes; records (leaf, message id) of every delivery."""

    def __init__(self, broker: EmbeddedBroker, name: str) -> None:
        self.got: list[tuple[str, int]] = []
        self.barrier = threading.Event()
        self.changed = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"replica-{name}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([*server_subscriptions(), (BARRIER, 1)])
        self.client.loop_start()
        assert subscribed.wait(10), f"replica {name} did not subscribe"

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == BARRIER:
            self.barrier.set()
            return
        leaf = msg.topic.rsplit("/", 1)[-1]
        parse = {topics.NEEDS: pb.TaskNeeds, topics.TELEMETRY: pb.Telemetry, topics.SWAP: pb.SwapReport}
        if leaf in parse:
            with self.changed:
                self.got.append((leaf, int(parse[leaf].FromString(msg.payload).sent_unix_ms)))
                self.changed.notify_all()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _message(leaf: str, device: str, i: int) -> bytes:
    if leaf == topics.NEEDS:
        return pb.TaskNeeds(device_id=device, tasks=["seg"], seq=i, sent_unix_ms=i).SerializeToString()
    if leaf == topics.TELEMETRY:
        return pb.Telemetry(device_id=device, inference_count=i, sent_unix_ms=i).SerializeToString()
    return pb.SwapReport(device_id=device, artifact_id="a" * 64, ok=True, sent_unix_ms=i).SerializeToString()


@pytest.fixture(params=["iotcore", "mosquitto"])
def any_broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    if request.param == "mosquitto" and mosquitto_path() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); .ci/run installs it")
    with EmbeddedBroker(prefer=request.param) as b:
        yield b


def test_each_work_message_reaches_exactly_one_of_two_replicas(any_broker: EmbeddedBroker) -> None:
    replicas = [Replica(any_broker, "a"), Replica(any_broker, "b")]
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="devices")
    device.connect(any_broker.host, any_broker.port)
    device.loop_start()
    try:
        for i in range(1, PER_TOPIC + 1):
            dev = f"dev-{i % DEVICES}"
            for leaf in WORK:
                qos = 0 if leaf == topics.TELEMETRY else 1  # as the agent publishes them
                device.publish(
                    topics.device_topic(dev, leaf), _message(leaf, dev, i), qos=qos
                ).wait_for_publish(5)
        # A plain subscription after the work: once both replicas hold it, the broker has routed every
        # earlier message and each replica's connection has delivered what was routed to it.
        device.publish(BARRIER, b"done", qos=1).wait_for_publish(5)
        for r in replicas:
            assert r.barrier.wait(15), "the barrier message never arrived"

        per_replica = [Counter(leaf for leaf, _ in r.got) for r in replicas]
        together = Counter(m for r in replicas for m in r.got)
        for leaf in WORK:
            ids = sorted(i for (lf, i) in together if lf == leaf)
            assert ids == list(range(1, PER_TOPIC + 1)), f"{any_broker.kind}: {leaf} lost or added messages"
            assert all(together[(leaf, i)] == 1 for i in ids), f"{any_broker.kind}: {leaf} delivered twice"
            # the work is split: each replica takes a share of every topic
            assert all(c[leaf] > 0 for c in per_replica), f"{any_broker.kind}: {leaf} went to one replica"
    finally:
        device.disconnect()
        device.loop_stop()
        for r in replicas:
            r.close()
