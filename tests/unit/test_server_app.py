"""The composition root: only edgecut.server.app gives a fleet server its dashboard."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.errors import ConfigError
from edgecut.server.app import build_server
from edgecut.server.fleet.app import FleetServer
from tests.support.fleet_server import settings
from tests.support.onnx_engine import OnnxTestEngine


def test_a_fleet_server_asked_for_http_without_a_dashboard_says_where_to_get_one(tmp_path: Path) -> None:
    s = settings(tmp_path / "state", http="127.0.0.1:0")
    with pytest.raises(
        ConfigError, match=r"http is set \(127\.0\.0\.1:0\).*edgecut\.server\.app\.build_server"
    ):
        FleetServer(s, OnnxTestEngine(tmp_path / "engine"))


def test_the_composition_root_serves_the_dashboard_only_when_http_is_set(tmp_path: Path) -> None:
    engine = OnnxTestEngine(tmp_path / "engine")
    with build_server(settings(tmp_path / "a", http="127.0.0.1:0"), engine) as server:
        assert server.http_url.startswith("http://127.0.0.1:")
        assert server.dashboard is not None and server.http_url.endswith(f":{server.dashboard.port}")
    with build_server(settings(tmp_path / "b"), engine) as server:
        assert server.dashboard is None and server.http_url == ""
