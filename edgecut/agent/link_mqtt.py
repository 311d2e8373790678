"""The agent's MQTT session (paho-mqtt 2.x, MQTT 3.1.1).

- Last will: retained DeviceState OFFLINE on `.../state`, so a dead device shows offline.
- On every (re)connect: subscriptions to model/error/command, then (once acknowledged) retained ONLINE
  state and the current needs.
- paho reconnects by itself with exponential backoff (reconnect_delay_set) while loop_start runs.
- QoS 1 publishes made while disconnected stay in paho's outgoing queue (bounded by
  max_queued_messages) and are sent after the reconnect; QoS 0 telemetry made offline is dropped.
- A clean session on every connect: the broker keeps nothing for the device while it is away. With a
  persistent session it queued commands published meanwhile and delivered them with retain=0, so a
  command *retained* while the device was offline looked live and was obeyed (issue 26). Now a
  command reaches the agent only live, or (retained) on subscribe with the retain flag set, which
  is refused here; the agent checks the rest (signature, age, replay: trust.py) and answers each on
  `.../ack`. Nothing else needs the session: offers are retained, errors answer needs re-sent on connect.
- Payloads above `topics.MAX_PAYLOAD` are neither accepted nor published (the iotcore broker drops
  a client that publishes more than ~20 KB).
Network errors are logged, never raised to the agent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from google.protobuf.message import DecodeError, Message

from edgecut import tls, topics
from edgecut.v1 import fleet_pb2

logger = logging.getLogger(__name__)

MAX_QUEUED = 1000


@dataclass
class LinkHandlers:
    """Callbacks from the agent; all run on paho's network thread, so they must return quickly."""

    state: Callable[[bool], fleet_pb2.DeviceState]  # online flag -> the state to publish
    needs: Callable[[], fleet_pb2.TaskNeeds]
    telemetry: Callable[[], fleet_pb2.Telemetry]
    on_model: Callable[[fleet_pb2.ModelReady], None]
    on_command: Callable[[fleet_pb2.Command], None]
    on_error: Callable[[fleet_pb2.Error], None]
    on_connected: Callable[[], None] = lambda: None  # after each (re)connect, once subscribed
    on_disconnected: Callable[[], None] = lambda: None  # after the broker is lost (not on stop)


class MqttLink:
    def __init__(
        self,
        device_id: str,
        broker_url: str,
        handlers: LinkHandlers,
        *,
        username: str = "",
        password: str = "",
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        keepalive_s: int = 30,
        reconnect_max_s: float = 30.0,
        telemetry_interval_s: float = 30.0,
    ) -> None:
        self.device_id = device_id
        self.handlers = handlers
        self.telemetry_interval_s = telemetry_interval_s
        self.keepalive_s = keepalive_s
        url = urlparse(broker_url)
        self.host, self.port = (
            url.hostname or "127.0.0.1",
            url.port or (8883 if url.scheme == "mqtts" else 1883),
        )
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._telemetry_thread: threading.Thread | None = None
        self.connects = 0  # successful (re)connections, for status and tests
        self._subscribe_mid: int | None = None

        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"edgecut-agent-{device_id}",
            clean_session=True,  # never a queue of commands for later: see the module docstring
            protocol=mqtt.MQTTv311,
        )
        if username:
            c.username_pw_set(username, password or None)
        if url.scheme == "mqtts":
            tls.mqtt_tls(c, ca_file, cert_file, key_file)
        c.will_set(self._topic(topics.STATE), handlers.state(False).SerializeToString(), qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=max(1, int(reconnect_max_s)))
        c.max_queued_messages_set(MAX_QUEUED)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c

    def _topic(self, leaf: str) -> str:
        return topics.device_topic(self.device_id, leaf)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Connect in the background; an unreachable broker is retried, never fatal."""
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self._client.loop_start()
        self._telemetry_thread = threading.Thread(target=self._telemetry_loop, name="telemetry", daemon=True)
        self._telemetry_thread.start()

    def stop(self) -> None:
        """Say OFFLINE ourselves (a clean disconnect does not fire the last will), then disconnect."""
        self._stop.set()
        if self._client.is_connected():  # also between CONNACK and SUBACK (not yet `connected`)
            info = self._client.publish(
                self._topic(topics.STATE), self.handlers.state(False).SerializeToString(), qos=1, retain=True
            )
            # disconnected meanwhile: the last will says the same
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()
        if self._telemetry_thread:
            self._telemetry_thread.join(timeout=2.0)

    # --- publishing -------------------------------------------------------------------------
    def _publish(self, leaf: str, msg: Message, qos: int = 1, retain: bool = False) -> bool:
        """Hand `msg` to paho; False when it was dropped (too big, or the outgoing queue is full)."""
        payload = msg.SerializeToString()
        if len(payload) > topics.MAX_PAYLOAD:  # callers bound their strings; this is the last guard
            logger.error(
                "%s message of %d bytes is above the broker limit %d: not sent",
                leaf,
                len(payload),
                topics.MAX_PAYLOAD,
            )
            return False
        info = self._client.publish(self._topic(leaf), payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            logger.warning("outgoing MQTT queue full (%d): %s message dropped", MAX_QUEUED, leaf)
            return False
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos:
            logger.debug("broker offline: %s queued for the reconnect", leaf)
        return True

    def publish_needs(self) -> None:
        self._publish(topics.NEEDS, self.handlers.needs())

    def publish_state(self) -> None:
        self._publish(topics.STATE, self.handlers.state(True), retain=True)

    def publish_swap(self, report: fleet_pb2.SwapReport) -> None:
        self._publish(topics.SWAP, report)

    def publish_ack(self, ack: fleet_pb2.CommandAck) -> None:
        self._publish(topics.ACK, ack)

    def publish_stats(self, summary: fleet_pb2.StatsSummary) -> bool:
        """QoS 1, never retained: the latest only (adapt.py); False when not handed over."""
        return self._publish(topics.STATS, summary)

    def publish_telemetry(self) -> None:
        if self.connected:  # QoS 0: a stale sample is worth nothing after an outage
            self._publish(topics.TELEMETRY, self.handlers.telemetry(), qos=0)

    def _telemetry_loop(self) -> None:
        while not self._stop.wait(self.telemetry_interval_s):
            try:
                self.publish_telemetry()
            except Exception:
                logger.exception("telemetry failed")

    # --- paho callbacks (network thread) ------------------------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: mqtt.ReasonCode,
        props: mqtt.Properties | None,
    ) -> None:
        if reason.is_failure:
            logger.warning("broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        self.connects += 1
        logger.info("connected to %s:%d (connection %d)", self.host, self.port, self.connects)
        # a clean session has no subscription until the SUBACK: the needs go out after it (on_subscribe),
        # so the server's answer (an Error is not retained) cannot arrive before we listen
        _rc, self._subscribe_mid = client.subscribe(
            [(self._topic(leaf), 1) for leaf in (topics.MODEL, topics.ERROR, topics.COMMAND)]
        )

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[mqtt.ReasonCode],
        props: mqtt.Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        if any(r.is_failure for r in reasons):
            logger.warning("broker %s:%d refused a subscription: %s", self.host, self.port, reasons)
        self.publish_state()
        self.publish_needs()
        self._connected.set()
        try:
            self.handlers.on_connected()
        except Exception:
            logger.exception("on_connected handler failed")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: mqtt.ReasonCode,
        props: mqtt.Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            logger.warning("lost the broker (%s); paho reconnects with backoff", reason)
            try:
                self.handlers.on_disconnected()
            except Exception:
                logger.exception("on_disconnected handler failed")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        leaf = msg.topic.rsplit("/", 1)[-1]
        kinds: dict[str, tuple[type[Message], Callable[..., None]]] = {
            topics.MODEL: (fleet_pb2.ModelReady, self.handlers.on_model),
            topics.COMMAND: (fleet_pb2.Command, self.handlers.on_command),
            topics.ERROR: (fleet_pb2.Error, self.handlers.on_error),
        }
        if leaf not in kinds:
            return
        cls, handler = kinds[leaf]
        if len(msg.payload) > topics.MAX_PAYLOAD:
            logger.warning(
                "%d-byte %s message ignored (limit %d)", len(msg.payload), leaf, topics.MAX_PAYLOAD
            )
            return
        if leaf == topics.COMMAND and msg.retain:
            # a retained command would be obeyed again after every reconnect; nobody may retain one
            logger.warning("retained command on %s ignored", msg.topic)
            self.publish_ack(
                fleet_pb2.CommandAck(
                    device_id=self.device_id,
                    ok=False,
                    reason="retained command ignored",
                    sent_unix_ms=now_ms(),
                )
            )
            return
        try:
            parsed = cls.FromString(bytes(msg.payload))
        except DecodeError:
            logger.warning("malformed %s message on %s (%d bytes) ignored", leaf, msg.topic, len(msg.payload))
            return
        try:
            handler(parsed)
        except Exception:  # a bad message must not kill paho's network thread
            logger.exception("handling %s failed", leaf)


def now_ms() -> int:
    return int(time.time() * 1000)
