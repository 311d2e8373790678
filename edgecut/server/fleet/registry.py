"""Fleet registry: devices (needs, resources, state, telemetry, current model), swap history and jobs.

SQLite under the state dir by default, PostgreSQL (or any SQLAlchemy URL) by configuration. Jobs
are persisted here so queued work survives a restart; `job_waiters` remembers which device asked
for which build so the answer can still be published after a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    select,
)
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from edgecut.errors import ConfigError

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
JOB_STATES = (QUEUED, RUNNING, DONE, FAILED)


def _now() -> float:
    return time.time()


class _Base(DeclarativeBase):
    pass


class DeviceRow(_Base):
    __tablename__ = "devices"
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    needs_tasks: Mapped[list[str]] = mapped_column(JSON, default=list)
    needs_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    needs_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    device_class: Mapped[str] = mapped_column(String(64), default="")
    budget: Mapped[str] = mapped_column(String(128), default="")
    build_key: Mapped[str] = mapped_column(String(64), default="")
    offered_artifact_id: Mapped[str] = mapped_column(String(64), default="")
    artifact_id: Mapped[str] = mapped_column(String(64), default="")  # what the device says it serves
    serving_tasks: Mapped[list[str]] = mapped_column(JSON, default=list)
    telemetry: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_seen: Mapped[float] = mapped_column(Float, default=_now)


class SwapRow(_Base):
    __tablename__ = "swaps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    artifact_id: Mapped[str] = mapped_column(String(64))
    previous_artifact_id: Mapped[str] = mapped_column(String(64), default="")
    ok: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, default="")
    load_ms: Mapped[float] = mapped_column(Float, default=0.0)
    at: Mapped[float] = mapped_column(Float, default=_now)


class JobRow(_Base):
    __tablename__ = "jobs"
    build_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    stage: Mapped[str] = mapped_column(String(32), default="queued")
    fraction: Mapped[float] = mapped_column(Float, default=0.0)
    artifact_id: Mapped[str] = mapped_column(String(64), default="")
    error_code: Mapped[str] = mapped_column(String(32), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[float] = mapped_column(Float, default=_now)
    updated: Mapped[float] = mapped_column(Float, default=_now)


class WaiterRow(_Base):
    __tablename__ = "job_waiters"
    build_key: Mapped[str] = mapped_column(ForeignKey("jobs.build_key"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    needs_seq: Mapped[int] = mapped_column(BigInteger, default=0)


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
            _Base.metadata.create_all(self._engine)
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
            )
            s.add(row)
        row.last_seen = _now()
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
    ) -> None:
        with self._tx() as s:
            row = self._device(s, device_id)
            row.needs_tasks, row.needs_seq, row.needs_json = list(tasks), seq, needs
            row.resources, row.device_class, row.budget = resources, device_class, budget
            row.last_error = ""

    def record_offer(self, device_id: str, build_key: str, artifact_id: str) -> None:
        with self._tx() as s:
            row = self._device(s, device_id)
            row.build_key, row.offered_artifact_id = build_key, artifact_id

    def record_device_error(self, device_id: str, message: str) -> None:
        with self._tx() as s:
            self._device(s, device_id).last_error = message

    def record_state(
        self, device_id: str, status: str, artifact_id: str, tasks: list[str], agent_version: str
    ) -> None:
        with self._tx() as s:
            row = self._device(s, device_id)
            row.status, row.artifact_id, row.serving_tasks = status, artifact_id, list(tasks)
            row.agent_version = agent_version

    def record_telemetry(self, device_id: str, telemetry: dict[str, Any]) -> None:
        with self._tx() as s:
            row = self._device(s, device_id)
            row.telemetry = telemetry
            if telemetry.get("artifact_id"):
                row.artifact_id = str(telemetry["artifact_id"])

    def record_swap(
        self, device_id: str, artifact_id: str, ok: bool, reason: str, previous: str, load_ms: float
    ) -> None:
        with self._tx() as s:
            row = self._device(s, device_id)
            if ok:
                row.artifact_id = artifact_id
            s.add(
                SwapRow(
                    device_id=device_id,
                    artifact_id=artifact_id,
                    ok=ok,
                    reason=reason,
                    previous_artifact_id=previous,
                    load_ms=load_ms,
                    at=_now(),
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
                        created=_now(),
                        updated=_now(),
                        attempts=0,
                    )
                )
                return
            row.state, row.spec, row.stage, row.fraction = QUEUED, spec, "queued", 0.0
            row.artifact_id = row.error_code = row.error_message = ""
            row.updated = _now()

    def update_job(self, build_key: str, **fields: Any) -> None:
        unknown = set(fields) - {"state", "stage", "fraction", "artifact_id", "error_code", "error_message"}
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
            row.updated = _now()

    def job(self, build_key: str) -> JobRecord | None:
        with self._tx() as s:
            row = s.get(JobRow, build_key)
            return None if row is None else _job(row)

    def jobs(self, states: tuple[str, ...] = JOB_STATES) -> list[JobRecord]:
        with self._tx() as s:
            q = select(JobRow).where(JobRow.state.in_(states)).order_by(JobRow.created)
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


def _row_dict(row: _Base) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
