"""Fixtures shared by the fleet's unit tests: one registry database seen by two replicas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.server.fleet.state.registry import Registry


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.sqlite3'}"
    return str(request.getfixturevalue("postgres").create_database())


@pytest.fixture
def pair(url: str) -> Iterator[tuple[Registry, Registry]]:
    a, b = Registry(url), Registry(url)
    yield a, b
    a.close()
    b.close()
