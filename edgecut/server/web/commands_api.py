"""Operator commands over the JSON API: send one, list them, read the audit log.

`POST /api/v1/devices/{id}/commands` answers 202 with the command's record as soon as it is signed,
recorded and published (state `sent`); the device's ack turns it `ok` or `failed` (an SSE `command`
notice says so, and the device page shows it). Refusals are 4xx with one sentence in `detail`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from edgecut.server.fleet.commands.desk import CommandDesk, CommandError
from edgecut.server.web.auth import OPERATOR, Operator, operator, reader
from edgecut.server.web.context import WebContext

router = APIRouter()


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["set_tasks", "pin", "unpin", "rollback"] = Field(
        description="set_tasks (with tasks), pin (keep the serving model), unpin, rollback (previous model, pinned)"
    )
    tasks: list[str] | None = Field(default=None, max_length=32, description="for set_tasks")


def _desk(request: Request) -> CommandDesk:
    ctx: WebContext = request.app.state.ctx
    if ctx.commands is None:
        raise HTTPException(503, "this server has no MQTT broker configured: commands cannot reach devices")
    return ctx.commands


@router.post("/api/v1/devices/{device_id}/commands", status_code=202, summary="Send a command to a device")
def send(
    request: Request, device_id: str, body: CommandRequest, who: Operator = Depends(operator)
) -> dict[str, Any]:
    desk = _desk(request)
    if who.role != OPERATOR:
        reason = f"{who.who} is a {who.role}: only an operator may send commands"
        desk.refuse(who.who, who.origin, body.action, device_id, reason)
        raise HTTPException(403, reason)
    try:
        return desk.send(device_id, body.action, who.who, who.origin, body.tasks)
    except CommandError as exc:
        raise HTTPException(exc.status, str(exc)) from exc


@router.get("/api/v1/commands", summary="Commands, newest first", dependencies=[Depends(reader)])
def commands(
    request: Request, device_id: str | None = None, limit: int = Query(50, ge=1, le=1000)
) -> dict[str, Any]:
    return {"commands": _desk(request).recent(device_id, limit)}


@router.get(
    "/api/v1/commands/{command_id}", summary="One command and its outcome", dependencies=[Depends(reader)]
)
def command(request: Request, command_id: str) -> dict[str, Any]:
    found = _desk(request).get(command_id)
    if found is None:
        raise HTTPException(404, f"no command {command_id[:40]!r}")
    return found


@router.get(
    "/api/v1/audit",
    summary="The audit log: who asked for what, when, and how it ended",
    dependencies=[Depends(reader)],
)
def audit(
    request: Request, device_id: str | None = None, limit: int = Query(100, ge=1, le=10_000)
) -> dict[str, Any]:
    return {"audit": _desk(request).audit(limit, device_id)}
