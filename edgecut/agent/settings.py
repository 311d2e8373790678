"""The agent's settings: one pydantic model read from a YAML file, then overridden by `EDGECUT_*`.

Unknown keys are rejected; every problem becomes one ConfigError naming the key, value and reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from edgecut import topics
from edgecut.errors import ConfigError

ENV_PREFIX = "EDGECUT_"


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str = Field(title="Device id", description="unique in the fleet; used in MQTT topics")
    broker_url: str = Field(
        "mqtt://127.0.0.1:1883", title="MQTT broker", description="mqtt://host:port or mqtts://host:port"
    )
    server_address: str = Field(
        "", title="Fleet gRPC server", description="host:port for DownloadModel; '' = the one in ModelReady"
    )
    state_dir: Path = Field(Path("/var/lib/edgecut"), title="State directory", description="tasks and models")
    listen: str = Field(
        "127.0.0.1:50061", title="Local API", description="host:port (port 0 = any) or unix:/path/to.sock"
    )
    tasks: list[str] = Field(
        default_factory=list, title="Initial tasks", description="until the user sets some"
    )
    mqtt_username: str = Field("", description="broker user ('' = anonymous)")
    mqtt_password: SecretStr = Field(SecretStr(""), description="broker password")
    mqtt_ca_file: Path | None = Field(None, description="CA for mqtts:// (None = system CAs)")
    mqtt_cert_file: Path | None = Field(None, description="client certificate for the broker (PEM)")
    mqtt_key_file: Path | None = Field(None, description="client key for the broker (PEM)")
    grpc_ca_file: Path | None = Field(None, description="CA for a TLS gRPC server (None = plaintext)")
    grpc_cert_file: Path | None = Field(None, description="device certificate for mutual TLS (PEM)")
    grpc_key_file: Path | None = Field(None, description="device key for mutual TLS (PEM)")
    # --- trust (docs/security.md) ---
    fleet_keys: list[str] = Field(
        default_factory=list,
        title="Fleet public keys",
        description="ed25519:BASE64 keys whose signed manifests are trusted; list old and new while rotating",
    )
    fleet_keys_file: Path | None = Field(None, description="file with more fleet keys, one per line")
    operator_keys: list[str] = Field(
        default_factory=list, description="ed25519:BASE64 keys whose signed commands are obeyed"
    )
    operator_keys_file: Path | None = Field(None, description="file with more operator keys, one per line")
    command_auth: Literal["signed", "broker_acl"] = Field(
        "signed",
        description="signed: commands need an operator signature; broker_acl: the broker's ACL vouches",
    )
    command_max_age_s: float = Field(3600.0, gt=0, le=7 * 86400, description="older commands are ignored")
    needs_retry_s: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="re-send the needs when unanswered this long (doubling, x10 at most)",
    )
    download_retry_max_s: float = Field(
        60.0, ge=1, le=3600, description="ceiling of the backoff between download retries (never gives up)"
    )
    infer_max_batch: int = Field(16, ge=1, le=4096, description="largest batch the local API accepts")
    infer_max_bytes: int = Field(
        16 << 20, ge=1024, le=1 << 30, description="largest input tensor (bytes) the local API accepts"
    )
    telemetry_interval_s: float = Field(30.0, gt=0, description="seconds between Telemetry messages")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive")
    reconnect_max_s: float = Field(30.0, ge=1, description="ceiling of the reconnect backoff")
    ort_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0 = onnxruntime default)")
    providers: Literal["auto"] | list[str] = Field(
        "auto",
        title="Execution providers",
        description="onnxruntime providers, best first (e.g. [tensorrt, cuda, cpu]); auto = what the "
        "build offers; the CPU provider is always the fallback",
    )
    max_latency_ms: float = Field(0.0, ge=0, description="latency target sent in needs (0 = none)")
    # --- precisions (issue 30; edgecut/agent/precision.py) ---
    variants: bool = Field(
        True,
        title="Time precision variants",
        description="download the offer's other precisions (int8), time them here, serve the faster one",
    )
    variant_max_loss: float = Field(
        1.0,
        ge=0,
        le=100,
        description="a variant may serve when no task loses more than this many points against fp32",
    )
    variant_timing_s: float = Field(3.0, gt=0, le=120, description="time spent timing a model's precisions")
    variant_min_speedup: float = Field(
        1.05, ge=1, le=10, description="a variant serves only when this many times faster than fp32"
    )
    # --- adaptation to what this device sees (issue 31; edgecut/agent/adapt.py) ---
    adapt: bool = Field(
        False,
        title="Adapt to this device's inputs",
        description="on: measure the serving model's normalisation statistics on real inputs with its "
        "signed statistics companion and send a summary (never images) on the stats topic",
    )
    adapt_batch: int = Field(16, ge=2, le=256, description="recent inputs held in memory per statistics run")
    adapt_every: int = Field(
        64,
        ge=2,
        le=1 << 16,
        description="a statistics run measures a uniform sample of adapt_batch of every this many inputs "
        "served (consecutive frames of one scene make a poor batch); below adapt_batch counts as adapt_batch",
    )
    adapt_images: int = Field(256, ge=16, le=1 << 20, description="inputs measured per summary sent")
    adapt_cpu_share: float = Field(
        0.05, gt=0, le=1, description="most of one core the statistics may use; inputs are skipped beyond it"
    )
    adapt_min_agreement: float = Field(
        0.5, ge=0, le=1, description="a new model agreeing less with the one it replaced is rolled back"
    )
    adapt_max_entropy_rise: float = Field(
        0.15, ge=0, le=1, description="a new model this much less sure (normalised entropy) is rolled back"
    )
    device_class: str = Field(
        "",
        pattern=r"^[a-z0-9_.-]{0,32}$",
        title="Device class",
        description="rpi4, jetson-nano, x86, ... sent in needs for the server's budget ('' = probed)",
    )

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, v: str) -> str:
        if not topics.DEVICE_ID.fullmatch(v):
            raise ValueError("use 1-64 letters, digits, '_', '-' or '.' (it becomes an MQTT topic level)")
        return v

    @field_validator("fleet_keys", "operator_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        from edgecut.signing import parse_public_key

        for i, text in enumerate(v):
            try:
                parse_public_key(text, f"entry {i}")
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        return v

    @field_validator("providers", mode="before")
    @classmethod
    def _providers(cls, v: Any) -> Any:
        from .providers import AUTO, canonical

        if isinstance(v, str):  # `auto`, or names as in EDGECUT_PROVIDERS=cuda,cpu
            v = [name for name in v.split(",") if name.strip()]
        if not isinstance(v, list):
            return v  # pydantic says what is wrong with it
        if [str(name).strip().lower() for name in v] == [AUTO]:
            return AUTO
        if not v:
            raise ValueError("name at least one provider, or use auto")
        return [canonical(str(name)) for name in v]

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, v: str) -> str:
        if not re.match(r"^mqtts?://[^:/]+(:\d+)?/?$", v):
            raise ValueError("expected mqtt://host:port or mqtts://host:port")
        return v


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in AgentSettings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        # lists come as "seg,depth"; everything else is parsed by pydantic from the string
        lists = ("tasks", "fleet_keys", "operator_keys")
        out[name] = [t.strip() for t in raw.split(",") if t.strip()] if name in lists else raw
    return out


def load_settings(
    path: Path | None, environ: dict[str, str] | None = None, **overrides: Any
) -> AgentSettings:
    """YAML file (optional) < EDGECUT_* variables < explicit overrides (e.g. from the command line)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, not {type(loaded).__name__}")
        data.update(loaded)
    data.update(_env_overrides(dict(os.environ if environ is None else environ)))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return AgentSettings.model_validate(data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(root)"
            value = "" if err["type"] == "missing" else f" = {err.get('input')!r}"
            reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {key}{value}: {reason}")
        raise ConfigError(f"invalid agent config{where}:\n" + "\n".join(lines)) from exc
