"""`edgecut health ADDRESS`: the container probe (Docker HEALTHCHECK) for a fleet server."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.cli import main
from tests.support.fleet_server import start_server
from tests.support.onnx_engine import OnnxTestEngine

pytestmark = pytest.mark.integration


def test_health_is_zero_while_serving_and_one_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server(tmp_path / "state", OnnxTestEngine(tmp_path / "work"))
    address = f"127.0.0.1:{server.grpc_port}"
    try:
        assert main(["health", address]) == 0
        assert main(["health", address, "--service", "edgecut.v1.FleetService"]) == 0
        assert "SERVING" in capsys.readouterr().out
        assert main(["health", address, "--service", "no.such.Service"]) == 1
    finally:
        server.stop()
    assert main(["health", address, "--timeout", "2"]) == 1
    assert "no health answer" in capsys.readouterr().err
