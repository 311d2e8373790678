"""The three pages (fleet, device, builds), rendered on the server from the same views as the JSON API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from edgecut.server.web.api import device_detail
from edgecut.server.web.auth import reader
from edgecut.server.web.context import WebContext

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(dependencies=[Depends(reader)])


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


@router.get("/", include_in_schema=False)
def index() -> RedirectResponse:
    return RedirectResponse("/fleet")


@router.get("/fleet", response_class=HTMLResponse, include_in_schema=False, name="fleet_page")
def fleet_page(
    request: Request, status: str = Query(""), device_class: str = Query(""), task: str = Query("")
) -> HTMLResponse:
    fleet = _ctx(request).views.fleet(status, device_class, task)
    return TEMPLATES.TemplateResponse(request, "fleet.html", {"page": "fleet", "fleet": fleet})


@router.get("/devices/{device_id}", response_class=HTMLResponse, include_in_schema=False, name="device_page")
def device_page(request: Request, device_id: str) -> HTMLResponse:
    ctx = _ctx(request)
    d = device_detail(ctx, device_id)
    return TEMPLATES.TemplateResponse(
        request, "device.html", {"page": "device", "d": d, "commands_enabled": ctx.commands is not None}
    )


@router.get("/builds", response_class=HTMLResponse, include_in_schema=False, name="builds_page")
def builds_page(request: Request) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request, "builds.html", {"page": "builds", "b": _ctx(request).views.builds()}
    )


# -- filters: how numbers read on the pages --------------------------------------------------------


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0.0, time.time() - float(t))
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    if s < 86400:
        return f"{s / 3600:.1f} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(t)))


def _si(n: float | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def _signed_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f} %"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _ms(x: float | None) -> str:
    return "-" if not x else (f"{x:.2f} ms" if x < 10 else f"{x:.0f} ms")


def _secs(x: float | None) -> str:
    return "-" if x is None else (f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min")


def _bytes(n: int | None) -> str:
    if not n:
        return "-"
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _resources(r: dict[str, Any]) -> str:
    parts = []
    if r.get("cpu_count"):
        ghz = f" @ {r['cpu_freq_mhz'] / 1000:.1f} GHz" if r.get("cpu_freq_mhz") else ""
        parts.append(f"{r['cpu_count']} cores{ghz}")
    if r.get("arch"):
        parts.append(str(r["arch"]))
    if r.get("ram_total_bytes"):
        parts.append(_bytes(int(r["ram_total_bytes"])) + " RAM")
    return " · ".join(parts) or "-"


def _args(a: dict[str, Any] | None) -> str:
    if not a:
        return ""
    return " ".join(f"{k}={','.join(v) if isinstance(v, list) else str(v)[:12]}" for k, v in a.items())


TEMPLATES.env.filters.update(
    ago=_ago,
    si=_si,
    pct=_pct,
    signed_pct=_signed_pct,
    num=_num,
    ms=_ms,
    secs=_secs,
    bytes=_bytes,
    resources=_resources,
    args=_args,
)
