"""Operator commands and their audit trail as rows: commands/desk.py signs, sends and judges acks;
this keeps what was sent, what each device answered, and who did what."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from edgecut.server.fleet.state.database import Database, row_dict
from edgecut.server.fleet.state.schema import AuditRow, CommandRow

SENT = "sent"  # a command's state until its device acks it (then ok or failed)


class Commands:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, row: dict[str, Any]) -> None:
        with self.db.transaction() as s:
            s.add(CommandRow(**row))

    def ack(
        self,
        command_id: str,
        device_id: str,
        state: str,
        message: str,
        at: float,
        outside: dict[str, Any] | None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Record a device's ack: ("acked", the command), ("duplicate", None) for a second ack, or
        ("unknown", None) when it names no command sent to that device. `outside`: the row to record
        first for a command this fleet signed but another process sent (`edgecut command`)."""
        with self.db.transaction() as s:
            row = s.get(CommandRow, command_id) if command_id else None
            if row is None and outside is not None:
                row = CommandRow(**outside)
                s.add(row)
            elif row is None or row.device_id != device_id:
                return "unknown", None
            if row.state != SENT:  # QoS 1 delivers at least once
                return "duplicate", None
            row.state, row.message, row.acked_at = state, message, at
            return "acked", row_dict(row)

    def get(self, command_id: str) -> dict[str, Any] | None:
        with self.db.transaction() as s:
            row = s.get(CommandRow, command_id)
            return None if row is None else row_dict(row)

    def recent(self, device_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Commands, newest first."""
        with self.db.transaction() as s:
            q = select(CommandRow).order_by(CommandRow.created.desc()).limit(limit)
            if device_id is not None:
                q = q.where(CommandRow.device_id == device_id)
            return [row_dict(r) for r in s.scalars(q)]

    def audit(
        self, who: str, origin: str, event: str, action: str, device_id: str, command_id: str, detail: str
    ) -> None:
        with self.db.transaction() as s:
            s.add(
                AuditRow(
                    at=time.time(),
                    who=who[:128],
                    origin=origin[:128],
                    event=event,
                    action=action[:16],
                    device_id=device_id[:128],
                    command_id=command_id,
                    detail=detail[:2000],
                )
            )

    def audit_log(self, limit: int = 100, device_id: str | None = None) -> list[dict[str, Any]]:
        """The audit log, newest first."""
        with self.db.transaction() as s:
            q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
            if device_id is not None:
                q = q.where(AuditRow.device_id == device_id)
            return [row_dict(r) for r in s.scalars(q)]
