"""The dashboard's operator commands: set tasks, pin, lift the pin, roll back; acks and the audit log.

(`edgecut command` sends one from a shell through its own MQTT connection: commands/client.py. The desk sends
through the server's bridge, keeps every command and its outcome, and says who asked.)

`CommandDesk.send` checks the request (a known device, a known action, tasks the base model has),
signs the `Command` with the operator key (edgecut.envelopes: the agent obeys only signed, fresh,
unseen commands), records it (state `sent`) with an audit entry saying who asked and from where, and
publishes it on the device's command topic with QoS 1 and **never retained**: a retained command would
be obeyed again after every reconnect. Nothing here ever publishes a command again — not after a
restart, not on a reconnect — so a restart replays nothing.

The device answers each command with a `CommandAck` on its ack topic; the desk (a fleet observer)
marks the command `ok` or `failed` with the device's reason, audits it, and emits a `command` event
(the dashboard shows it when it lands). An ack for a command sent to another device, or for an unknown
command id that is not a command id, is ignored: a device may only answer for itself. A command the
desk did not send (`edgecut command` publishes through its own MQTT connection) is recorded from its
ack, as sent "outside the dashboard", so the audit log and the metrics count it too.

The operator key is `operator_key` in the server settings, else `<state_dir>/operator.key`, generated
on first start with its public half in `operator.pub` (the line agents list in `operator_keys`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from edgecut import signing, topics
from edgecut.envelopes import open_command, sign_command
from edgecut.errors import EdgecutError
from edgecut.server.fleet.commands import client as commands
from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.state.commands import SENT
from edgecut.server.fleet.state.registry import Registry
from edgecut.signing import Keyring, SignatureError
from edgecut.v1 import fleet_pb2 as pb

logger = logging.getLogger(__name__)

ACTIONS = ("set_tasks", "pin", "unpin", "rollback")
OK, FAILED = "ok", "failed"
KEY_FILE, PUB_FILE = "operator.key", "operator.pub"
MAX_TASKS = 32
_DEVICE_ID = topics.DEVICE_ID  # as the agent's settings allow: one MQTT topic level
_COMMAND_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex, what commands.build makes
OUTSIDE = "outside the dashboard"  # who sent a command the desk learns of from its ack (edgecut command)

Publish = Callable[[str, bytes], None]  # device id, serialized Command


class CommandError(EdgecutError):
    """A command the desk refuses to send; the message says what and why (HTTP 4xx)."""

    exit_code = 2

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def open_operator_key(path: Path | None, state_dir: Path) -> signing.SigningKey:
    """The operator key, generated on first start (with its public line beside it)."""
    from edgecut.server.fleet.link.signer import open_key  # the same key files as the fleet's signing key

    return open_key(path, state_dir, KEY_FILE, PUB_FILE, "operator command key")


class CommandDesk:
    def __init__(
        self,
        registry: Registry,
        key: signing.SigningKey,
        publish: Publish,
        known_tasks: Callable[[], list[str]],
        observers: Observers | None = None,
    ) -> None:
        self.registry, self.key, self.publish = registry, key, publish
        self.known_tasks = known_tasks
        self.observers = observers or Observers()
        self._lock = threading.Lock()

    # -- sending -------------------------------------------------------------------------------

    def send(
        self, device_id: str, action: str, who: str, origin: str = "", tasks: list[str] | None = None
    ) -> dict[str, Any]:
        """Sign, record and publish one command; returns its record (state `sent`)."""
        try:
            cmd, args = self._command(device_id, action, tasks)
        except CommandError as exc:
            self.refuse(who, origin, action, device_id, str(exc))
            raise
        signed = sign_command(self.key, cmd)
        payload = signed.SerializeToString()
        if len(payload) > topics.MAX_PAYLOAD:
            raise CommandError(
                f"the command is {len(payload)} bytes, above the broker limit {topics.MAX_PAYLOAD}"
            )
        now = time.time()
        row = {
            "command_id": cmd.command_id,
            "device_id": device_id,
            "action": action,
            "args": args,
            "who": who[:128],
            "origin": origin[:128],
            "created": now,
            "state": SENT,
            "message": "",
            "acked_at": None,
        }
        self.registry.commands.add(row)
        self._audit(who, origin, SENT, action, device_id, cmd.command_id, _describe(args))
        self.publish(device_id, payload)  # QoS 1, never retained (MqttBridge.publish_command)
        logger.info("operator %s sent %s to %s (%s)", who, action, device_id, cmd.command_id)
        self._event(row)
        return row

    def refuse(self, who: str, origin: str, action: str, device_id: str, reason: str) -> None:
        """Audit a request that is not sent (bad input, or a user who may not command)."""
        self._audit(who, origin, "refused", action[:16], device_id[:128], "", reason)

    def _command(
        self, device_id: str, action: str, tasks: list[str] | None
    ) -> tuple[pb.Command, dict[str, Any]]:
        if not _DEVICE_ID.fullmatch(device_id):
            raise CommandError(
                f"device id {device_id[:80]!r} is not valid: 1-64 letters, digits, '_', '-' or '.'"
            )
        if self.registry.devices.get(device_id) is None:
            raise CommandError(f"no device {device_id!r} in the registry", status=404)
        if action not in ACTIONS:
            raise CommandError(f"unknown action {action[:32]!r}: use one of {', '.join(ACTIONS)}")
        args: dict[str, Any] = {}
        if action == "set_tasks":
            args["tasks"] = self._tasks(tasks or [])
        elif tasks:
            raise CommandError(f"{action} takes no tasks")
        cmd = commands.build(device_id, action.replace("_", "-"), args.get("tasks"))
        return cmd, args

    def _tasks(self, tasks: list[str]) -> list[str]:
        clean: list[str] = []
        for t in tasks:
            name = str(t).strip().lower()
            if name and name not in clean:
                clean.append(name)
        if not clean:
            raise CommandError("set_tasks needs at least one task, e.g. seg,depth")
        if len(clean) > MAX_TASKS:
            raise CommandError(f"set_tasks takes at most {MAX_TASKS} tasks, not {len(clean)}")
        known = self.known_tasks()
        unknown = [t for t in clean if t not in known]
        if unknown:
            raise CommandError(
                f"unknown task {unknown[0][:32]!r}: this fleet's model knows {', '.join(known)}"
            )
        return clean

    # -- acks ----------------------------------------------------------------------------------

    def __call__(self, e: FleetEvent) -> None:
        if e.kind != "ack":
            return
        command_id = str(e.data.get("command_id", ""))
        ok = bool(e.data.get("ok"))
        reason = str(e.data.get("reason", ""))[:2000]
        # sent by `edgecut command` (its own MQTT connection) with this fleet's operator key: recorded
        # from the device's ack, which echoes the signed command, so the audit log and the metrics have
        # it too; a made-up id without that signature is not recorded
        outside = None
        known = bool(command_id) and self.registry.commands.get(command_id) is not None
        if command_id and not known and self._signed_here(e.data.get("command"), command_id, e.device_id):
            outside = {
                "command_id": command_id,
                "device_id": e.device_id,
                "action": _action(str(e.data.get("action", ""))),
                "args": {},
                "who": OUTSIDE,
                "origin": "mqtt",
                "created": e.at,
                "state": SENT,
                "message": "",
                "acked_at": None,
            }
        with self._lock:
            result, record = self.registry.commands.ack(
                command_id, e.device_id, OK if ok else FAILED, reason, e.at, outside
            )
        if result == "unknown":
            logger.warning(
                "device %s acked command %r it was not sent: ignored", e.device_id, command_id[:64]
            )
            return
        if record is None:  # a duplicate ack
            return
        if outside is not None:
            logger.info("device %s acked command %s sent by %s: recorded", e.device_id, command_id, OUTSIDE)
        self._audit(
            record["who"],
            record["origin"],
            record["state"],
            record["action"],
            e.device_id,
            command_id,
            reason,
        )
        self._event(record)

    def _signed_here(self, echoed: Any, command_id: str, device_id: str) -> bool:
        """Whether an ack's echoed command is one this fleet's operator key signed for that device."""
        if not isinstance(echoed, dict) or not _COMMAND_ID.fullmatch(command_id):
            return False
        try:
            inner = open_command(Keyring([self.key.public]), json_format.ParseDict(echoed, pb.Command()))
        except (SignatureError, json_format.ParseError, ValueError, TypeError):
            return False
        return inner.command_id == command_id and inner.device_id == device_id

    # -- reads ---------------------------------------------------------------------------------

    def recent(self, device_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Commands, newest first."""
        return self.registry.commands.recent(device_id, limit)

    def get(self, command_id: str) -> dict[str, Any] | None:
        return self.registry.commands.get(command_id)

    def audit(self, limit: int = 100, device_id: str | None = None) -> list[dict[str, Any]]:
        """The audit log, newest first."""
        return self.registry.commands.audit_log(limit, device_id)

    def _audit(
        self, who: str, origin: str, event: str, action: str, device_id: str, command_id: str, detail: str
    ) -> None:
        self.registry.commands.audit(who, origin, event, action, device_id, command_id, detail)

    def _event(self, row: dict[str, Any]) -> None:
        data = {
            "command_id": row["command_id"],
            "action": row["action"],
            "result": row["state"],
            "who": row["who"],
            "id": row["command_id"],
        }
        self.observers.emit(FleetEvent("command", row["device_id"], data))


def _action(acked: str) -> str:
    """The desk's name for an action a device acked (set-tasks or set_tasks), else 'unknown'."""
    name = acked.replace("-", "_")
    return name if name in ACTIONS else "unknown"


def _describe(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in args.items())
