"""A job as the rest of the fleet sees it: its row and its lease (if any) in one frozen record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecut.server.fleet.state.schema import ADAPT, BUILD, REFINE, JobRow, LeaseRow


def adaptation_key(build_key: str, parent_artifact_id: str, bucket_id: str) -> str:
    """The job key of `parent_artifact_id` (a model of `build_key`) adapted to a statistics bucket
    (issue 31, jobs/adapter.py); 32 + 2 + 12 + 1 + 12 characters fit the 64-character key column."""
    return f"{build_key[:32]}~a{bucket_id[:12]}.{parent_artifact_id[:12]}"


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
    generation: int = 0  # the fencing token of the latest claim (finish needs it)
    crashes: int = 0  # holders that died or stalled with it


def job_record(row: JobRow, lease: LeaseRow | None = None) -> JobRecord:
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
        row.kind if row.kind in (REFINE, ADAPT) else BUILD,  # '' = a row from before refinements existed
        row.lease_gen or 0,
        row.crashes or 0,
    )
