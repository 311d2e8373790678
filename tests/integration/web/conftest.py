"""A running fleet (server with its dashboard on a real broker) for the dashboard's integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.broker import EmbeddedBroker
from tests.support.live_fleet import LiveFleet, running_fleet


@pytest.fixture
def live(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[LiveFleet]:
    with running_fleet(tmp_path, broker.url) as fleet:
        yield fleet
