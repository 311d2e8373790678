"""Device statistics (issue 31): each stored model's statistics companion, and the summaries devices sent.

A summary is taken only when its sequence is above the last one taken from that device: the counter
lives here, and one conditional UPDATE both checks and raises it, so two replicas (or a replica after a
restart) never both take the same sequence, and a replay of an old summary is refused everywhere. The
latest summary per device and model is kept as received (a few KB) for the adaptation that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from edgecut.server.fleet.state.database import Database
from edgecut.server.fleet.state.schema import (
    ArtifactStatisticsRow,
    StatsDeviceRow,
    StatsSummaryRow,
    now,
)


@dataclass(frozen=True)
class Companion:
    """A stored model's statistics companion and the layers (name -> channels) a summary must hold."""

    statistics_id: str
    layers: dict[str, int]


@dataclass(frozen=True)
class Summary:
    """A summary taken from a device: what the adaptation reads (`summary`: the StatsSummary bytes)."""

    device_id: str
    artifact_id: str
    sequence: int
    images: int
    digest: str
    summary: bytes
    at: float


class Statistics:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record_companion(self, artifact_id: str, statistics_id: str, layers: dict[str, int]) -> None:
        """The statistics companion of the fp32 model `artifact_id` (idempotent: the first one stays)."""
        with self.db.transaction() as s:
            s.execute(
                self.db.insert(ArtifactStatisticsRow)
                .values(artifact_id=artifact_id, statistics_id=statistics_id, layers=dict(layers))
                .on_conflict_do_nothing(index_elements=["artifact_id"])
            )

    def companion(self, artifact_id: str) -> Companion | None:
        with self.db.transaction() as s:
            row = s.get(ArtifactStatisticsRow, artifact_id)
            return None if row is None else Companion(row.statistics_id, dict(row.layers))

    def take(
        self, device_id: str, artifact_id: str, sequence: int, images: int, digest: str, summary: bytes
    ) -> int | None:
        """Keep the summary when `sequence` is above the device's last; None when taken, else that last."""
        with self.db.transaction() as s:
            s.execute(
                self.db.insert(StatsDeviceRow)
                .values(device_id=device_id, sequence=0, taken=0, at=0.0)
                .on_conflict_do_nothing(index_elements=["device_id"])
            )
            raised = s.execute(
                update(StatsDeviceRow)
                .where(StatsDeviceRow.device_id == device_id, StatsDeviceRow.sequence < sequence)
                .values(sequence=sequence, taken=StatsDeviceRow.taken + 1, at=now())
                .returning(StatsDeviceRow.sequence)
            ).first()
            if raised is None:
                return int(s.get_one(StatsDeviceRow, device_id).sequence)
            row = s.get(StatsSummaryRow, (device_id, artifact_id))
            if row is None:
                row = StatsSummaryRow(device_id=device_id, artifact_id=artifact_id)
                s.add(row)
            row.sequence, row.images, row.digest, row.summary, row.at = (
                sequence,
                images,
                digest,
                summary,
                now(),
            )
            return None

    def latest(self, device_id: str, artifact_id: str) -> Summary | None:
        with self.db.transaction() as s:
            row = s.get(StatsSummaryRow, (device_id, artifact_id))
            return None if row is None else _summary(row)

    def of_device(self, device_id: str) -> list[Summary]:
        """The latest summary per model the device sent, newest first."""
        with self.db.transaction() as s:
            q = select(StatsSummaryRow).where(StatsSummaryRow.device_id == device_id)
            return [_summary(r) for r in s.scalars(q.order_by(StatsSummaryRow.at.desc()))]

    def devices(self) -> dict[str, dict[str, Any]]:
        """Per device that ever sent a summary: its last sequence, how many were taken, when the latest."""
        with self.db.transaction() as s:
            return {
                r.device_id: {"sequence": r.sequence, "taken": r.taken, "at": r.at}
                for r in s.scalars(select(StatsDeviceRow).where(StatsDeviceRow.taken > 0))
            }


def _summary(row: StatsSummaryRow) -> Summary:
    return Summary(row.device_id, row.artifact_id, row.sequence, row.images, row.digest, row.summary, row.at)
