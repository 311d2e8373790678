"""Which MQTT broker the tests run against: EDGECUT_EMBEDDED_BROKER, else mosquitto if installed, else iotcore."""

from __future__ import annotations

from edgecut.broker import chosen_broker, mosquitto_path


def broker_kind() -> str:
    """mosquitto or iotcore: what `EmbeddedBroker()` starts in this run."""
    choice = chosen_broker()
    if choice == "auto":
        return "mosquitto" if mosquitto_path() else "iotcore"
    return choice
