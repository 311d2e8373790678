"""The server's MQTT connection settings: broker URLs, credentials, protocol versions, its subscriptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt

from edgecut import topics
from edgecut.errors import ConfigError

PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


def parse_broker_url(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """`mqtt://[user:pass@]host[:1883]` or `mqtts://...:8883` -> host, port, tls, username, password."""
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise ConfigError(f"broker URL {url!r}: expected mqtt://host:port or mqtts://host:port")
    tls = u.scheme in ("mqtts", "ssl")
    try:
        port = u.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConfigError(f"broker URL {url!r}: bad port") from exc
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password else None
    return u.hostname, port, tls, user, password


def server_subscriptions(group: str = topics.SHARE_GROUP) -> list[tuple[str, int]]:
    """The filters (and QoS) every server replica subscribes: shared for work, plain for retained state."""
    return [
        (topics.shared(topics.NEEDS, group), 1),
        (topics.shared(topics.TELEMETRY, group), 0),
        (topics.shared(topics.SWAP, group), 1),
        (topics.shared(topics.ACK, group), 1),
        (topics.shared(topics.STATS, group), 1),
        (topics.device_topic("+", topics.STATE), 1),  # retained; every replica reads it
    ]


@dataclass(frozen=True)
class BrokerAuth:
    """How the bridge proves itself to the broker (URL credentials win over `username`/`password`)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str = ""
    password: str = field(default="", repr=False)  # never in a log line
