"""deploy/ files are checked by the tools that read them: systemd-analyze for the units, the Compose
schema (and `docker compose config` where a Compose client exists) for compose.yaml, the Kubernetes
schemas (bundled by kubernetes-validate: no network) for deploy/k8s. Each check also runs on a broken
copy, to show it can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
