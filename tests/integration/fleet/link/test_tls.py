"""TLS for real: gRPC with mutual TLS, and mosquitto with TLS + client certificates or passwords.

The certificates come from a CA made in the test (tests/support/certs.py). The broker is mosquitto
started with its own TLS listeners (iotcore would need a rumqttd TOML config for TLS, so these run
on mosquitto only and are skipped without it).
"""

from __future__ import annotations

import getpass
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from edgecut.agent.agent import Agent
from edgecut.agent.settings import AgentSettings
from edgecut.broker import free_port, mosquitto_path, port_open
from edgecut.server.fleet.app import FleetServer
from edgecut.v1 import fleet_pb2 as pb
from edgecut.v1 import fleet_pb2_grpc as pb_grpc
from tests.support.agent_helpers import wait_serving
from tests.support.certs import Pair, TestCA
from tests.support.fleet_server import start_server
from tests.support.keys import fleet_key
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.stats_engine import StatsEngine
from tests.support.variant_engine import VariantEngine
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mosquitto_path() is None, reason="TLS broker tests need mosquitto"),
]


class TlsBroker:
    """mosquitto with two TLS listeners: client certificates (`cert_port`) and passwords (`password_port`)."""

    def __init__(self, directory: Path, ca: TestCA, users: dict[str, str]) -> None:
        server = ca.issue("broker", server=True)
        self.cert_port, self.password_port = free_port(), free_port()
        passwords = directory / "passwd"
        passwords.touch()
        for user, password in users.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
        tls = f"cafile {ca.path}\ncertfile {server.cert}\nkeyfile {server.key}\n"
        conf = directory / "mosquitto.conf"
        conf.write_text(
            "per_listener_settings true\npersistence false\nlog_dest stderr\n"
            f"user {getpass.getuser()}\n"
            f"listener {self.cert_port} 127.0.0.1\n{tls}require_certificate true\n"
            "use_identity_as_username true\nallow_anonymous false\n"
            f"listener {self.password_port} 127.0.0.1\n{tls}password_file {passwords}\nallow_anonymous false\n"
        )
        exe = mosquitto_path()
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_until(lambda: port_open(self.cert_port) and port_open(self.password_port), 10)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, ca: TestCA) -> Iterator[TlsBroker]:
    b = TlsBroker(tmp_path, ca, {"pi-7": "s3cret-pass"})
    yield b
    b.close()


@pytest.fixture
def mtls_fleet(tmp_path: Path, ca: TestCA, tls_broker: TlsBroker) -> Iterator[FleetServer]:
    server = _mtls_server(tmp_path, ca, tls_broker, OnnxTestEngine(tmp_path / "engine"))
    yield server
    server.stop()


@pytest.fixture
def mtls_variant_fleet(tmp_path: Path, ca: TestCA, tls_broker: TlsBroker) -> Iterator[FleetServer]:
    server = _mtls_server(tmp_path, ca, tls_broker, VariantEngine(tmp_path / "engine", int8="faster"))
    yield server
    server.stop()


def _mtls_server(tmp_path: Path, ca: TestCA, tls_broker: TlsBroker, engine: OnnxTestEngine) -> FleetServer:
    grpc_pair = ca.issue("fleet", server=True)
    client = ca.issue("fleet-server")  # the server's own identity towards the broker
    return start_server(
        tmp_path / "fleet",
        engine,
        f"mqtts://127.0.0.1:{tls_broker.cert_port}",
        grpc_tls_cert=grpc_pair.cert,
        grpc_tls_key=grpc_pair.key,
        grpc_client_ca=ca.path,
        mqtt_ca_file=ca.path,
        mqtt_cert_file=client.cert,
        mqtt_key_file=client.key,
    )


def _agent(tmp_path: Path, ca: TestCA, device_id: str, broker_url: str, **extra: object) -> Agent:
    pair = ca.issue(device_id)
    settings = AgentSettings(
        device_id=device_id,
        broker_url=broker_url,
        state_dir=tmp_path / device_id,
        listen="127.0.0.1:0",
        tasks=["seg"],
        device_class="x86",
        ort_threads=1,
        reconnect_max_s=1.0,
        fleet_keys=[fleet_key().public_text],
        mqtt_ca_file=ca.path,
        grpc_ca_file=ca.path,
        grpc_cert_file=pair.cert,
        grpc_key_file=pair.key,
        **extra,  # type: ignore[arg-type]
    )
    agent = Agent(settings)
    agent.start()
    return agent


def _stub(address: str, ca: TestCA, pair: Pair | None) -> tuple[grpc.Channel, pb_grpc.FleetServiceStub]:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.path.read_bytes(),
        private_key=pair.key.read_bytes() if pair else None,
        certificate_chain=pair.cert.read_bytes() if pair else None,
    )
    channel = grpc.secure_channel(address, creds)
    return channel, pb_grpc.FleetServiceStub(channel)


def test_agent_over_mqtt_client_certs_and_grpc_mutual_tls(
    tmp_path: Path, ca: TestCA, tls_broker: TlsBroker, mtls_fleet: FleetServer
) -> None:
    url = f"mqtts://127.0.0.1:{tls_broker.cert_port}"
    agent = _agent(tmp_path, ca, "pi-1", url, mqtt_cert_file=None, mqtt_key_file=None)
    try:
        # no client certificate: the broker refuses the agent
        assert not agent.link.wait_connected(3)
    finally:
        agent.stop()
    pair = ca.issue("pi-2-mqtt")
    agent = _agent(tmp_path, ca, "pi-2", url, mqtt_cert_file=pair.cert, mqtt_key_file=pair.key)
    try:
        aid = wait_serving(agent, ["seg"])  # offered over mqtts, downloaded over mutual TLS
        assert mtls_fleet.registry is not None
        assert mtls_fleet.registry.offers.was_offered("pi-2", aid)
    finally:
        agent.stop()


def test_agent_with_a_broker_password(tmp_path: Path, ca: TestCA, tls_broker: TlsBroker) -> None:
    url = f"mqtts://127.0.0.1:{tls_broker.password_port}"
    wrong = _agent(tmp_path, ca, "pi-7", url, mqtt_username="pi-7", mqtt_password="guess")
    try:
        assert not wrong.link.wait_connected(3)
    finally:
        wrong.stop()
    right = _agent(tmp_path, ca, "pi-7", url, mqtt_username="pi-7", mqtt_password="s3cret-pass")
    try:
        assert right.link.wait_connected(10)
    finally:
        right.stop()


def test_grpc_mutual_tls_refuses_unknown_clients_and_foreign_downloads(
    tmp_path: Path, ca: TestCA, mtls_fleet: FleetServer
) -> None:
    address = mtls_fleet.grpc_address
    request = pb.ModelRequest(tasks=["seg"], resources=pb.Resources(device_class="x86"))
    # no client certificate, and one from a CA the server does not trust: the handshake fails
    stranger = TestCA(tmp_path / "other-pki", "stranger CA").issue("pi-3")
    for pair in (None, stranger):
        channel, stub = _stub(address, ca, pair)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.RequestModel(request, timeout=5))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()
    # a known device: answered for its certificate's identity, never the one it claims
    alice, bob = ca.issue("alice"), ca.issue("bob")
    channel, as_alice = _stub(address, ca, alice)
    ready = list(as_alice.RequestModel(request, timeout=20))[-1].ready
    assert ready.device_id == "alice" and pb.Manifest.FromString(ready.manifest).device_id == "alice"
    with pytest.raises(grpc.RpcError) as info:
        list(as_alice.RequestModel(pb.ModelRequest(device_id="bob", tasks=["seg"]), timeout=5))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert sum(
        len(c.data) for c in as_alice.DownloadModel(pb.DownloadRequest(artifact_id=ready.artifact_id))
    ) == (ready.size_bytes)
    channel.close()
    # bob was never offered alice's artifact: he may not download it
    channel, as_bob = _stub(address, ca, bob)
    with pytest.raises(grpc.RpcError) as info:
        list(as_bob.DownloadModel(pb.DownloadRequest(artifact_id=ready.artifact_id), timeout=5))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "never offered" in info.value.details()
    channel.close()


def test_grpc_mutual_tls_serves_a_variant_only_to_a_device_whose_offer_lists_it(
    tmp_path: Path, ca: TestCA, tls_broker: TlsBroker, mtls_variant_fleet: FleetServer
) -> None:
    address = mtls_variant_fleet.grpc_address
    request = pb.ModelRequest(tasks=["seg"], resources=pb.Resources(device_class="x86"))
    channel, as_alice = _stub(address, ca, ca.issue("alice"))
    ready = list(as_alice.RequestModel(request, timeout=20))[-1].ready
    [variant] = pb.Manifest.FromString(ready.manifest).variants  # signed for alice, with her offer
    assert variant.precision == "int8" and variant.artifact_id != ready.artifact_id
    data = b"".join(
        c.data for c in as_alice.DownloadModel(pb.DownloadRequest(artifact_id=variant.artifact_id))
    )
    assert hashlib.sha256(data).hexdigest() == variant.sha256 and len(data) == variant.size_bytes
    channel.close()
    # bob was offered neither alice's model nor its variant
    channel, as_bob = _stub(address, ca, ca.issue("bob"))
    with pytest.raises(grpc.RpcError) as info:
        list(as_bob.DownloadModel(pb.DownloadRequest(artifact_id=variant.artifact_id), timeout=5))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "never offered" in info.value.details()
    channel.close()
    # a device over MQTT + mutual TLS: its own offer lists the variant, so it downloads and times it
    pair = ca.issue("pi-1-mqtt")
    url = f"mqtts://127.0.0.1:{tls_broker.cert_port}"
    agent = _agent(tmp_path, ca, "pi-1", url, mqtt_cert_file=pair.cert, mqtt_key_file=pair.key)
    try:
        wait_serving(agent, ["seg"])
        assert agent.status().precision == "int8"
    finally:
        agent.stop()


def test_grpc_mutual_tls_serves_a_statistics_companion_only_to_a_device_it_was_offered_to(
    tmp_path: Path, ca: TestCA, tls_broker: TlsBroker
) -> None:
    """Issue 31: the companion is signed into the caller's offer (`Manifest.statistics`) and downloadable
    by that device alone, like a variant."""
    server = _mtls_server(tmp_path, ca, tls_broker, StatsEngine(tmp_path / "engine"))
    try:
        request = pb.ModelRequest(tasks=["seg"], resources=pb.Resources(device_class="x86"))
        channel, as_alice = _stub(server.grpc_address, ca, ca.issue("alice"))
        ready = list(as_alice.RequestModel(request, timeout=20))[-1].ready
        stats = pb.Manifest.FromString(ready.manifest).statistics
        assert stats.precision == "stats" and stats.artifact_id not in ("", ready.artifact_id)
        download = pb.DownloadRequest(artifact_id=stats.artifact_id)
        data = b"".join(c.data for c in as_alice.DownloadModel(download))
        assert hashlib.sha256(data).hexdigest() == stats.sha256 and len(data) == stats.size_bytes
        channel.close()
        channel, as_bob = _stub(server.grpc_address, ca, ca.issue("bob"))
        with pytest.raises(grpc.RpcError) as info:
            list(as_bob.DownloadModel(download, timeout=5))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        channel.close()
    finally:
        server.stop()
