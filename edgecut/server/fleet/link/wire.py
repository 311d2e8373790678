"""Conversions between the service's plain objects and edgecut.v1 messages (shared by gRPC and MQTT)."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from edgecut.server.fleet.jobs.outcomes import Failed, Progress, Ready
from edgecut.v1 import fleet_pb2 as pb

_STAGES = {
    "queued": pb.JobProgress.QUEUED,
    "running": pb.JobProgress.QUEUED,  # picked by a worker, before the engine's first stage
    "importance": pb.JobProgress.IMPORTANCE,
    "pruning": pb.JobProgress.PRUNING,
    "recovery": pb.JobProgress.RECOVERY,
    "exporting": pb.JobProgress.EXPORTING,
    "ready": pb.JobProgress.READY,
    "failed": pb.JobProgress.FAILED,
}


def error(failed: Failed, device_id: str = "", needs_seq: int = 0) -> pb.Error:
    return pb.Error(code=failed.code, message=failed.message, device_id=device_id, needs_seq=needs_seq)


def ready_progress(event: Ready, signed: pb.ModelReady) -> pb.JobProgress:
    """The final READY event, carrying the signed offer (signer.FleetSigner.offer)."""
    return pb.JobProgress(
        build_key=event.build_key,
        stage=pb.JobProgress.READY,
        fraction=1.0,
        detail="cache hit" if event.cache_hit else "built",
        ready=signed,
    )


def job_progress(event: Progress | Failed, device_id: str = "") -> pb.JobProgress:
    if isinstance(event, Failed):
        return pb.JobProgress(
            build_key=event.build_key,
            stage=pb.JobProgress.FAILED,
            detail=event.message,
            error=error(event, device_id),
        )
    return _progress(event)


def _progress(event: Progress) -> pb.JobProgress:
    stage = _STAGES.get(event.stage, pb.JobProgress.STAGE_UNSPECIFIED)
    detail = event.detail if event.stage in _STAGES else f"{event.stage}: {event.detail}".rstrip(": ")
    return pb.JobProgress(build_key=event.build_key, stage=stage, fraction=event.fraction, detail=detail)


def to_dict(message: Any) -> dict[str, Any]:
    """A message as JSON-ready dict (field names as in the .proto) for the registry."""
    return MessageToDict(message, preserving_proto_field_name=True)
