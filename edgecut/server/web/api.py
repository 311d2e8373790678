"""The JSON API under /api/v1 (the pages are drawn from the same views), the SSE stream and /metrics.

Every route is a thin reader of `Views`; operator commands are in commands_api.py. Route functions
are plain `def`s: FastAPI runs them on its thread pool, so the (synchronous) registry never blocks
the event loop that carries the SSE streams.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from edgecut.server.fleet.state.store import check_artifact_id
from edgecut.server.web.auth import reader
from edgecut.server.web.context import WebContext
from edgecut.server.web.metrics import CONTENT_TYPE
from edgecut.server.web.views import quality_rows

router = APIRouter(dependencies=[Depends(reader)])
health = APIRouter()  # open: load balancers and probes carry no credentials


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


@router.get(
    "/api/v1/devices", summary="Every device with its status, tasks, model and latency; filters and counts"
)
def devices(
    request: Request,
    status: str = Query("", description="online, offline or unknown"),
    device_class: str = Query("", description="e.g. rpi4"),
    task: str = Query("", description="devices that select or serve this task"),
) -> dict[str, Any]:
    return _ctx(request).views.fleet(status, device_class, task)


@router.get("/api/v1/devices/{device_id}", summary="One device: summary, swaps, offers, quality, commands")
def device(request: Request, device_id: str) -> dict[str, Any]:
    return device_detail(_ctx(request), device_id)


def device_detail(ctx: WebContext, device_id: str) -> dict[str, Any]:
    """The device page's data (404 for an unknown device), with its last commands when there are any."""
    d = ctx.views.device(device_id)
    if d is None:
        raise HTTPException(404, f"no device {device_id!r} in the registry")
    if ctx.commands is not None:
        d["commands"] = ctx.commands.recent(device_id=device_id, limit=20)
    return d


@router.get("/api/v1/devices/{device_id}/telemetry", summary="Telemetry samples over time, oldest first")
def telemetry(
    request: Request,
    device_id: str,
    since: float = Query(0.0, description="unix seconds; only samples received at or after"),
    limit: int = Query(500, ge=1, le=10_000),
) -> dict[str, Any]:
    return _ctx(request).views.telemetry(device_id, since, limit)


@router.get(
    "/api/v1/builds", summary="Active and queued jobs, recent builds with quality, cache hits, rollouts"
)
def builds(request: Request, limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
    return _ctx(request).views.builds(limit)


@router.get("/api/v1/rollouts", summary="Staged rollouts, newest first, with the canaries' progress")
def rollouts(request: Request) -> dict[str, Any]:
    return {"rollouts": _ctx(request).views.rollout_list()}


@router.get(
    "/api/v1/artifacts/{artifact_id}", summary="An artifact's metadata, quality table and measured latency"
)
def artifact(request: Request, artifact_id: str) -> dict[str, Any]:
    views = _ctx(request).views
    try:
        aid = check_artifact_id(artifact_id)
    except Exception as exc:
        raise HTTPException(400, str(exc)) from exc
    meta = views.meta(aid)
    if meta is None:
        raise HTTPException(404, f"artifact {aid} is not in the store")
    return {
        "model": views.model(aid),
        "quality": quality_rows(meta),
        "ort_latency_ms": views.history.latency([aid]).get(aid),
        "meta": meta.model_dump(),
    }


@router.get("/api/v1/events", summary="Server-Sent Events: a notice per fleet change")
def events(request: Request) -> StreamingResponse:
    return StreamingResponse(
        _ctx(request).hub.stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(_ctx(request).metrics.render(), media_type=CONTENT_TYPE)


@health.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}
