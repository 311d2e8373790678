from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import types
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecut.broker import free_port
from edgecut.errors import ConfigError
from edgecut.server.fleet import cli as service_cli
from edgecut.server.fleet.settings import load_settings
from edgecut.server.paths import PACKAGED_REFERENCE
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.waiting import WAIT_S


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgecut")
    service_cli.register(p.add_subparsers(dest="command", required=True))
    return p


def test_sources_in_order_file_then_env_then_options(tmp_path: Path) -> None:
    cfg = tmp_path / "server.yaml"
    cfg.write_text(
        "workers: 2\ngrpc: 0.0.0.0:6000\nbroker: mqtt://broker:1883\n"
        "budget:\n  classes:\n    rpi4: {macs_fraction: 0.4, macs_per_ms: 1e6}\n"
    )
    s = load_settings(
        cfg,
        {"broker": "mqtt://127.0.0.1:1999", "workers": None},
        environ={"EDGECUT_WORKERS": "3", "EDGECUT_GRPC": "127.0.0.1:7000", "EDGECUT_AGENT_X": "1"},
    )
    assert (s.workers, s.grpc, s.broker) == (3, "127.0.0.1:7000", "mqtt://127.0.0.1:1999")
    assert s.budget.classes["rpi4"].macs_fraction == 0.4
    assert s.registry.startswith("sqlite:///") and s.store.endswith("artifacts")


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("wrokers: 2\n", {}, "wrokers"),
        ("workers: 0\n", {}, "workers = 0"),
        ("broker: http://x\n", {}, "expected mqtt://host:port"),
        (
            "budget:\n  classes:\n    rpi4: {macs_fraction: 2, macs_per_ms: 1}\n",
            {},
            "budget.classes.rpi4.macs_fraction",
        ),
        ("- a list\n", {}, "must hold a mapping"),
        ("workers: [\n", {}, "not valid YAML"),
        ("", {"EDGECUT_CHUNK_SIZE": "lots"}, "chunk_size = 'lots'"),
        ("image_scale: 0\n", {}, "image_scale = 0"),
        ("http: 0.0.0.0:8080\n", {}, "beyond this machine, with no credentials: set http_users"),
        ("http: 0.0.0.0:8080\nhttp_client_ca: ca.pem\n", {}, "beyond this machine, with no credentials"),
        ("http_users: {bob: {password: pw, role: admin}}\n", {}, "http_users.bob"),
        ("http_allowed_hosts: [evil.example/x]\n", {}, "is not a host name"),
    ],
)
def test_bad_config_is_a_clear_config_error(
    tmp_path: Path, text: str, env: dict[str, str], needle: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env)
    assert needle in str(info.value)
    assert info.value.exit_code == 2


def test_a_dashboard_beyond_loopback_starts_with_users_from_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "server.yaml"
    cfg.write_text("http: 0.0.0.0:8080\nhttp_allowed_hosts: [fleet.example.com]\n")
    users = '{"ops": "pw1", "eve": {"password": "pw2", "role": "viewer"}}'  # a k8s Secret's variable
    s = load_settings(cfg, environ={"EDGECUT_HTTP_USERS": users, "EDGECUT_HTTP_ALLOWED_HOSTS": "[a.example]"})
    assert s.http_allowed_hosts == ["a.example"]
    assert s.http_users["ops"].get_secret_value() == "pw1"  # type: ignore[union-attr]
    assert s.http_users["eve"].role == "viewer"  # type: ignore[union-attr]
    assert "pw2" not in repr(s)
    assert load_settings(None, {"http": "127.0.0.1:8080"}, environ={}).http_users == {}  # loopback: fine


def test_server_command_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    args = parser().parse_args(["server", "--checkpoint", str(tmp_path / "none.pt")])
    with pytest.raises(ConfigError, match="does not exist"):
        args.handler(args)


@pytest.mark.parametrize("given", [True, False], ids=["checkpoint", "default-reference"])
def test_server_command_runs_the_service_until_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: bool
) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)  # no .edgecut/models here: the default is the packaged reference model
    seen: dict[str, object] = {}

    def load_engine(
        checkpoint_path: Path, state_dir: Path, calib_data: str | None, **kw: object
    ) -> OnnxTestEngine:
        seen.update(checkpoint=checkpoint_path, state_dir=state_dir, calib_data=calib_data, **kw)
        engine = OnnxTestEngine(tmp_path / "work")
        engine.calibrated_on = "edgecut's synthetic scenes, given by --calib-data"  # type: ignore[attr-defined]
        return engine

    monkeypatch.setitem(sys.modules, "edgecut.server.engine", types.SimpleNamespace(load_engine=load_engine))
    old_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    port = free_port()
    args = parser().parse_args(
        [
            "server",
            *(["--checkpoint", str(ckpt)] if given else []),
            "--state-dir",
            str(tmp_path / "s"),
            "--grpc",
            f"127.0.0.1:{port}",
            "--broker",
            "",
            "--calib-data",
            "synthetic",
            "--model",
            "mymodels:TinyMTL",
            "--val-data",
            str(tmp_path / "val"),
        ]
    )

    def probe_then_stop() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            grpc.channel_ready_future(ch).result(timeout=WAIT_S)
            seen["health"] = (
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=WAIT_S).status
            )
        os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=probe_then_stop)
    t.start()
    try:
        assert args.handler(args) == 0
    finally:
        t.join(15)
        for sig, old in old_handlers.items():
            signal.signal(sig, old)
    assert seen["health"] == health_pb2.HealthCheckResponse.SERVING
    # asked for by name, synthetic scenes are passed on as such (no name = the model's own data)
    assert seen["checkpoint"] == (ckpt if given else PACKAGED_REFERENCE) and seen["calib_data"] == "synthetic"
    assert seen["min_delta_m"] == -30.0
    assert (seen["model"], seen["val_data"]) == ("mymodels:TinyMTL", str(tmp_path / "val"))
    assert (tmp_path / "s" / "registry.sqlite3").exists()


def test_the_delta_m_floor_defaults_to_minus_30_and_can_be_turned_off(tmp_path: Path) -> None:
    assert load_settings(None, {}, {}).min_delta_m == -30.0
    assert load_settings(None, {}, {"EDGECUT_MIN_DELTA_M": "-50"}).min_delta_m == -50.0
    (tmp_path / "s.yaml").write_text("min_delta_m: off\n")  # YAML reads a bare off as false
    assert load_settings(tmp_path / "s.yaml", {}, {}).min_delta_m == -math.inf
    assert load_settings(None, {}, {"EDGECUT_MIN_DELTA_M": "off"}).min_delta_m == -math.inf
    with pytest.raises(ConfigError, match="min_delta_m = 'lots'"):
        load_settings(None, {}, {"EDGECUT_MIN_DELTA_M": "lots"})
