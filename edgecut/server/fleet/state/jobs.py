"""Jobs and their leases: the fleet's build queue, shared by every replica.

Jobs are persisted so queued work survives a restart. Single flight across replicas: a replica builds
a key only while it holds that key's row in `job_leases` (owner, expiry). `claim` takes a queued job, or
a running one whose lease expired (its replica died), with one atomic upsert whose condition is "no
lease or an expired one", so two replicas never both win; the builder renews the lease while it works
and deletes it when done.

Fencing: every claim adds one to the job's `lease_gen` and hands it to the claimant, and a job's
result (`finish`, `finish_refinement`) and progress count only with the generation that holds the job
now, checked in the same transaction that writes them. A replica that stalled (SIGSTOP, a long GC
pause, a frozen VM) past its lease and then wakes up cannot record a job another replica took over.
A job whose holders died or stalled `max_crashes` times ends failed instead of being claimed again
(a build that crashes its replica is not retried forever); the devices waiting for it are told.
Every writer locks a job row before its lease row, so replicas never deadlock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from edgecut.server.fleet.state.database import Database
from edgecut.server.fleet.state.job_record import JobRecord, job_record
from edgecut.server.fleet.state.schema import (
    ADAPT,
    BUILD,
    DONE,
    FAILED,
    JOB_STATES,
    QUEUED,
    REFINE,
    RUNNING,
    JobRow,
    LeaseRow,
    now,
)

CRASHED = (
    "building this model stopped its server {n} (the replica crashed or stalled); it is not tried "
    "again until a device asks again"
)


class Jobs:
    def __init__(self, db: Database) -> None:
        self.db = db

    def revive(self, build_key: str, stage: str) -> bool:
        """Queue a done job again only if it ended at `stage` (a compare-and-set: replicas racing to
        revive it queue it once, and a job that is running or ended otherwise is left alone)."""
        with self.db.transaction() as s:
            done = s.execute(
                update(JobRow)
                .where(JobRow.build_key == build_key, JobRow.state == DONE, JobRow.stage == stage)
                .values(state=QUEUED, stage="queued", fraction=0.0, updated=now())
            )
            return bool(getattr(done, "rowcount", 0))

    def create(self, build_key: str, spec: dict[str, Any], kind: str = BUILD) -> None:
        """Insert or reset the job to queued (a failed or vanished-artifact key is built again)."""
        with self.db.transaction() as s:
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
        with self.db.transaction() as s:
            s.execute(_lock_jobs([build_key]))
            return _adopt(s, build_key, parent_artifact_id, artifact_id, number)

    def ensure(self, build_key: str, spec: dict[str, Any], kind: str = BUILD) -> JobRecord:
        """The key's job: created queued when missing, queued again when it failed, else as it is.

        Replicas asking for one key at once get the same row; a queued or running job is joined, and
        a done one is returned for the caller to check its artifact.
        """
        with self.db.transaction() as s:
            s.execute(
                self.db.insert(JobRow)
                .values(
                    build_key=build_key, state=QUEUED, spec=spec, stage="queued", created=now(), kind=kind
                )
                .on_conflict_do_nothing(index_elements=["build_key"])
            )
            row = s.get(JobRow, build_key, with_for_update={"key_share": True})
            assert row is not None
            if row.state == FAILED:  # asked again: a new request, with a new allowance of crashes
                row.state, row.spec, row.stage, row.fraction = QUEUED, spec, "queued", 0.0
                row.error_code = row.error_message = ""
                row.crashes = 0
                row.updated = now()
            return job_record(row, s.get(LeaseRow, build_key))

    def claim(self, owner: str, lease_s: float, kind: str = BUILD, max_crashes: int = 0) -> JobRecord | None:
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
        with self.db.transaction() as s:
            db_now = self.db.db_now(s)
            q = (
                select(JobRow.build_key, JobRow.state, JobRow.crashes)
                .outerjoin(LeaseRow, LeaseRow.build_key == JobRow.build_key)
                .where(
                    JobRow.state.in_((QUEUED, RUNNING)),
                    or_(LeaseRow.build_key.is_(None), LeaseRow.expires < db_now),
                    JobRow.kind == kind
                    if kind in (REFINE, ADAPT)
                    else or_(JobRow.kind.not_in((REFINE, ADAPT)), JobRow.kind.is_(None)),
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
                self.db.insert(LeaseRow)
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
            return job_record(row, s.get(LeaseRow, key, populate_existing=True))

    def renew_leases(self, owner: str, keys: list[str], lease_s: float) -> set[str]:
        """Extend `owner`'s leases on `keys`; returns the keys whose lease it no longer holds."""
        if not keys:
            return set()
        with self.db.transaction() as s:
            db_now = self.db.db_now(s)
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

    def release(self, build_key: str, owner: str) -> None:
        """`owner` stops building `build_key` unfinished: queued again, for any replica to take."""
        self._release(owner, [build_key])

    def release_leases(self, owner: str) -> list[str]:
        """Queue again every job `owner` held: a replica restarting under the same id resumes at once.

        It held them when it died (a clean stop releases its jobs), so each counts a crash.
        """
        with self.db.transaction() as s:
            keys = list(s.scalars(select(LeaseRow.build_key).where(LeaseRow.owner == owner)))
        return self._release(owner, keys, crashed=True)

    def _release(self, owner: str, keys: list[str], crashed: bool = False) -> list[str]:
        if not keys:
            return []
        with self.db.transaction() as s:
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

    def finish(self, build_key: str, owner: str, generation: int, **fields: Any) -> bool:
        """Record a job's end (state done or failed, with its fields) and drop `owner`'s lease.

        Only while claim `generation` still holds the running job: False, and nothing written, when
        another claim took it over since (the caller stalled past its lease) or it ended otherwise.
        """
        if fields.get("state") not in (DONE, FAILED):
            raise ValueError(f"finishing a job needs state done or failed, not {fields.get('state')!r}")
        with self.db.transaction() as s:
            s.execute(_lock_jobs([build_key]))
            if not _holds(s, build_key, generation):
                return False
            _setjob_record(s, build_key, fields)
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
        with self.db.transaction() as s:
            s.execute(_lock_jobs([build_key, of]))
            if not _holds(s, build_key, generation):
                return None
            adopted = _adopt(s, of, parent_artifact_id, artifact_id, number)
            stage = "ready" if adopted else "stale"
            fields = {"state": DONE, "stage": stage, "fraction": 1.0, "artifact_id": artifact_id}
            _setjob_record(
                s, build_key, {**fields, "parent_artifact_id": parent_artifact_id, "refinement": number}
            )
            s.flush()
            _drop_lease(s, build_key, owner)
            return stage

    def update(self, build_key: str, generation: int | None = None, **fields: Any) -> bool:
        """Set a job's fields; with `generation`, only while that claim holds the running job."""
        with self.db.transaction() as s:
            if generation is not None:
                s.execute(_lock_jobs([build_key]))
                if not _holds(s, build_key, generation):
                    return False
            _setjob_record(s, build_key, fields)
            return True

    def get(self, build_key: str) -> JobRecord | None:
        with self.db.transaction() as s:
            row = s.get(JobRow, build_key)
            return None if row is None else job_record(row, s.get(LeaseRow, build_key))

    def all(self, states: tuple[str, ...] = JOB_STATES) -> list[JobRecord]:
        with self.db.transaction() as s:
            q = (
                select(JobRow, LeaseRow)
                .outerjoin(LeaseRow, LeaseRow.build_key == JobRow.build_key)
                .where(JobRow.state.in_(states))
                .order_by(JobRow.created)
            )
            return [job_record(job, lease) for job, lease in s.execute(q).all()]

    def with_artifact(self, artifact_id: str) -> list[JobRecord]:
        with self.db.transaction() as s:
            q = select(JobRow).where(JobRow.artifact_id == artifact_id, JobRow.state == DONE)
            return [job_record(r) for r in s.scalars(q)]


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


def _setjob_record(s: Session, build_key: str, fields: dict[str, Any]) -> None:
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
