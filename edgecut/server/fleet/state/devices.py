"""Devices and what they report: needs, resources, state, telemetry, errors, command acks.

Every replica records the retained state of a new device at once: rows are inserted-or-ignored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgecut.server.fleet.state.database import Database, row_dict
from edgecut.server.fleet.state.schema import DeviceRow, now


class Devices:
    def __init__(self, db: Database) -> None:
        self.db = db

    def touch(self, s: Session, device_id: str) -> DeviceRow:
        """The device's row, created when new, marked seen now (inside the caller's transaction)."""
        row = s.get(DeviceRow, device_id)
        if row is None:
            s.execute(
                self.db.insert(DeviceRow)
                .values(device_id=device_id, last_seen=now())
                .on_conflict_do_nothing(index_elements=["device_id"])
            )
            row = s.get(DeviceRow, device_id)
            assert row is not None  # inserted above or by another replica
        row.last_seen = now()
        return row

    def record_needs(
        self,
        device_id: str,
        tasks: list[str],
        seq: int,
        needs: dict[str, Any],
        resources: dict[str, Any],
        device_class: str,
        budget: str,
        sent_ms: int = 0,
    ) -> bool:
        """Record the device's latest needs; False (nothing written) when they are older than the recorded.

        Older = a lower seq that was not sent later: a needs message delayed or redelivered behind a
        newer one. A lower seq sent *later* is a device whose state was reset, and counts as new.
        """
        with self.db.transaction() as s:
            row = self.touch(s, device_id)
            if seq < (row.needs_seq or 0) and not (sent_ms and sent_ms > (row.needs_sent_ms or 0)):
                return False
            row.needs_tasks, row.needs_seq, row.needs_json = list(tasks), seq, needs
            row.resources, row.device_class, row.budget = resources, device_class, budget
            row.needs_sent_ms = sent_ms
            row.last_error = ""
            return True

    def record_error(self, device_id: str, message: str) -> None:
        with self.db.transaction() as s:
            self.touch(s, device_id).last_error = message

    def record_state(
        self,
        device_id: str,
        status: str,
        artifact_id: str,
        tasks: list[str],
        agent_version: str,
        pinned_artifact_id: str = "",
    ) -> None:
        with self.db.transaction() as s:
            row = self.touch(s, device_id)
            row.status, row.artifact_id, row.serving_tasks = status, artifact_id, list(tasks)
            row.agent_version, row.pinned_artifact_id = agent_version, pinned_artifact_id

    def set_latency_slowdown(self, device_id: str, slowdown: float) -> None:
        with self.db.transaction() as s:
            self.touch(s, device_id).latency_slowdown = slowdown

    def record_command_ack(self, device_id: str, ack: dict[str, Any]) -> None:
        with self.db.transaction() as s:
            self.touch(s, device_id).last_command = ack

    def record_telemetry(self, device_id: str, telemetry: dict[str, Any]) -> None:
        with self.db.transaction() as s:
            row = self.touch(s, device_id)
            row.telemetry = telemetry
            if telemetry.get("artifact_id"):
                row.artifact_id = str(telemetry["artifact_id"])

    def get(self, device_id: str) -> dict[str, Any] | None:
        with self.db.transaction() as s:
            row = s.get(DeviceRow, device_id)
            return None if row is None else row_dict(row)

    def all(self) -> list[dict[str, Any]]:
        with self.db.transaction() as s:
            return [row_dict(r) for r in s.scalars(select(DeviceRow).order_by(DeviceRow.device_id))]
