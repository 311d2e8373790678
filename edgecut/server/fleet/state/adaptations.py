"""Adapted devices (issue 31): per device, the statistics bucket it was adapted to and the model it got.

One row per device that sent a summary the adaptation job acted on. `choose` records the device's
latest choice (base model, bucket, summary, job) and is also the per-device rate limit: one conditional
UPDATE, so replicas taking two summaries of one device at once never both schedule an adaptation.
`artifact_id` is the adapted model last offered to it: it stays until a newer one is offered, so
delivery (link/delivery.py) keeps the device on it while its next adaptation is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select, update

from edgecut.server.fleet.state.database import Database
from edgecut.server.fleet.state.schema import AdaptedDeviceRow, now


@dataclass(frozen=True)
class Adapted:
    device_id: str
    build_key: str
    base_artifact_id: str
    artifact_id: str  # the adapted model last offered ('' = none yet)
    bucket: str
    sequence: int  # the device's summary that chose the bucket
    point: list[float]
    job_key: str
    scheduled_at: float
    at: float


class Adaptations:
    def __init__(self, db: Database) -> None:
        self.db = db

    def choose(
        self,
        device_id: str,
        build_key: str,
        base_artifact_id: str,
        bucket: str,
        sequence: int,
        point: list[float],
        job_key: str,
        min_interval_s: float = 0.0,
    ) -> bool:
        """Record that `device_id` is to get `job_key`'s model; False (nothing recorded) when an adaptation
        was chosen for it less than `min_interval_s` ago (the first one is never limited)."""
        t = now()
        values = dict(
            build_key=build_key,
            base_artifact_id=base_artifact_id,
            bucket=bucket,
            sequence=sequence,
            point=list(point),
            job_key=job_key,
            scheduled_at=t,
            at=t,
        )
        with self.db.transaction() as s:
            inserted = s.execute(
                self.db.insert(AdaptedDeviceRow)
                .values(device_id=device_id, artifact_id="", **values)
                .on_conflict_do_nothing(index_elements=["device_id"])
                .returning(AdaptedDeviceRow.device_id)
            ).first()
            if inserted is not None:
                return True
            done = s.execute(
                update(AdaptedDeviceRow)
                .where(
                    AdaptedDeviceRow.device_id == device_id,
                    or_(
                        AdaptedDeviceRow.scheduled_at <= t - min_interval_s,
                        AdaptedDeviceRow.scheduled_at > t,  # a clock that went back does not lock it out
                    ),
                )
                .values(**values)
                .returning(AdaptedDeviceRow.device_id)
            ).first()
            return done is not None

    def offered(self, device_id: str, artifact_id: str) -> None:
        """The adapted model `artifact_id` was offered to the device."""
        with self.db.transaction() as s:
            s.execute(
                update(AdaptedDeviceRow)
                .where(AdaptedDeviceRow.device_id == device_id)
                .values(artifact_id=artifact_id, at=now())
            )

    def get(self, device_id: str) -> Adapted | None:
        with self.db.transaction() as s:
            row = s.get(AdaptedDeviceRow, device_id)
            return None if row is None else _adapted(row)

    def waiting(self, job_key: str) -> list[Adapted]:
        """The devices whose latest choice is `job_key`'s model."""
        with self.db.transaction() as s:
            q = select(AdaptedDeviceRow).where(AdaptedDeviceRow.job_key == job_key)
            return [_adapted(r) for r in s.scalars(q)]

    def of_key(self, build_key: str) -> list[Adapted]:
        """The devices adapted (or being adapted) from a model of `build_key`."""
        with self.db.transaction() as s:
            q = select(AdaptedDeviceRow).where(AdaptedDeviceRow.build_key == build_key)
            return [_adapted(r) for r in s.scalars(q)]

    def all(self) -> dict[str, Adapted]:
        with self.db.transaction() as s:
            return {r.device_id: _adapted(r) for r in s.scalars(select(AdaptedDeviceRow))}


def _adapted(row: AdaptedDeviceRow) -> Adapted:
    return Adapted(
        row.device_id,
        row.build_key,
        row.base_artifact_id,
        row.artifact_id,
        row.bucket,
        int(row.sequence),
        [float(v) for v in row.point or ()],
        row.job_key,
        float(row.scheduled_at),
        float(row.at),
    )
