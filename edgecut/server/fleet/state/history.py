"""Fleet history kept beside the registry: telemetry over time, build runs, measured artifact latency.

The registry holds each device's *latest* state; the dashboard also needs the way there. Their tables
are in state/schema.py with every other (one metadata, one set of revisions). Telemetry is bounded:
each device keeps its last `keep_samples` samples (a device reporting every 30 s keeps about 4 hours
at the default 500).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import ArtifactLatency, Base, BuildRun, OfferRow, TelemetrySample

DEFAULT_KEEP_SAMPLES = 500


@dataclass(frozen=True)
class BuildRunRecord:
    build_key: str
    tasks: list[str]
    queued_at: float
    started_at: float | None
    finished_at: float | None
    result: str
    artifact_id: str
    error: str
    cache_hits: int

    @property
    def seconds(self) -> float | None:
        """Build time, from a worker picking it up to the end (the queue wait is not counted)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class FleetHistory:
    def __init__(self, registry: Registry, keep_samples: int = DEFAULT_KEEP_SAMPLES) -> None:
        if keep_samples < 1:
            raise ValueError("keep_samples must be >= 1")
        self.registry, self.keep_samples = registry, keep_samples

    # -- telemetry -----------------------------------------------------------------------------

    def add_telemetry(self, device_id: str, at: float, t: dict[str, Any]) -> None:
        with self.registry.transaction() as s:
            s.add(
                TelemetrySample(
                    device_id=device_id,
                    at=at,
                    artifact_id=str(t.get("artifact_id", "")),
                    latency_p50_ms=float(t.get("latency_p50_ms", 0.0)),
                    latency_p95_ms=float(t.get("latency_p95_ms", 0.0)),
                    rss_bytes=int(t.get("rss_bytes", 0)),
                    cpu_percent=float(t.get("cpu_percent", 0.0)),
                    inference_count=int(t.get("inference_count", 0)),
                    failed_count=int(t.get("failed_count", 0)),
                )
            )
            s.flush()
            # the id of the oldest sample to keep; everything of this device below it goes
            oldest_kept = s.scalar(
                select(TelemetrySample.id)
                .where(TelemetrySample.device_id == device_id)
                .order_by(TelemetrySample.id.desc())
                .offset(self.keep_samples - 1)
                .limit(1)
            )
            if oldest_kept is not None:
                s.execute(
                    delete(TelemetrySample).where(
                        TelemetrySample.device_id == device_id, TelemetrySample.id < oldest_kept
                    )
                )

    def telemetry(self, device_id: str, since: float = 0.0, limit: int | None = None) -> list[dict[str, Any]]:
        """Samples oldest first (the last `limit` when given)."""
        with self.registry.transaction() as s:
            q = (
                select(TelemetrySample)
                .where(TelemetrySample.device_id == device_id, TelemetrySample.at >= since)
                .order_by(TelemetrySample.id.desc())
            )
            if limit is not None:
                q = q.limit(limit)
            return [_row(r, exclude=("id",)) for r in s.scalars(q)][::-1]

    # -- offers (the registry's own table: every signed offer) ------------------------------------

    def offers(self, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """Offers made to the device, newest first: artifact, needs seq, build key (from the manifest)."""
        with self.registry.transaction() as s:
            q = (
                select(OfferRow)
                .where(OfferRow.device_id == device_id)
                .order_by(OfferRow.id.desc())
                .limit(limit)
            )
            return [
                {
                    "artifact_id": r.artifact_id,
                    "needs_seq": r.needs_seq,
                    "build_key": str((r.manifest or {}).get("build_key", "")),
                    "at": r.at,
                }
                for r in s.scalars(q)
            ]

    # -- build runs ----------------------------------------------------------------------------

    def build_queued(self, build_key: str, tasks: list[str], at: float) -> None:
        with self.registry.transaction() as s:
            s.add(BuildRun(build_key=build_key, tasks=",".join(tasks), queued_at=at))

    def _open_run(self, s: Any, build_key: str, at: float) -> BuildRun:
        run = s.scalars(
            select(BuildRun)
            .where(BuildRun.build_key == build_key, BuildRun.result == "")
            .order_by(BuildRun.id.desc())
            .limit(1)
        ).first()
        if run is None:  # a job resumed after a restart was queued by the previous process
            run = BuildRun(build_key=build_key, queued_at=at)
            s.add(run)
        return run

    def build_started(self, build_key: str, tasks: list[str], at: float) -> None:
        with self.registry.transaction() as s:
            run = self._open_run(s, build_key, at)
            run.started_at, run.tasks = at, ",".join(tasks) or run.tasks

    def build_finished(
        self, build_key: str, at: float, ok: bool, artifact_id: str = "", error: str = "", result: str = ""
    ) -> None:
        """`result` names an ending other than done/failed (a refinement: not better, stale, unwanted)."""
        with self.registry.transaction() as s:
            run = self._open_run(s, build_key, at)
            run.finished_at, run.result = at, result or ("done" if ok else "failed")
            run.artifact_id, run.error = artifact_id, error[:2000]

    def cache_hit(self, build_key: str) -> None:
        """A request for `build_key` was answered from the store: counted on its latest run."""
        with self.registry.transaction() as s:
            run = s.scalars(
                select(BuildRun).where(BuildRun.build_key == build_key).order_by(BuildRun.id.desc()).limit(1)
            ).first()
            if run is not None:
                run.cache_hits += 1

    def build_runs(self, limit: int = 100) -> list[BuildRunRecord]:
        """Newest first."""
        with self.registry.transaction() as s:
            q = select(BuildRun).order_by(BuildRun.id.desc()).limit(limit)
            return [
                BuildRunRecord(
                    r.build_key,
                    [t for t in r.tasks.split(",") if t],
                    r.queued_at,
                    r.started_at,
                    r.finished_at,
                    r.result,
                    r.artifact_id,
                    r.error,
                    r.cache_hits,
                )
                for r in s.scalars(q)
            ]

    # -- measured latency ----------------------------------------------------------------------

    def set_latency(self, artifact_id: str, ms: float, runs: int) -> None:
        with self.registry.transaction() as s:
            row = s.get(ArtifactLatency, artifact_id)
            if row is None:
                s.add(
                    ArtifactLatency(
                        artifact_id=artifact_id, ort_latency_ms=ms, runs=runs, measured_at=time.time()
                    )
                )
            else:
                row.ort_latency_ms, row.runs, row.measured_at = ms, runs, time.time()

    def latency(self, artifact_ids: list[str]) -> dict[str, float]:
        if not artifact_ids:
            return {}
        with self.registry.transaction() as s:
            q = select(ArtifactLatency).where(ArtifactLatency.artifact_id.in_(artifact_ids))
            return {r.artifact_id: r.ort_latency_ms for r in s.scalars(q)}


def _row(row: Base, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in exclude}
