"""deploy/ files are checked by the tools that read them: systemd-analyze for the units, the Compose
schema (and `docker compose config` where a Compose client exists) for compose.yaml, the Kubernetes
schemas (bundled by kubernetes-validate: no network) for deploy/k8s. Each check also runs on a broken
copy, to show it can fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgecut.errors import ConfigError
from edgecut.server.fleet.settings import HttpUser, ServerSettings, load_settings, split_host_port

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes this targets (native gRPC probes are GA since 1.27)

pytestmark = pytest.mark.integration


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed here; .ci/run installs it")
    return found


# -- systemd -------------------------------------------------------------------------------------


def _verify_unit(unit: Path, tmp_path: Path) -> str:
    """systemd-analyze verify's complaints about `unit` ('' = none), with ExecStart pointed at a stub.

    verify insists that ExecStart's program exists; everything else in the unit is checked as shipped.
    """
    analyze = _tool("systemd-analyze")
    stub = tmp_path / "bin" / "edgecut"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/edgecut/bin/edgecut", str(stub)))
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return "\n".join(problems) if problems or out.returncode else ""


@pytest.mark.parametrize("unit", ["edgecut-agent.service", "edgecut-server.service"])
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    text = (DEPLOY / "systemd" / unit).read_text()
    for needed in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "User=edgecut",
        "StateDirectory=",
        "MemoryMax=",
    ):
        assert needed in text, f"{unit} lacks {needed}"
    if unit == "edgecut-agent.service":
        assert "CPUQuota=" in text
    assert _verify_unit(DEPLOY / "systemd" / unit, tmp_path) == ""


def test_a_broken_unit_fails_verification(tmp_path: Path) -> None:
    broken = tmp_path / "src" / "edgecut-agent.service"
    broken.parent.mkdir()
    broken.write_text(
        (DEPLOY / "systemd" / "edgecut-agent.service").read_text().replace("CPUQuota=150%", "CPUQuota=lots")
    )
    assert "invalid cpu quota" in _verify_unit(broken, tmp_path).lower()


# -- Docker Compose ------------------------------------------------------------------------------

COMPOSE = DEPLOY / "docker" / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "docker" / "fleet.env.example"


def _schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    checker = _tool("check-jsonschema")
    return subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    assert _schema_check(COMPOSE).returncode == 0
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert {"mosquitto", "postgres", "minio", "server-1", "server-2", "agents"} <= set(services)
    assert services["server-1"]["environment"]["EDGECUT_REGISTRY_URL"].startswith("postgresql://")
    assert services["server-1"]["environment"]["EDGECUT_STORE_URL"].startswith("s3://")
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restarts: unless-stopped", 1))
    assert _schema_check(broken).returncode != 0


def _compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file() -> None:
    client = _compose_client()
    if client is None:
        pytest.skip(
            "no Compose client (docker compose plugin or docker-compose); .ci/run installs docker-compose"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "MINIO_", "SIM_"))}
    out = subprocess.run(
        [*client, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=COMPOSE.parent,
    )
    assert out.returncode == 0, out.stderr
    missing = subprocess.run(  # a required secret left unset is refused, naming it
        [*client, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=COMPOSE.parent,
    )
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


# -- Kubernetes ----------------------------------------------------------------------------------

K8S_FILES = ["configmap.yaml", "secret.yaml", "deployment.yaml", "service.yaml", "pdb.yaml"]


def _k8s_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    tool = _tool("kubernetes-validate")
    return subprocess.run(
        [tool, "--strict", "--quiet", "-k", K8S_VERSION, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_k8s_manifests_validate_against_the_schema() -> None:
    out = _k8s_validate(*(DEPLOY / "k8s" / f for f in K8S_FILES))
    assert out.returncode == 0, out.stdout + out.stderr
    kustomize = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomize["resources"]) == sorted(K8S_FILES)
    (deploy,) = list(yaml.safe_load_all((DEPLOY / "k8s" / "deployment.yaml").read_text()))
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["grpc"] == {"port": 50051, "service": "edgecut.v1.FleetService"}
    assert container["livenessProbe"]["grpc"]["port"] == 50051
    assert deploy["spec"]["replicas"] >= 2


def test_a_broken_manifest_fails_validation(tmp_path: Path) -> None:
    broken = tmp_path / "deployment.yaml"
    broken.write_text(
        (DEPLOY / "k8s" / "deployment.yaml").read_text().replace("replicas: 2", "replicas: two")
    )
    assert _k8s_validate(broken).returncode != 0


# -- the dashboard and /metrics in every deployment ------------------------------------------------


def _server_settings(yaml_text: str, environ: dict[str, str], tmp_path: Path) -> ServerSettings:
    """What `edgecut server` would make of a deployment's config file and environment."""
    cfg = tmp_path / "server.yaml"
    cfg.write_text(yaml_text)
    return load_settings(cfg, environ=environ)


def _exposes_the_dashboard(s: ServerSettings) -> None:
    host, port = split_host_port(s.http)
    assert host == "0.0.0.0" and port == 8080, s.http  # reachable by browsers and scrapers
    roles = {u.role for u in s.http_users.values() if isinstance(u, HttpUser)}
    assert roles == {"operator", "viewer"}, s.http_users  # an operator, and a read-only scraper
    assert s.http_allowed_hosts, "browsers must reach it by a name the dashboard answers to"
    assert s.operator_key is not None  # a provisioned key, not one generated per replica


def test_k8s_serves_the_dashboard_and_metrics_with_one_shared_operator_key(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())["data"]["server.yaml"]
    secrets = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "secret.yaml").read_text())
    }
    env = dict(secrets["edgecut-server"]["stringData"])
    s = _server_settings(config, env, tmp_path)
    _exposes_the_dashboard(s)
    (deploy,) = list(yaml.safe_load_all((DEPLOY / "k8s" / "deployment.yaml").read_text()))
    pod = deploy["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    # the operator key is a Secret mounted into every replica where the config looks for it
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (name,) = [n for n, path in mounts.items() if str(s.operator_key).startswith(path + "/")]
    secret = volumes[name]["secret"]["secretName"]
    assert s.operator_key is not None and s.operator_key.name in secrets[secret]["stringData"]
    service = yaml.safe_load((DEPLOY / "k8s" / "service.yaml").read_text())
    assert {"name": "http", "port": 8080, "targetPort": "http"}.items() <= next(
        p for p in service["spec"]["ports"] if p["name"] == "http"
    ).items()


def test_compose_serves_the_dashboard_with_the_operator_key_made_once(tmp_path: Path) -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    passwords = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    keys = set()
    for name in ("server-1", "server-2"):
        service = doc["services"][name]
        env = {
            k: re.sub(r"\$\{(\w+)[^}]*\}", lambda m: passwords[m[1]], str(v))
            for k, v in service["environment"].items()
        }
        s = _server_settings("", env, tmp_path)
        _exposes_the_dashboard(s)
        keys.add(s.operator_key)
        assert any(p.endswith(":8080") for p in service["ports"]), service["ports"]
    assert keys == {Path("/pki/operator.key")}  # one key on the shared volume, not one per replica
    make_pki = (DEPLOY / "docker" / "make-pki.sh").read_text()
    assert "/pki/operator.key" in make_pki and "operator-public.txt" in make_pki
    sim_agents = (DEPLOY / "docker" / "sim-agents.sh").read_text()
    assert "operator_keys" in sim_agents and "operator-public.txt" in sim_agents  # the agents trust that key


def test_systemd_server_config_serves_the_dashboard(tmp_path: Path) -> None:
    env = {
        "EDGECUT_HTTP_USERS": '{"ops": {"password": "a", "role": "operator"}, "p": {"password": "b", "role": "viewer"}}'
    }
    unit = (DEPLOY / "systemd" / "edgecut-server.service").read_text()
    assert (
        "EDGECUT_HTTP_USERS" in unit
        and "EDGECUT_HTTP_USERS" in (DEPLOY / "systemd" / "server.yaml").read_text()
    )
    _exposes_the_dashboard(_server_settings((DEPLOY / "systemd" / "server.yaml").read_text(), env, tmp_path))
    # and without the users the server refuses to start, saying why
    with pytest.raises(ConfigError, match="beyond this machine, with no credentials"):
        _server_settings((DEPLOY / "systemd" / "server.yaml").read_text(), {}, tmp_path)
