"""Server settings: one pydantic model, read once at start-up.

Sources, later wins: defaults < YAML file (`--config`) < `EDGECUT_<FIELD>` environment variables <
command-line options. Unknown keys in the file are rejected; environment variables are matched by
field name only (other `EDGECUT_*` variables belong to the agent or the tools and are ignored). A bad
value raises `ConfigError` naming the key, the value and the reason (the CLI exits with code 2).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from edgecut.errors import ConfigError
from edgecut.server.fleet.jobs.quality_floor import QUICK_FLOOR
from edgecut.server.fleet.jobs.rollout_policy import RolloutSettings
from edgecut.server.fleet.link.broker import parse_broker_url
from edgecut.server.fleet.link.grpc_api import DEFAULT_CHUNK, MAX_CHUNK
from edgecut.server.fleet.policy.budget import DeviceClassBudget
from edgecut.server.fleet.policy.limits import LimitSettings
from edgecut.server.fleet.state.history import DEFAULT_KEEP_SAMPLES
from edgecut.server.spec import MIN_DELTA_M

ENV_PREFIX = "EDGECUT_"
_HOST_PATTERN = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$"
)


class BudgetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    classes: dict[str, DeviceClassBudget] = Field(
        default_factory=dict,
        title="device class -> budget row",
        description="added to / replacing rows of the default table (rpi3, rpi4, rpi5, jetson-nano, x86)",
    )


class HttpUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: SecretStr = Field(min_length=1, title="the user's password (HTTP Basic)")
    role: Literal["viewer", "operator"] = Field(title="viewer: reads only; operator: also sends commands")


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: Path | None = Field(default=None, title="base multi-task model checkpoint (.pt)")
    model: str | None = Field(
        default=None,
        title="model class of the checkpoint",
        description="a registered name, an edgecut.models entry point or module:Class; default: the one "
        "the checkpoint records",
    )
    calib_data: str | None = Field(
        default=None,
        title="calibration data",
        description="a folder of images, or 'synthetic' for edgecut's scenes; default: the data the "
        "checkpoint was trained on, else val_data's images (a model with neither is refused)",
    )
    min_delta_m: float = Field(
        default=MIN_DELTA_M,
        title="Δm floor (%)",
        description="a build whose Δm against the full model falls below it fails instead of shipping; "
        "off = no floor",
    )
    quick_min_delta_m: float = Field(
        default=QUICK_FLOOR,
        title="quick model's Δm floor (%)",
        description="a quick model (or refinement) whose Δm against the full model is below it is not "
        "offered while a refinement may still replace it: the device keeps its model and is told why; "
        "the refinement that passes is offered (and the key's last model once none is left to come); "
        "off = offer every quick model",
    )
    val_data: str | None = Field(
        default=None,
        title="validation data",
        description="a labelled folder to report each artifact's quality on; default: the calibration "
        "folder's val split, else synthetic scenes when calibrating on them and they label every task",
    )
    image_scale: float | None = Field(
        default=None, gt=0, title="divide float images of the folders by this (when not in [0, 1])"
    )
    train_data: str | None = Field(
        default=None,
        title="labelled training data for from-scratch candidates",
        description="'synthetic', a labelled folder, or 'off'; default: the reference's synthetic "
        "scenes when the calibration data is synthetic and they label every task. With it, a build's "
        "last refinement trains the narrowed architecture from scratch and ships when it measures better",
    )
    scratch_seconds: float = Field(
        default=240.0, gt=0, le=86400, title="time a from-scratch candidate's training is fitted to (s)"
    )
    broker: str = Field(default="mqtt://127.0.0.1:1883", title="MQTT broker URL; empty disables MQTT")
    grpc: str = Field(default="127.0.0.1:50051", title="gRPC listen address (host:port, port 0 = any)")
    public_grpc: str = Field(
        default="", title="gRPC address told to devices", description="default: the bound listen address"
    )
    state_dir: Path = Field(
        default=Path(".edgecut/server"), title="registry, artifacts and job scratch space"
    )
    registry_url: str = Field(
        default="",
        title="registry database URL",
        description="sqlite:///path (default: under state_dir) or postgresql://user@host/db (replicas)",
    )
    store_url: str = Field(
        default="",
        title="artifact store URL or directory",
        description="a directory, file:///dir or s3://bucket/prefix (default: state_dir/artifacts)",
    )
    workers: int = Field(default=1, ge=1, le=64, title="concurrent builds (each is CPU-heavy)")
    mqtt_lanes: int = Field(
        default=4,
        ge=0,
        le=64,
        title="threads handling device messages, each device's in order (0 = on the MQTT client's thread)",
        description="overlaps the database round trips of many devices' messages: docs/reliability.md",
    )
    refine_workers: int = Field(
        default=1,
        ge=0,
        le=16,
        title="concurrent refinements of delivered models (progressive delivery; 0 = quick models only)",
    )
    adapt_workers: int = Field(
        default=1,
        ge=0,
        le=16,
        title="concurrent adaptations to devices' statistics (issue 31; 0 = none)",
    )
    adapt_method: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_-]+$",
        title="adaptation method (cut/adapt.py: adabn, restyle, ...)",
        description="default: the one cut/adapt.py names its default",
    )
    adapt_max_loss: float = Field(
        default=0.5,
        ge=0.0,
        le=100.0,
        title="Δm points an adapted model may lose on the validation set as the device's camera shows it",
    )
    replica_id: str = Field(
        default="",
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]*$",
        title="this replica's name on the job leases",
        description="default: host name + a hash of state_dir, so a restarted server takes its jobs back at once",
    )
    lease_s: float = Field(
        default=30.0,
        ge=2.0,
        le=3600.0,
        title="job lease seconds",
        description="a replica that dies mid-build loses its job to another replica after this long",
    )
    job_poll_s: float = Field(
        default=1.0, gt=0.0, le=60.0, title="seconds between looks at the shared job queue and leases"
    )
    job_max_crashes: int = Field(
        default=3,
        ge=0,
        le=100,
        title="replica crashes or stalls one job may cause before it fails",
        description="a job whose lease holder died or stalled this often ends failed and its waiting "
        "devices are told (0 = no cap: retried forever)",
    )
    grpc_threads: int = Field(default=64, ge=4, le=1024, title="gRPC worker threads = max concurrent RPCs")
    chunk_size: int = Field(default=DEFAULT_CHUNK, ge=1024, le=MAX_CHUNK, title="DownloadModel chunk bytes")
    mqtt_protocol: Literal["3.1.1", "5"] = "3.1.1"
    mqtt_client_id: str = Field(default="", title="MQTT client id; default random per process")
    share_group: str = Field(
        default="edgecut",
        pattern=r"^[A-Za-z0-9_-]+$",
        title="shared subscription group prefix",
        description="one group per topic: {prefix}-needs, {prefix}-telemetry, {prefix}-swap",
    )
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings, title="rate limits, queue cap, store scrub")
    # --- trust (docs/security.md); keys and passwords are never logged ---
    signing_key: Path | None = Field(
        default=None,
        title="Ed25519 key (PEM) that signs model manifests",
        description="default: state_dir/fleet-signing.key, generated on first start",
    )
    grpc_tls_cert: Path | None = Field(
        default=None, title="gRPC server certificate chain (PEM); none = plaintext"
    )
    grpc_tls_key: Path | None = Field(default=None, title="gRPC server private key (PEM)")
    grpc_client_ca: Path | None = Field(
        default=None,
        title="CA for device certificates: set = mutual TLS",
        description="devices must present a certificate it signed; its common name is the device id",
    )
    mqtt_ca_file: Path | None = Field(
        default=None, title="CA of the broker's certificate for mqtts:// (none = system CAs)"
    )
    mqtt_cert_file: Path | None = Field(default=None, title="client certificate for the broker (PEM)")
    mqtt_key_file: Path | None = Field(default=None, title="client key for the broker (PEM)")
    mqtt_username: str = Field(default="", title="broker user (or user:pass@ in the broker URL)")
    mqtt_password: SecretStr = Field(default=SecretStr(""), title="broker password")
    http: str = Field(
        default="",
        title="dashboard, JSON API and /metrics listen address (host:port, port 0 = any); empty = off",
    )
    telemetry_samples: int = Field(
        default=DEFAULT_KEEP_SAMPLES, ge=1, le=1_000_000, title="telemetry samples kept per device (charts)"
    )
    fp16_variants: bool = Field(
        default=False,
        title="also build an FP16 variant of every model, offered only to devices whose onnxruntime "
        "provider runs FP16 (CUDA, TensorRT); off: the CPU provider gains nothing from FP16",
    )
    latency_probe: bool = Field(
        default=True,
        title="at start, time probe ONNX models with onnxruntime to seed the latency cost model "
        "(max_latency_ms -> MACs; off: the budget table's macs_per_ms alone)",
    )
    latency_tolerance: float = Field(
        default=0.1, ge=0, le=10, title="a device more than this share past its max_latency_ms is drifting"
    )
    latency_sustain_s: float = Field(
        default=60.0, gt=0, le=86400, title="drifting this long (seconds) re-tailors the device"
    )
    latency_runs: int = Field(
        default=20, ge=0, le=10_000, title="onnxruntime runs to time each new artifact (0 = do not measure)"
    )
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    http_users: dict[str, SecretStr | HttpUser] = Field(
        default_factory=dict,
        title="dashboard users (HTTP Basic): name -> password (an operator), or -> {password, role}",
        description="role viewer reads, operator also sends commands; empty: anyone who reaches the port "
        "reads, and only this machine may send commands (then the dashboard must listen on loopback)",
    )
    http_allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=64,
        title="host names the dashboard answers to (the Host header), besides localhost and IP addresses",
        description="e.g. fleet.example.com or *.example.com; any other name is refused (DNS rebinding)",
    )
    http_tls_cert: Path | None = Field(
        default=None, title="dashboard HTTPS certificate chain (PEM); none = HTTP"
    )
    http_tls_key: Path | None = Field(default=None, title="dashboard HTTPS private key (PEM)")
    http_client_ca: Path | None = Field(
        default=None,
        title="CA for dashboard clients: set = mutual TLS",
        description="browsers and scrapers must present a certificate it signed",
    )
    operator_key: Path | None = Field(
        default=None,
        title="Ed25519 key (PEM) the dashboard signs operator commands with",
        description="default: state_dir/operator.key, generated on first start; agents list operator.pub",
    )

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, v: str) -> str:
        if v:
            try:
                parse_broker_url(v)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        return v

    @field_validator("min_delta_m", "quick_min_delta_m", mode="before")
    @classmethod
    def _floor_off(cls, v: Any) -> Any:
        # "off" (YAML reads a bare off as false, null as None): no floor
        if v is None or v is False or (isinstance(v, str) and v.strip().lower() == "off"):
            return -math.inf
        return v

    @field_validator("http")
    @classmethod
    def _http_address(cls, v: str) -> str:
        if v:
            split_host_port(v)
        return v

    @field_validator("http_allowed_hosts")
    @classmethod
    def _host_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _HOST_PATTERN.match(name):
                raise ValueError(
                    f"{name[:80]!r} is not a host name (e.g. fleet.example.com or *.example.com)"
                )
        return [name.lower() for name in v]

    @model_validator(mode="after")
    def _dashboard_beyond_loopback_needs_auth(self) -> ServerSettings:
        # mutual TLS counts only with HTTPS on (a client CA without a certificate serves plain HTTP)
        mutual_tls = bool(self.http_client_ca and self.http_tls_cert and self.http_tls_key)
        if self.http and not self.http_users and not mutual_tls:
            host = split_host_port(self.http)[0]
            if not _loopback_host(host):
                raise ValueError(
                    f"the dashboard would listen on {self.http}, beyond this machine, with no credentials: "
                    "set http_users (or HTTPS with http_client_ca), or listen on 127.0.0.1"
                )
        return self

    @property
    def registry(self) -> str:
        return self.registry_url or f"sqlite:///{(self.state_dir / 'registry.sqlite3').resolve()}"

    @property
    def store(self) -> str:
        return self.store_url or str(self.state_dir / "artifacts")

    @property
    def owner(self) -> str:
        """The replica id on leases: stable for one host and state dir unless set."""
        if self.replica_id:
            return self.replica_id
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()[:100]}:{digest}"


def load_settings(
    config: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerSettings:
    data: dict[str, Any] = {}
    if config is not None:
        data.update(_read_yaml(config))
    env = os.environ if environ is None else environ
    for name, info in ServerSettings.model_fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            factory = info.default_factory
            # nested settings and mappings (http_users) come as YAML/JSON in one variable
            nested = isinstance(factory, type) and (issubclass(factory, BaseModel) or factory in (dict, list))
            data[name] = _yaml_value(raw, ENV_PREFIX + name.upper()) if nested else raw
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ServerSettings.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {key} = {err.get('input')!r:.80}: {err['msg']}")
        where = (
            f" (file {config}, EDGECUT_* variables, options)" if config else " (EDGECUT_* variables, options)"
        )
        raise ConfigError("invalid server settings" + where + ":\n" + "\n".join(lines)) from exc


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(loaded).__name__}")
    return loaded


def _yaml_value(raw: str, name: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name} is not valid YAML/JSON: {exc}") from exc


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:8080`) -> (host, port); ValueError with the reason otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"expected host:port with a port from 0 to 65535, e.g. 127.0.0.1:8080, not {address!r}"
        )
    return host, int(port)


def _loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
