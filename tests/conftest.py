"""Shared fixtures: a real MQTT broker on loopback (mosquitto when installed, else iotcore)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from edgecut.broker import EmbeddedBroker

# Two cores: keep torch/onnxruntime from oversubscribing when tests run beside each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh broker per test; tests may stop() and start() it again on the same port."""
    b = EmbeddedBroker().start()
    try:
        yield b
    finally:
        b.close()
