"""The fleet registry's tables (SQLAlchemy ORM) and `Base`, whose one metadata holds every table of the
registry database (command_desk, history and rollout define theirs on it too). The schema changes only
through Alembic revisions: edgecut/server/fleet/state/migrations/.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
JOB_STATES = (QUEUED, RUNNING, DONE, FAILED)
BUILD, REFINE = "build", "refine"  # JobRow.kind: a quick build of a key, or one refinement of it
ADAPT = "adapt"  # JobRow.kind: a model adapted to a statistics bucket (issue 31, jobs/adapter.py)


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    pass


class DeviceRow(Base):
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
    last_seen: Mapped[float] = mapped_column(Float, default=now)
    needs_sent_ms: Mapped[int] = mapped_column(BigInteger, default=0)  # TaskNeeds.sent_unix_ms of needs_seq
    # the verified Manifest of the model the device serves, plus the fleet key id it checked
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pinned_artifact_id: Mapped[str] = mapped_column(String(64), default="")
    last_command: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the latest CommandAck
    # how much slower than its class the device proved when it drifted past its latency budget (0 = never)
    latency_slowdown: Mapped[float] = mapped_column(Float, default=0.0)
    # the Manifest.offer_seq of the latest offer signed for the device (registry.next_offer_seq)
    offer_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class SwapRow(Base):
    __tablename__ = "swaps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    artifact_id: Mapped[str] = mapped_column(String(64))
    previous_artifact_id: Mapped[str] = mapped_column(String(64), default="")
    ok: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, default="")
    load_ms: Mapped[float] = mapped_column(Float, default=0.0)
    at: Mapped[float] = mapped_column(Float, default=now)
    # the precision the device serves after the swap ("" = an agent that does not say: fp32) and what it
    # measured for each precision offered ([{precision, artifact_id, median_ms, runs, note}])
    precision: Mapped[str] = mapped_column(String(8), default="")
    timings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class JobRow(Base):
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
    created: Mapped[float] = mapped_column(Float, default=now)
    updated: Mapped[float] = mapped_column(Float, default=now)
    parent_artifact_id: Mapped[str] = mapped_column(String(64), default="")
    refinement: Mapped[int] = mapped_column(Integer, default=0)
    # build: the key's quick build (build_key = the key); refine: refinement n of a key's artifact
    # (build_key = refinement_key(key, n), spec = the build spec + "refine": {of, parent, number})
    kind: Mapped[str] = mapped_column(String(16), default=BUILD)
    # the fencing token: +1 at every claim, so a holder that lost its lease cannot record the job
    lease_gen: Mapped[int] = mapped_column(BigInteger, default=0)
    # holders that died or stalled with the job (lease expired, or their replica restarted holding it)
    crashes: Mapped[int] = mapped_column(Integer, default=0)


class LeaseRow(Base):
    """Who builds a job now, and until when; no row = nobody (the job is free to claim)."""

    __tablename__ = "job_leases"
    build_key: Mapped[str] = mapped_column(ForeignKey("jobs.build_key"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    expires: Mapped[float] = mapped_column(Float)
    acquired: Mapped[float] = mapped_column(Float, default=now)


class WaiterRow(Base):
    __tablename__ = "job_waiters"
    build_key: Mapped[str] = mapped_column(ForeignKey("jobs.build_key"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    needs_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class OfferRow(Base):
    """Every signed offer: which artifact was offered to which device (mTLS downloads are checked here)."""

    __tablename__ = "offers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    artifact_id: Mapped[str] = mapped_column(String(64), index=True)
    needs_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[float] = mapped_column(Float, default=now)


class ArtifactVariantRow(Base):
    """Another precision of a stored fp32 artifact (its own content-addressed file in the store)."""

    __tablename__ = "artifact_variants"
    artifact_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the fp32 model
    variant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    precision: Mapped[str] = mapped_column(String(8))


class OfferVariantRow(Base):
    """A variant listed in a signed offer: which device may download it (mTLS downloads check here)."""

    __tablename__ = "offer_variants"
    __table_args__ = (Index("ix_offer_variants_device", "device_id", "variant_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128))
    artifact_id: Mapped[str] = mapped_column(String(64))  # the offer's fp32 model
    variant_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float, default=now)


# Device statistics (issue 31): each model's statistics companion, and the summaries devices sent.
class ArtifactStatisticsRow(Base):
    """The statistics companion of a stored fp32 artifact and the layers (name -> channels, in output
    order) a device's summary of that model must hold."""

    __tablename__ = "artifact_statistics"
    artifact_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the fp32 model
    statistics_id: Mapped[str] = mapped_column(String(64))
    layers: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


class StatsDeviceRow(Base):
    """Per device: the highest summary sequence taken (an older or equal one is a replay), kept here so
    every replica and every restart refuses the same replays."""

    __tablename__ = "stats_devices"
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    taken: Mapped[int] = mapped_column(BigInteger, default=0)  # summaries taken from it, ever
    at: Mapped[float] = mapped_column(Float, default=now)  # when the latest was taken


class StatsSummaryRow(Base):
    """The latest summary taken from a device for one model: the StatsSummary as received (a few KB)."""

    __tablename__ = "stats_summaries"
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    artifact_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    images: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of the layers' statistics (norm_stats order)
    summary: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[float] = mapped_column(Float, default=now)


class AdaptedDeviceRow(Base):
    """Per device that sent a summary (issue 31): the adapted model it was chosen for and why.

    `artifact_id` is the adapted model offered to it ('' while its adaptation is built); `base_artifact_id`
    the model of `build_key` it was adapted from; `bucket` the statistics bucket and `sequence` the
    device's summary that chose it, `point` that summary's input-layer point (policy/stat_buckets.py,
    the drift figure is measured from it); `scheduled_at` when an adaptation was last asked for it (the
    per-device rate limit)."""

    __tablename__ = "adapted_devices"
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    build_key: Mapped[str] = mapped_column(String(64))
    base_artifact_id: Mapped[str] = mapped_column(String(64))
    artifact_id: Mapped[str] = mapped_column(String(64), default="")
    bucket: Mapped[str] = mapped_column(String(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    point: Mapped[list[float]] = mapped_column(JSON, default=list)
    job_key: Mapped[str] = mapped_column(String(64), default="")
    scheduled_at: Mapped[float] = mapped_column(Float, default=0.0)
    at: Mapped[float] = mapped_column(Float, default=now)


# Operator commands and their audit trail (fleet/commands/desk.py).
class CommandRow(Base):
    __tablename__ = "operator_commands"
    command_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(16))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    who: Mapped[str] = mapped_column(String(128))
    origin: Mapped[str] = mapped_column(String(128), default="")
    created: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text, default="")
    acked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuditRow(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    who: Mapped[str] = mapped_column(String(128))
    origin: Mapped[str] = mapped_column(String(128), default="")
    event: Mapped[str] = mapped_column(String(16))  # sent, ok, failed, refused
    action: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    command_id: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


# Staged rollouts (fleet/jobs/rollout.py).
class RolloutRow(Base):
    __tablename__ = "rollouts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_class: Mapped[str] = mapped_column(String(64), index=True)
    budget: Mapped[str] = mapped_column(String(128))
    tasks: Mapped[list[str]] = mapped_column(JSON)
    baseline_artifact: Mapped[str] = mapped_column(String(64))
    baseline_build_key: Mapped[str] = mapped_column(String(64))
    candidate_artifact: Mapped[str] = mapped_column(String(64))
    candidate_build_key: Mapped[str] = mapped_column(String(64))
    canaries: Mapped[list[str]] = mapped_column(JSON)
    cohort: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    quality: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    baseline_p95_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created: Mapped[float] = mapped_column(Float)
    decided: Mapped[float | None] = mapped_column(Float, nullable=True)


# The fleet's history: telemetry, build runs, per-artifact latency (fleet/state/history.py).
class TelemetrySample(Base):
    __tablename__ = "telemetry_samples"
    __table_args__ = (Index("ix_telemetry_device_id", "device_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128))
    at: Mapped[float] = mapped_column(Float)
    artifact_id: Mapped[str] = mapped_column(String(64), default="")
    latency_p50_ms: Mapped[float] = mapped_column(Float, default=0.0)
    latency_p95_ms: Mapped[float] = mapped_column(Float, default=0.0)
    rss_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    cpu_percent: Mapped[float] = mapped_column(Float, default=0.0)
    inference_count: Mapped[int] = mapped_column(BigInteger, default=0)
    failed_count: Mapped[int] = mapped_column(BigInteger, default=0)


class BuildRun(Base):
    __tablename__ = "build_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    build_key: Mapped[str] = mapped_column(String(64), index=True)
    tasks: Mapped[str] = mapped_column(String(256), default="")
    queued_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[str] = mapped_column(String(16), default="")  # "", done, failed (+ refinement endings)
    artifact_id: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    cache_hits: Mapped[int] = mapped_column(BigInteger, default=0)  # later requests answered from the store


class ArtifactLatency(Base):
    __tablename__ = "artifact_latency"
    artifact_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ort_latency_ms: Mapped[float] = mapped_column(Float)
    runs: Mapped[int] = mapped_column(Integer)
    measured_at: Mapped[float] = mapped_column(Float)
