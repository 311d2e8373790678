"""The config of every agent the project starts (demo, benches, deploy/arm64): the fleet key pinned.

An agent without the fleet's public key refuses every model offer (docs/security.md), so a config
written without one only shows up as a device that never gets a model. Every place that writes an
agent config goes through `agent_config`: it needs the key, checks it parses, and validates the whole
config with the agent's own settings model, so a bad one fails here, before any process starts.
`edgecut agent config` is the same helper for people provisioning a device by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edgecut.errors import ConfigError
from edgecut.signing import parse_public_key

from .settings import AgentSettings

__all__ = ["agent_config", "read_fleet_key", "write_agent_config"]


def read_fleet_key(path: Path) -> str:
    """The `ed25519:...` line of a server's fleet-signing.pub (or `edgecut keygen`'s output)."""
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise ConfigError(f"cannot read the fleet key {path}: {exc.strerror}") from exc
    if not lines:
        raise ConfigError(f"the fleet key file {path} is empty")
    return lines[0]


def agent_config(fleet_key: str, /, **settings: Any) -> dict[str, Any]:
    """`settings` plus `fleet_keys: [fleet_key]`, validated as the agent will read them."""
    key = fleet_key.strip()
    if not key:
        raise ConfigError(
            "an agent needs the fleet's public key (fleet_keys), else it refuses every model offer"
        )
    parse_public_key(key, "the fleet key")
    doc: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}
    # keys given by --set (a rotation's old and new key) stay beside the one pinned here
    doc["fleet_keys"] = [key] + [k for k in doc.get("fleet_keys") or [] if str(k).strip() != key]
    try:
        AgentSettings.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"agent config {where}: {first['msg']}") from None
    return doc


def write_agent_config(path: Path, fleet_key: str, /, **settings: Any) -> dict[str, Any]:
    """Write the validated config to `path` (YAML) and return it."""
    doc = agent_config(fleet_key, **settings)
    write_private(path, yaml.safe_dump(doc, sort_keys=False))
    return doc


def write_private(path: Path, text: str) -> None:
    """Write a config readable by its owner only: it may hold a broker password or key paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode on open
