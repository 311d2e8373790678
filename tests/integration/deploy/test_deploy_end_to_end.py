"""The deploy/ configuration as shipped, end to end: mosquitto from deploy/mosquitto, the server with the
Kubernetes ConfigMap's settings and its dashboard, two real agents.

What is changed, and only that (the rest is the shipped files, the ACL byte for byte):
- mosquitto.conf: the listener port and the file paths point at loopback and this test's directory, and
  it runs as this user, logging to stderr (tests/support/secure_broker.py, SecureBroker);
- certificates: made by deploy/mosquitto/issue-cert.sh (a CA, the broker, server@edgecut, each device);
- the server's settings: deploy/k8s/configmap.yaml's server.yaml and the dashboard users of
  deploy/k8s/secret.yaml, with the addresses and paths below pointed at loopback and this test's
  directory (`LOCAL`), the registry and store on local files instead of PostgreSQL and S3, and the test
  engine (ONNX models in milliseconds) instead of torch builds.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgecut import topics
from edgecut.agent.agent import Agent
from edgecut.agent.settings import AgentSettings
from edgecut.broker import mosquitto_path
from edgecut.server.app import build_server
from edgecut.server.fleet.commands import client as commands
from edgecut.server.fleet.link.broker import BrokerAuth
from edgecut.server.fleet.settings import load_settings
from tests.support.keys import fleet_key, fleet_key_path, operator_key, operator_key_path
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.secure_broker import Client, Pki, SecureBroker
from tests.support.waiting import WAIT_S, wait_until

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed; .ci/run installs it"),
]


def _shipped_users() -> tuple[str, dict[str, Any]]:
    """EDGECUT_HTTP_USERS as deploy/k8s/secret.yaml ships it (its CHANGE-ME passwords included)."""
    (server_secret,) = [
        d
        for d in yaml.safe_load_all((K8S / "secret.yaml").read_text())
        if d["metadata"]["name"] == "edgecut-server"
    ]
    raw = server_secret["stringData"]["EDGECUT_HTTP_USERS"]
    return raw, json.loads(raw)


class DeployedFleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pki = Pki(root / "pki")
        self.broker = SecureBroker(self.pki, root / "broker").start()
        self.ca = self.pki.root / "ca" / "ca.crt"
        server_id = self.pki.server()
        config = root / "server.yaml"
        config.write_text(yaml.safe_load((K8S / "configmap.yaml").read_text())["data"]["server.yaml"])
        users_env, self.users = _shipped_users()
        local = {  # LOCAL: where this machine differs from the cluster
            "broker": self.broker.url,
            "mqtt_ca_file": server_id["ca"],
            "mqtt_cert_file": server_id["cert"],
            "mqtt_key_file": server_id["key"],
            "signing_key": fleet_key_path(),
            "operator_key": operator_key_path(),
            "grpc": "127.0.0.1:0",
            "public_grpc": "",
            "state_dir": root / "server",
            "http": "127.0.0.1:0",
            "latency_probe": False,  # it would move budgets (and build keys) a moment after start
        }
        operator_key()  # the key file the server signs with and the agents trust
        settings = load_settings(config, local, environ={"EDGECUT_HTTP_USERS": users_env})
        assert settings.http_allowed_hosts and settings.share_group == "edgecut"  # the ConfigMap's, kept
        self.server = build_server(settings, OnnxTestEngine(root / "engine")).start()
        assert self.server.wait_ready(WAIT_S), "the server did not subscribe through the shipped ACL"
        self.agents: dict[str, Agent] = {}
        self.clients: list[Client] = []

    def agent(self, device_id: str, tasks: list[str]) -> Agent:
        ident = self.pki.device(device_id)
        agent = Agent(
            AgentSettings(
                device_id=device_id,
                broker_url=self.broker.url,
                mqtt_ca_file=ident["ca"],
                mqtt_cert_file=ident["cert"],
                mqtt_key_file=ident["key"],
                state_dir=self.root / "agents" / device_id,
                listen="127.0.0.1:0",
                ort_threads=1,
                reconnect_max_s=1.0,
                keepalive_s=5,
                telemetry_interval_s=0.5,
                device_class="rpi4",
                tasks=tasks,
                fleet_keys=[fleet_key().public_text],
                operator_keys=[operator_key().public_text],
            )
        )
        agent.start()
        self.agents[device_id] = agent
        return agent

    def wait_serving(self, device_id: str, tasks: list[str]) -> str:
        agent = self.agents[device_id]
        wait_until(lambda: sorted(agent.status().model_tasks) == sorted(tasks), WAIT_S * 2)
        return agent.status().artifact_id

    def client(self, client_id: str, device_id: str) -> Client:
        c = Client(self.broker, client_id, self.pki.device(device_id), self.ca)
        self.clients.append(c)
        assert c.connect() == "connected"
        return c

    def api(self, path: str, user: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        password = self.users[user]["password"]
        req = urllib.request.Request(
            self.server.http_url + path,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Content-Type": "application/json",
                "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=WAIT_S) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for a in self.agents.values():
            a.stop()
        self.server.stop()
        self.broker.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[DeployedFleet]:
    f = DeployedFleet(tmp_path)
    yield f
    f.close()


def test_a_dashboard_command_is_acked_and_audited_through_the_shipped_broker(fleet: DeployedFleet) -> None:
    fleet.agent("cam-a", ["seg"])
    fleet.agent("cam-b", ["depth"])
    first = fleet.wait_serving("cam-a", ["seg"])
    fleet.wait_serving("cam-b", ["depth"])
    operator_name = next(n for n, u in fleet.users.items() if u["role"] == "operator")
    viewer_name = next(n for n, u in fleet.users.items() if u["role"] == "viewer")

    status, sent = fleet.api(
        "/api/v1/devices/cam-a/commands", operator_name, {"action": "set_tasks", "tasks": ["seg", "depth"]}
    )
    assert status == 202, sent
    cid = sent["command_id"]
    landed = wait_until(
        lambda: (c := fleet.api(f"/api/v1/commands/{cid}", viewer_name)[1])["state"] != "sent" and c
    )
    assert landed["state"] == "ok", landed  # the ack came back through the broker's ACL
    assert fleet.wait_serving("cam-a", ["seg", "depth"]) != first
    audit = fleet.api("/api/v1/audit?device_id=cam-a", viewer_name)[1]["audit"]
    assert [(a["who"], a["event"], a["command_id"]) for a in audit[::-1]] == [
        (operator_name, "sent", cid),
        (operator_name, "ok", cid),
    ]
    status, refused = fleet.api("/api/v1/devices/cam-b/commands", viewer_name, {"action": "pin"})
    assert status == 403 and "only an operator" in refused["detail"]

    # `edgecut command` from a shell with the server's certificate: the ACL lets it read the ack, and
    # the server records and audits the command from that ack
    server_id = fleet.pki.server()
    auth = BrokerAuth(server_id["ca"], server_id["cert"], server_id["key"])
    cmd = commands.build("cam-b", "pin")
    ack = commands.send(fleet.broker.url, operator_key(), cmd, auth, timeout_s=WAIT_S)
    assert ack.ok and ack.command_id == cmd.command_id
    wait_until(lambda: fleet.api(f"/api/v1/commands/{cmd.command_id}", viewer_name)[0] == 200)
    (entry,) = fleet.api("/api/v1/audit?device_id=cam-b", viewer_name)[1]["audit"][:1]
    assert (entry["who"], entry["event"], entry["action"]) == ("outside the dashboard", "ok", "pin")


def test_a_device_cannot_publish_on_another_devices_topics(fleet: DeployedFleet) -> None:
    fleet.agent("cam-a", ["seg"])
    fleet.agent("cam-b", ["depth"])
    fleet.wait_serving("cam-b", ["depth"])
    operator_name = next(n for n, u in fleet.users.items() if u["role"] == "operator")
    _, sent = fleet.api("/api/v1/devices/cam-b/commands", operator_name, {"action": "pin"})
    assert fleet.server.registry is not None
    # the server's record of cam-b once its swap report and state have landed (they follow the swap)
    before = wait_until(
        lambda: (
            (d := fleet.server.registry.devices.get("cam-b"))
            and d["artifact_id"]
            and d["serving_tasks"]
            and d
        )
    )

    # cam-a's own certificate (a second connection, so the agent keeps its own)
    forger = fleet.client("cam-a-forger", "cam-a")
    for leaf in (topics.NEEDS, topics.STATE, topics.TELEMETRY, topics.SWAP, topics.ACK, topics.STATS):
        reason = forger.publish(topics.device_topic("cam-b", leaf), b"forged")
        assert str(reason) == "Not authorized", (leaf, reason)
    for leaf in (topics.MODEL, topics.ERROR, topics.COMMAND):  # what only the server sends
        assert str(forger.publish(topics.device_topic("cam-b", leaf), b"forged")) == "Not authorized", leaf
    # a forged ack for cam-b's command, on cam-a's own topic, is not cam-b's answer
    assert not forger.publish(
        topics.device_topic("cam-a", topics.ACK), b"\x12\x20" + sent["command_id"].encode()
    ).is_failure

    # cam-b's genuine ack lands, and the server's record of cam-b holds nothing forged
    landed = wait_until(
        lambda: (
            (c := fleet.api(f"/api/v1/commands/{sent['command_id']}", operator_name)[1])["state"] != "sent"
            and c
        )
    )
    assert landed["state"] == "ok" and landed["device_id"] == "cam-b"
    after = fleet.server.registry.devices.get("cam-b") if fleet.server.registry else None
    assert before is not None and after is not None
    kept = ("needs_tasks", "needs_seq", "device_class", "status", "artifact_id", "serving_tasks")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert fleet.api("/api/v1/audit?device_id=cam-a", operator_name)[1]["audit"] == []  # its ack: ignored
    assert fleet.agents["cam-b"].tasks.tasks == ["depth"]
