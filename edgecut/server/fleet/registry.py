"""Fleet registry: devices (needs, resources, state, telemetry, current model), swap history and jobs.

SQLite under the state dir by default, PostgreSQL (or any SQLAlchemy URL) by configuration. Jobs
are persisted here so queued work survives a restart; `job_waiters` remembers which device asked
for which build so the answer can still be published after a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, delete, event, select
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgecut.errors import ConfigError
from edgecut.server.fleet.schema import (
    DONE,
    FAILED,
    JOB_STATES,
    QUEUED,
    RUNNING,
    Base,
    DeviceRow,
    JobRow,
    OfferRow,
    SwapRow,
    WaiterRow,
    migrate,
    now,
)

__all__ = ["DONE", "FAILED", "JOB_STATES", "QUEUED", "RUNNING", "JobRecord", "Registry", "Waiter"]


@dataclass(frozen=True)
class JobRecord:
    build_key: str
    state: str
    spec: dict[str, Any]
    stage: str
    fraction: float
    artifact_id: str
    error_code: str
    error_message: str
    attempts: int
    parent_artifact_id: str = ""
    refinement: int = 0


@dataclass(frozen=True)
class Waiter:
    device_id: str
    needs_seq: int


def _job(row: JobRow) -> JobRecord:
    return JobRecord(
        row.build_key,
        row.state,
        dict(row.spec),
        row.stage,
        row.fraction,
        row.artifact_id,
        row.error_code,
        row.error_message,
        row.attempts,
        row.parent_artifact_id or "",
        row.refinement or 0,
    )


class Registry:
    """Thread-safe access to the fleet database; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        try:
            self._engine: SqlEngine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {}
            )
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"registry URL {url!r} is not usable: {exc}") from exc
        if sqlite:
            event.listen(self._engine, "connect", _sqlite_pragmas)
        # SQLite allows one writer at a time; serialising here avoids "database is locked" retries.
        self._lock: threading.Lock | None = threading.Lock() if sqlite else None
        try:
            migrate(self._engine)
        except SQLAlchemyError as exc:
            raise ConfigError(f"registry {url!r} cannot be opened: {exc}") from exc
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        if self._lock is None:
            with self._sessions.begin() as s:
                yield s
            return
        with self._lock, self._sessions.begin() as s:
            yield s

    def close(self) -> None:
        self._engine.dispose()

    @property
    def engine(self) -> SqlEngine:
        """The database engine, for modules that keep their own tables here (fleet/history.py)."""
        return self._engine

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One short transaction under the registry's writer lock, for those modules' tables."""
        with self._tx() as s:
            yield s

    # -- devices -------------------------------------------------------------------------------

    def _device(self, s: Session, device_id: str) -> DeviceRow:
        row = s.get(DeviceRow, device_id)
        if row is None:
            row = DeviceRow(
                device_id=device_id,
                needs_tasks=[],
                needs_json={},
                resources={},
                serving_tasks=[],
                telemetry={},
                provenance={},
                last_command={},
                needs_seq=0,
                needs_sent_ms=0,
            )
            s.add(row)
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
        with self._tx() as s:
            row = self._device(s, device_id)
            if seq < (row.needs_seq or 0) and not (sent_ms and sent_ms > (row.needs_sent_ms or 0)):
                return False
            row.needs_tasks, row.needs_seq, row.needs_json = list(tasks), seq, needs
            row.resources, row.device_class, row.budget = resources, device_class, budget
            row.needs_sent_ms = sent_ms
            row.last_error = ""
            return True

    def record_offer(
        self,
        device_id: str,
        build_key: str,
        artifact_id: str,
        needs_seq: int = 0,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        with self._tx() as s:
            row = self._device(s, device_id)
            row.build_key, row.offered_artifact_id = build_key, artifact_id
            s.add(
                OfferRow(
                    device_id=device_id,
                    artifact_id=artifact_id,
                    needs_seq=needs_seq,
                    manifest=manifest or {},
                    at=now(),
                )
            )

    def was_offered(self, device_id: str, artifact_id: str) -> bool:
        with self._tx() as s:
            q = select(OfferRow.id).where(
                OfferRow.device_id == device_id, OfferRow.artifact_id == artifact_id
            )
            return s.scalars(q.limit(1)).first() is not None

    def devices_offered(self, artifact_id: str) -> list[tuple[str, int]]:
        """(device id, needs seq) of the devices whose latest offer is `artifact_id`."""
        with self._tx() as s:
            q = select(DeviceRow).where(DeviceRow.offered_artifact_id == artifact_id)
            return [(r.device_id, r.needs_seq) for r in s.scalars(q)]

    def _offer_manifest(self, s: Session, device_id: str, artifact_id: str) -> dict[str, Any]:
        q = (
            select(OfferRow)
            .where(OfferRow.device_id == device_id, OfferRow.artifact_id == artifact_id)
            .order_by(OfferRow.id.desc())
            .limit(1)
        )
        offer = s.scalars(q).first()
        return dict(offer.manifest) if offer is not None else {}

    def record_device_error(self, device_id: str, message: str) -> None:
        with self._tx() as s:
            self._device(s, device_id).last_error = message

    def record_state(
        self,
        device_id: str,
        status: str,
        artifact_id: str,
        tasks: list[str],
        agent_version: str,
        pinned_artifact_id: str = "",
    ) -> None:
        with self._tx() as s:
            row = self._device(s, device_id)
            row.status, row.artifact_id, row.serving_tasks = status, artifact_id, list(tasks)
            row.agent_version, row.pinned_artifact_id = agent_version, pinned_artifact_id

    def record_command_ack(self, device_id: str, ack: dict[str, Any]) -> None:
        with self._tx() as s:
            self._device(s, device_id).last_command = ack

    def record_telemetry(self, device_id: str, telemetry: dict[str, Any]) -> None:
        with self._tx() as s:
            row = self._device(s, device_id)
            row.telemetry = telemetry
            if telemetry.get("artifact_id"):
                row.artifact_id = str(telemetry["artifact_id"])

    def record_swap(
        self,
        device_id: str,
        artifact_id: str,
        ok: bool,
        reason: str,
        previous: str,
        load_ms: float,
        verified_key_id: str = "",
    ) -> None:
        """A device's swap report; an ok one with a verified key makes its signed offer the provenance."""
        with self._tx() as s:
            row = self._device(s, device_id)
            if ok:
                row.artifact_id = artifact_id
                manifest = self._offer_manifest(s, device_id, artifact_id)
                row.provenance = (
                    {"verified_key_id": verified_key_id, "manifest": manifest} if verified_key_id else {}
                )
            s.add(
                SwapRow(
                    device_id=device_id,
                    artifact_id=artifact_id,
                    ok=ok,
                    reason=reason,
                    previous_artifact_id=previous,
                    load_ms=load_ms,
                    at=now(),
                )
            )

    def device(self, device_id: str) -> dict[str, Any] | None:
        with self._tx() as s:
            row = s.get(DeviceRow, device_id)
            return None if row is None else _row_dict(row)

    def devices(self) -> list[dict[str, Any]]:
        with self._tx() as s:
            return [_row_dict(r) for r in s.scalars(select(DeviceRow).order_by(DeviceRow.device_id))]

    def swaps(self, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
        with self._tx() as s:
            q = select(SwapRow).where(SwapRow.device_id == device_id).order_by(SwapRow.id.desc()).limit(limit)
            return [_row_dict(r) for r in s.scalars(q)]

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(self, build_key: str, spec: dict[str, Any]) -> None:
        """Insert or reset the job to queued (a failed or vanished-artifact key is built again)."""
        with self._tx() as s:
            row = s.get(JobRow, build_key)
            if row is None:
                s.add(
                    JobRow(
                        build_key=build_key,
                        state=QUEUED,
                        spec=spec,
                        stage="queued",
                        fraction=0.0,
                        created=now(),
                        updated=now(),
                        attempts=0,
                    )
                )
                return
            row.state, row.spec, row.stage, row.fraction = QUEUED, spec, "queued", 0.0
            row.artifact_id = row.error_code = row.error_message = ""
            row.updated = now()

    def update_job(self, build_key: str, **fields: Any) -> None:
        allowed = {"state", "stage", "fraction", "artifact_id", "error_code", "error_message"}
        unknown = set(fields) - allowed - {"parent_artifact_id", "refinement"}
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        if "state" in fields and fields["state"] not in JOB_STATES:
            raise ValueError(f"bad job state {fields['state']!r}")
        with self._tx() as s:
            row = s.get(JobRow, build_key)
            if row is None:
                return
            for k, v in fields.items():
                setattr(row, k, v)
            if fields.get("state") == RUNNING:
                row.attempts += 1
            row.updated = now()

    def job(self, build_key: str) -> JobRecord | None:
        with self._tx() as s:
            row = s.get(JobRow, build_key)
            return None if row is None else _job(row)

    def jobs(self, states: tuple[str, ...] = JOB_STATES) -> list[JobRecord]:
        with self._tx() as s:
            q = select(JobRow).where(JobRow.state.in_(states)).order_by(JobRow.created)
            return [_job(r) for r in s.scalars(q)]

    def jobs_with_artifact(self, artifact_id: str) -> list[JobRecord]:
        with self._tx() as s:
            q = select(JobRow).where(JobRow.artifact_id == artifact_id, JobRow.state == DONE)
            return [_job(r) for r in s.scalars(q)]

    def add_waiter(self, build_key: str, device_id: str, needs_seq: int) -> None:
        with self._tx() as s:
            row = s.get(WaiterRow, (build_key, device_id))
            if row is None:
                s.add(WaiterRow(build_key=build_key, device_id=device_id, needs_seq=needs_seq))
            else:
                row.needs_seq = needs_seq

    def take_waiters(self, build_key: str) -> list[Waiter]:
        """Remove and return the devices waiting for `build_key` (each is answered once)."""
        with self._tx() as s:
            rows = list(s.scalars(select(WaiterRow).where(WaiterRow.build_key == build_key)))
            s.execute(delete(WaiterRow).where(WaiterRow.build_key == build_key))
            return [Waiter(r.device_id, r.needs_seq) for r in rows]


def _row_dict(row: Base) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
