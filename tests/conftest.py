"""Shared fixtures: a real MQTT broker on loopback.

`EDGECUT_EMBEDDED_BROKER=mosquitto|iotcore|auto` picks it (auto: mosquitto when installed, else iotcore);
`.ci/run` runs the broker-dependent tests (marker `broker`) once per broker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from edgecut.broker import BROKER_ENV, EmbeddedBroker
from tests.support.brokers import broker_kind

# Two cores: keep torch/onnxruntime from oversubscribing when tests run beside each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_report_header() -> str:
    return f"MQTT broker: {broker_kind()} ({BROKER_ENV}={os.environ.get(BROKER_ENV, 'auto')})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # the header is hidden under -q; CI's log must still say which broker this run used
    terminalreporter.write_line(pytest_report_header())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts a broker is marked `broker`, so it can be rerun on the other broker."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh broker per test; tests may stop() and start() it again on the same port."""
    b = EmbeddedBroker(prefer=broker_kind()).start()
    try:
        yield b
    finally:
        b.close()
