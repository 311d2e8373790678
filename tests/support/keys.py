"""Test keys, made once per test process: the fleet's signing key and an operator's command key."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from edgecut import signing
from edgecut.envelopes import now_ms, sign_command
from edgecut.v1 import fleet_pb2


@functools.cache
def _dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgecut-test-keys-"))


@functools.cache
def fleet_key_path() -> Path:
    path = _dir() / "fleet-signing.key"
    signing.generate(path)
    return path


def fleet_key() -> signing.SigningKey:
    return signing.load_signing_key(fleet_key_path())


@functools.cache
def operator_key() -> signing.SigningKey:
    return signing.generate(operator_key_path())


def operator_key_path() -> Path:
    return _dir() / "operator.key"


def other_key() -> signing.SigningKey:
    """A key nobody trusts (an attacker's)."""
    return signing.SigningKey(signing.Ed25519PrivateKey.generate())


def signed_command(device_id: str, key: signing.SigningKey | None = None, **action: object) -> bytes:
    """A serialized Command for `device_id` (e.g. set_tasks=SetTasks(...)), signed by the operator key."""
    cmd = fleet_pb2.Command(device_id=device_id, command_id=f"cmd-{now_ms()}-{id(action)}", **action)  # type: ignore[arg-type]
    return sign_command(key or operator_key(), cmd).SerializeToString()
