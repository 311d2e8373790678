"""Fleet registry: devices (needs, resources, state, telemetry, current model), swap history and jobs.

SQLite under the state dir by default (`sqlite:///path`), PostgreSQL for several server replicas
(`postgresql://user@host/db`, driven by psycopg 3). Jobs are persisted here so queued work survives a
restart; `job_waiters` remembers which device asked for which build so the answer can still be
published after a restart, by whichever replica finishes the build.

Single flight across replicas: a replica builds a key only while it holds that key's row in
`job_leases` (owner, expiry). `claim_job` takes a queued job, or a running one whose lease expired
(its replica died), with one atomic upsert whose condition is "no lease or an expired one", so two
replicas never both win; the builder renews the lease while it works and deletes it when done.

Fencing: every claim adds one to the job's `lease_gen` and hands it to the claimant, and a job's
result (`finish_job`, `finish_refinement`) and progress count only with the generation that holds the
job now, checked in the same transaction that writes them. A replica that stalled (SIGSTOP, a long GC
pause, a frozen VM) past its lease and then wakes up cannot record a job another replica took over.
A job whose holders died or stalled `max_crashes` times ends failed instead of being claimed again
(a build that crashes its replica is not retried forever); the devices waiting for it are told. Rows
are added with insert-or-ignore/upsert statements, so replicas writing the same device at once do
not collide. Times in lease decisions are the database's clock on PostgreSQL, so replicas on hosts
whose clocks differ still agree on what has expired.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, create_engine, delete, event, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgecut.errors import ConfigError
from edgecut.server.fleet import migrations
from edgecut.server.fleet.state.schema import (
    BUILD,
    DONE,
    FAILED,
    JOB_STATES,
    QUEUED,
    REFINE,
    RUNNING,
    Base,
    DeviceRow,
    JobRow,
    LeaseRow,
    OfferRow,
    SwapRow,
    WaiterRow,
    now,
)

__all__ = [
    "BUILD",
    "DONE",
    "FAILED",
    "JOB_STATES",
    "QUEUED",
    "REFINE",
    "RUNNING",
    "JobRecord",
    "Registry",
    "Waiter",
    "refinement_key",
]


def refinement_key(build_key: str, number: int) -> str:
    """The job key of refinement `number` of `build_key` (fits the 64-character key column)."""
    return f"{build_key}~r{number}"


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
    owner: str = ""  # the replica holding the lease ('' = none)
    lease_expires: float = 0.0
    kind: str = BUILD
    generation: int = 0  # the fencing token of the latest claim (finish_job needs it)
    crashes: int = 0  # holders that died or stalled with it


@dataclass(frozen=True)
class Waiter:
    device_id: str
    needs_seq: int


def _job(row: JobRow, lease: LeaseRow | None = None) -> JobRecord:
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
        lease.owner if lease is not None else "",
        lease.expires if lease is not None else 0.0,
        REFINE if row.kind == REFINE else BUILD,  # '' = a row from before refinements existed
        row.lease_gen or 0,
        row.crashes or 0,
    )


# URL scheme -> the SQLAlchemy driver name; other databases lack the upserts the leases rely on.
_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
CRASHED = (
    "building this model stopped its server {n} (the replica crashed or stalled); it is not tried "
    "again until a device asks again"
)


def registry_url(url: str) -> URL:
    """The SQLAlchemy URL for `sqlite:///...` or `postgresql://...` (psycopg 3 unless a driver is named)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"registry URL {url!r:.120} is not a database URL: {exc}") from exc
    backend = parsed.drivername.split("+", 1)[0]
    if backend not in _DRIVERS:
        raise ConfigError(
            f"registry URL {parsed.render_as_string(hide_password=True)!r}: unsupported database "
            f"{backend!r} (use sqlite:///path or postgresql://user@host/db)"
        )
    return parsed if "+" in parsed.drivername else parsed.set(drivername=_DRIVERS[backend])


class Registry:
    """Thread-safe access to the fleet database; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        parsed = registry_url(url)
        self.url = parsed.render_as_string(hide_password=True)  # safe to log
        self.dialect = parsed.get_backend_name()
        lite = self.dialect == "sqlite"
        try:
            self._engine: SqlEngine = create_engine(
                parsed,
                connect_args={"check_same_thread": False, "timeout": 30} if lite else {},
                pool_pre_ping=not lite,  # a restarted database server leaves dead pooled connections
            )
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"registry URL {self.url!r} is not usable: {exc}") from exc
        if lite:
            event.listen(self._engine, "connect", _sqlite_pragmas)
            event.listen(self._engine, "begin", _sqlite_begin)
        # SQLite allows one writer at a time; serialising here avoids "database is locked" retries.
        self._lock: threading.Lock | None = threading.Lock() if lite else None
        self._insert = sqlite.insert if lite else postgresql.insert
        try:
            self.migration = migrations.upgrade(self._engine, self.url)  # under a lock on PostgreSQL
        except SQLAlchemyError as exc:
            raise ConfigError(f"registry {self.url!r} cannot be opened: {_first_line(exc)}") from exc
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
        """The database engine, for modules that keep their own tables here (fleet/state/history.py)."""
        return self._engine

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One short transaction under the registry's writer lock, for those modules' tables."""
        with self._tx() as s:
            yield s

    # -- devices -------------------------------------------------------------------------------

    def _db_now(self, s: Session) -> float:
        """The database's clock on PostgreSQL (shared by every replica), this host's on SQLite."""
        if self.dialect == "sqlite":
            return now()
        return float(s.scalar(text("SELECT extract(epoch FROM clock_timestamp())")))

    def _device(self, s: Session, device_id: str) -> DeviceRow:
        row = s.get(DeviceRow, device_id)
        if row is None:
            # Every replica records the retained state of a new device at once: insert-or-ignore.
            s.execute(
                self._insert(DeviceRow)
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
        with self._tx() as s:
            row = self._device(s, device_id)
            if seq < (row.needs_seq or 0) and not (sent_ms and sent_ms > (row.needs_sent_ms or 0)):
                return False
            row.needs_tasks, row.needs_seq, row.needs_json = list(tasks), seq, needs
            row.resources, row.device_class, row.budget = resources, device_class, budget
            row.needs_sent_ms = sent_ms
            row.last_error = ""
            return True

    def next_offer_seq(self, device_id: str, now_ms: int) -> int:
        """The counter for the next offer signed for the device: max(its last + 1, `now_ms`).

        One UPDATE ... RETURNING: on PostgreSQL it holds the device's row lock, so replicas signing for
        the same device at once get distinct, increasing numbers; the clock floor keeps the counter
        above every earlier one even if the registry was restored from an old backup.
        """
        with self._tx() as s:
            self._device(s, device_id)
            bumped = DeviceRow.offer_seq + 1
            q = (
                update(DeviceRow)
                .where(DeviceRow.device_id == device_id)
                .values(offer_seq=case((bumped > now_ms, bumped), else_=now_ms))
                .returning(DeviceRow.offer_seq)
            )
            return int(s.execute(q).scalar_one())

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

    def wanted(self, build_key: str, tasks: list[str], budget: str, artifact_id: str) -> bool:
        """Whether a device may still want what `build_key` builds (`artifact_id` being its latest model).

        Yes when that artifact was never offered to a device (asked over gRPC, by a bench: there is no
        device to watch), when a device's latest offer was of that key, or when a device's current needs
        are those tasks at that budget (asked, not answered yet). No when every device it went to has
        moved on to other tasks or budgets.
        """
        with self._tx() as s:
            if (
                s.scalars(select(OfferRow.id).where(OfferRow.artifact_id == artifact_id).limit(1)).first()
                is None
            ):
                return True
            if s.scalars(
                select(DeviceRow.device_id).where(DeviceRow.build_key == build_key).limit(1)
            ).first():
                return True
            rows = s.scalars(select(DeviceRow.needs_tasks).where(DeviceRow.budget == budget))
            return any(set(needs or ()) == set(tasks) for needs in rows)

    def revive_job(self, build_key: str, stage: str) -> bool:
        """Queue a done job again only if it ended at `stage` (a compare-and-set: replicas racing to
        revive it queue it once, and a job that is running or ended otherwise is left alone)."""
        with self._tx() as s:
            done = s.execute(
                update(JobRow)
                .where(JobRow.build_key == build_key, JobRow.state == DONE, JobRow.stage == stage)
                .values(state=QUEUED, stage="queued", fraction=0.0, updated=now())
            )
            return bool(getattr(done, "rowcount", 0))

    def devices_on(self, artifact_id: str) -> list[tuple[str, int]]:
        """(device id, needs seq) of the devices whose latest offer is `artifact_id` *and* answered
        their current needs (a device that asked for something else since waits for that answer)."""
        with self._tx() as s:
            out = []
            for row in s.scalars(select(DeviceRow).where(DeviceRow.offered_artifact_id == artifact_id)):
                q = select(OfferRow.needs_seq).where(OfferRow.device_id == row.device_id)
                last = s.scalars(q.order_by(OfferRow.id.desc()).limit(1)).first()
                if last is not None and last == row.needs_seq:
                    out.append((row.device_id, row.needs_seq))
            return out

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

    def set_latency_slowdown(self, device_id: str, slowdown: float) -> None:
        with self._tx() as s:
            self._device(s, device_id).latency_slowdown = slowdown

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

    def create_job(self, build_key: str, spec: dict[str, Any], kind: str = BUILD) -> None:
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
                        kind=kind,
                    )
                )
                return
            row.state, row.spec, row.stage, row.fraction = QUEUED, spec, "queued", 0.0
            row.artifact_id = row.error_code = row.error_message = ""
            row.parent_artifact_id, row.refinement, row.kind = "", 0, kind
            row.crashes = 0
            row.updated = now()

    def adopt_refinement(
        self, build_key: str, parent_artifact_id: str, artifact_id: str, number: int
    ) -> bool:
        """Make `artifact_id` (refinement `number` of `parent_artifact_id`) what the key's cache serves.

        A compare-and-set: only while the key's done job still points at the parent, so a refinement
        of an artifact the key no longer serves (rebuilt after a scrub, or a later refinement already
        adopted) changes nothing. Returns whether it was adopted.
        """
        with self._tx() as s:
            s.execute(_lock_jobs([build_key]))
            return _adopt(s, build_key, parent_artifact_id, artifact_id, number)

    def ensure_job(self, build_key: str, spec: dict[str, Any]) -> JobRecord:
        """The key's job: created queued when missing, queued again when it failed, else as it is.

        Replicas asking for one key at once get the same row; a queued or running job is joined, and
        a done one is returned for the caller to check its artifact.
        """
        with self._tx() as s:
            s.execute(
                self._insert(JobRow)
                .values(build_key=build_key, state=QUEUED, spec=spec, stage="queued", created=now())
                .on_conflict_do_nothing(index_elements=["build_key"])
            )
            row = s.get(JobRow, build_key, with_for_update={"key_share": True})
            assert row is not None
            if row.state == FAILED:  # asked again: a new request, with a new allowance of crashes
                row.state, row.spec, row.stage, row.fraction = QUEUED, spec, "queued", 0.0
                row.error_code = row.error_message = ""
                row.crashes = 0
                row.updated = now()
            return _job(row, s.get(LeaseRow, build_key))

    def claim_job(
        self, owner: str, lease_s: float, kind: str = BUILD, max_crashes: int = 0
    ) -> JobRecord | None:
        """Take the oldest job of `kind` nobody builds (queued, or running under an expired lease).

        The record carries the claim's fencing `generation`. Taking over a running job counts a crash
        of its holder; with `max_crashes` > 0, a job that reaches it is returned failed (state failed,
        message CRASHED) instead of claimed, for the caller to tell its waiters.

        Quick builds and refinements are claimed by separate workers, so a long refinement never
        holds a worker that a device's first model waits for.

        The job row is locked first (`FOR NO KEY UPDATE SKIP LOCKED`: claimants skip each other's
        candidates), then the lease upsert succeeds only where there is no lease or an expired one.
        Every writer locks a job row before its lease row, so replicas never deadlock.
        """
        with self._tx() as s:
            db_now = self._db_now(s)
            q = (
                select(JobRow.build_key, JobRow.state, JobRow.crashes)
                .outerjoin(LeaseRow, LeaseRow.build_key == JobRow.build_key)
                .where(
                    JobRow.state.in_((QUEUED, RUNNING)),
                    or_(LeaseRow.build_key.is_(None), LeaseRow.expires < db_now),
                    JobRow.kind == REFINE
                    if kind == REFINE
                    else or_(JobRow.kind != REFINE, JobRow.kind.is_(None)),
                )
                .order_by(JobRow.created)
                .limit(1)
                .with_for_update(of=JobRow, skip_locked=True, key_share=True)
            )
            found = s.execute(q).first()
            if found is None:
                return None
            key, state, crashes = found
            crashes = (crashes or 0) + (state == RUNNING)  # its holder died or stalled with it
            lease = {"owner": owner, "expires": db_now + lease_s, "acquired": db_now}
            won = s.scalar(
                self._insert(LeaseRow)
                .values(build_key=key, **lease)
                .on_conflict_do_update(
                    index_elements=["build_key"], set_=lease, where=LeaseRow.expires < db_now
                )
                .returning(LeaseRow.build_key)
            )
            if won is None:  # renewed by its holder since the select
                return None
            capped = 0 < max_crashes <= crashes
            ending: dict[str, Any] = (
                {"state": FAILED, "stage": "failed", "error_code": "BUILD_FAILED"}
                | {"error_message": CRASHED.format(n="once" if crashes == 1 else f"{crashes} times")}
                if capped
                else {"state": RUNNING, "stage": "running", "attempts": JobRow.attempts + 1}
            )
            started = s.scalar(
                update(JobRow)
                .where(JobRow.build_key == key, JobRow.state.in_((QUEUED, RUNNING)))
                .values(
                    **ending,
                    fraction=0.0,
                    crashes=crashes,
                    lease_gen=JobRow.lease_gen + 1,  # fences off every earlier holder
                    updated=now(),
                )
                .returning(JobRow.build_key)
                .execution_options(synchronize_session=False)
            )
            if started is None or capped:  # finished since the select, or failed just now
                s.execute(
                    delete(LeaseRow)
                    .where(LeaseRow.build_key == key)
                    .execution_options(synchronize_session=False)
                )
                if started is None:  # a second check; row locks make it rare
                    return None
            row = s.get(JobRow, key, populate_existing=True)
            assert row is not None
            return _job(row, s.get(LeaseRow, key, populate_existing=True))

    def renew_leases(self, owner: str, keys: list[str], lease_s: float) -> set[str]:
        """Extend `owner`'s leases on `keys`; returns the keys whose lease it no longer holds."""
        if not keys:
            return set()
        with self._tx() as s:
            db_now = self._db_now(s)
            held = set(
                s.scalars(
                    update(LeaseRow)
                    .where(LeaseRow.owner == owner, LeaseRow.build_key.in_(keys))
                    .values(expires=db_now + lease_s)
                    .returning(LeaseRow.build_key)
                    .execution_options(synchronize_session=False)
                )
            )
            return set(keys) - held

    def release_job(self, build_key: str, owner: str) -> None:
        """`owner` stops building `build_key` unfinished: queued again, for any replica to take."""
        self._release(owner, [build_key])

    def release_leases(self, owner: str) -> list[str]:
        """Queue again every job `owner` held: a replica restarting under the same id resumes at once.

        It held them when it died (a clean stop releases its jobs), so each counts a crash.
        """
        with self._tx() as s:
            keys = list(s.scalars(select(LeaseRow.build_key).where(LeaseRow.owner == owner)))
        return self._release(owner, keys, crashed=True)

    def _release(self, owner: str, keys: list[str], crashed: bool = False) -> list[str]:
        if not keys:
            return []
        with self._tx() as s:
            s.execute(_lock_jobs(keys))  # job rows before lease rows, like every writer
            gone = list(
                s.scalars(
                    delete(LeaseRow)
                    .where(LeaseRow.build_key.in_(keys), LeaseRow.owner == owner)
                    .returning(LeaseRow.build_key)
                    .execution_options(synchronize_session=False)
                )
            )
            if gone:
                s.execute(
                    update(JobRow)
                    .where(JobRow.build_key.in_(gone), JobRow.state == RUNNING)
                    .values(
                        state=QUEUED,
                        stage="queued",
                        fraction=0.0,
                        crashes=JobRow.crashes + int(crashed),
                        updated=now(),
                    )
                    .execution_options(synchronize_session=False)
                )
            return sorted(gone)

    def finish_job(self, build_key: str, owner: str, generation: int, **fields: Any) -> bool:
        """Record a job's end (state done or failed, with its fields) and drop `owner`'s lease.

        Only while claim `generation` still holds the running job: False, and nothing written, when
        another claim took it over since (the caller stalled past its lease) or it ended otherwise.
        """
        if fields.get("state") not in (DONE, FAILED):
            raise ValueError(f"finish_job needs state done or failed, not {fields.get('state')!r}")
        with self._tx() as s:
            s.execute(_lock_jobs([build_key]))
            if not _holds(s, build_key, generation):
                return False
            _set_job(s, build_key, fields)
            s.flush()
            _drop_lease(s, build_key, owner)
            return True

    def finish_refinement(
        self,
        build_key: str,
        owner: str,
        generation: int,
        of: str,
        parent_artifact_id: str,
        artifact_id: str,
        number: int,
    ) -> str | None:
        """Record refinement job `build_key`'s artifact and adopt it for key `of` in one transaction.

        Adopted (`adopt_refinement`'s compare-and-set) -> stage "ready", else "stale"; returns that
        stage, or None (nothing written, nothing adopted) when claim `generation` lost the job.
        """
        with self._tx() as s:
            s.execute(_lock_jobs([build_key, of]))
            if not _holds(s, build_key, generation):
                return None
            adopted = _adopt(s, of, parent_artifact_id, artifact_id, number)
            stage = "ready" if adopted else "stale"
            fields = {"state": DONE, "stage": stage, "fraction": 1.0, "artifact_id": artifact_id}
            _set_job(s, build_key, {**fields, "parent_artifact_id": parent_artifact_id, "refinement": number})
            s.flush()
            _drop_lease(s, build_key, owner)
            return stage

    def update_job(self, build_key: str, generation: int | None = None, **fields: Any) -> bool:
        """Set a job's fields; with `generation`, only while that claim holds the running job."""
        with self._tx() as s:
            if generation is not None:
                s.execute(_lock_jobs([build_key]))
                if not _holds(s, build_key, generation):
                    return False
            _set_job(s, build_key, fields)
            return True

    def job(self, build_key: str) -> JobRecord | None:
        with self._tx() as s:
            row = s.get(JobRow, build_key)
            return None if row is None else _job(row, s.get(LeaseRow, build_key))

    def jobs(self, states: tuple[str, ...] = JOB_STATES) -> list[JobRecord]:
        with self._tx() as s:
            q = (
                select(JobRow, LeaseRow)
                .outerjoin(LeaseRow, LeaseRow.build_key == JobRow.build_key)
                .where(JobRow.state.in_(states))
                .order_by(JobRow.created)
            )
            return [_job(job, lease) for job, lease in s.execute(q).all()]

    def jobs_with_artifact(self, artifact_id: str) -> list[JobRecord]:
        with self._tx() as s:
            q = select(JobRow).where(JobRow.artifact_id == artifact_id, JobRow.state == DONE)
            return [_job(r) for r in s.scalars(q)]

    def add_waiter(self, build_key: str, device_id: str, needs_seq: int) -> None:
        with self._tx() as s:
            ins = self._insert(WaiterRow).values(
                build_key=build_key, device_id=device_id, needs_seq=needs_seq
            )
            s.execute(
                ins.on_conflict_do_update(
                    index_elements=["build_key", "device_id"], set_={"needs_seq": needs_seq}
                )
            )

    def waiting(self) -> dict[str, str]:
        """device id -> the build key it waits for (devices not yet answered)."""
        with self._tx() as s:
            return {d: k for d, k in s.execute(select(WaiterRow.device_id, WaiterRow.build_key))}

    def take_waiters(self, build_key: str) -> list[Waiter]:
        """Remove and return the devices waiting for `build_key` (each is answered once).

        One DELETE ... RETURNING: when two replicas take the same key's waiters at once, each row goes
        to one of them.
        """
        with self._tx() as s:
            rows = s.execute(
                delete(WaiterRow)
                .where(WaiterRow.build_key == build_key)
                .returning(WaiterRow.device_id, WaiterRow.needs_seq)
            ).all()
            return [Waiter(device_id, needs_seq) for device_id, needs_seq in rows]


def _lock_jobs(keys: list[str]) -> Any:
    # in key order: two writers locking overlapping sets of rows cannot deadlock
    q = select(JobRow.build_key).where(JobRow.build_key.in_(keys)).order_by(JobRow.build_key)
    return q.with_for_update(key_share=True)


def _holds(s: Session, build_key: str, generation: int) -> bool:
    """Whether claim `generation` still holds the running job (the caller locked its row)."""
    q = select(JobRow.build_key).where(
        JobRow.build_key == build_key, JobRow.state == RUNNING, JobRow.lease_gen == generation
    )
    return s.scalar(q) is not None


def _drop_lease(s: Session, build_key: str, owner: str) -> None:
    s.execute(
        delete(LeaseRow)
        .where(LeaseRow.build_key == build_key, LeaseRow.owner == owner)
        .execution_options(synchronize_session=False)
    )


def _adopt(s: Session, build_key: str, parent_artifact_id: str, artifact_id: str, number: int) -> bool:
    adopted = s.scalar(
        update(JobRow)
        .where(
            JobRow.build_key == build_key,
            JobRow.state == DONE,
            JobRow.artifact_id == parent_artifact_id,
        )
        .values(
            artifact_id=artifact_id, parent_artifact_id=parent_artifact_id, refinement=number, updated=now()
        )
        .returning(JobRow.build_key)
        .execution_options(synchronize_session=False)
    )
    return adopted is not None


def _set_job(s: Session, build_key: str, fields: dict[str, Any]) -> None:
    allowed = {"state", "stage", "fraction", "artifact_id", "error_code", "error_message"}
    unknown = set(fields) - allowed - {"parent_artifact_id", "refinement"}
    if unknown:
        raise ValueError(f"not job fields: {sorted(unknown)}")
    if "state" in fields and fields["state"] not in JOB_STATES:
        raise ValueError(f"bad job state {fields['state']!r}")
    row = s.get(JobRow, build_key)
    if row is None:
        return
    for k, v in fields.items():
        setattr(row, k, v)
    if fields.get("state") == RUNNING:
        row.attempts += 1
    row.updated = now()


def _row_dict(row: Base) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite would open a transaction lazily, at the first write: a claim's read could then act on
    # rows another process changed meanwhile. Transactions are begun by `_sqlite_begin` instead.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    """BEGIN IMMEDIATE: one transaction at a time holds the database, also across processes."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")
