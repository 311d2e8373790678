"""The dashboard's ASGI app: pages, the JSON API, SSE and /metrics; `Dashboard` wires it to a fleet's parts.

`Dashboard` subscribes the hub (SSE) and the metrics to the fleet's events and serves the app with
uvicorn on its own thread (server.py). FastAPI's interactive docs are off: they load their scripts
from a CDN, and the dashboard must work offline; the OpenAPI schema is at /api/v1/openapi.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr

from edgecut import __version__
from edgecut.server.fleet.commands.desk import CommandDesk
from edgecut.server.fleet.events import Observers
from edgecut.server.fleet.jobs.rollout import RolloutManager
from edgecut.server.fleet.policy.budget import FALLBACK, BudgetPolicy
from edgecut.server.fleet.settings import ServerSettings
from edgecut.server.fleet.state.history import FleetHistory
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store
from edgecut.server.web import api, commands_api, pages
from edgecut.server.web.auth import AllowedHosts
from edgecut.server.web.context import User, WebContext
from edgecut.server.web.events import EventHub
from edgecut.server.web.metrics import FleetMetrics
from edgecut.server.web.server import HttpServer, HttpTls
from edgecut.server.web.views import Views

STATIC = Path(__file__).parent / "static"


class Fleet(Protocol):
    """The parts of a running fleet server the dashboard reads and watches (edgecut.server.app hands it one)."""

    @property
    def settings(self) -> ServerSettings: ...
    @property
    def registry(self) -> Registry | None: ...
    @property
    def store(self) -> Store | None: ...
    @property
    def history(self) -> FleetHistory | None: ...
    @property
    def rollouts(self) -> RolloutManager | None: ...
    @property
    def commands(self) -> CommandDesk | None: ...
    @property
    def policy(self) -> BudgetPolicy: ...
    @property
    def observers(self) -> Observers: ...


def create_app(ctx: WebContext) -> FastAPI:
    app = FastAPI(
        title="edgecut fleet",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.ctx = ctx
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api.health)
    app.include_router(api.router)
    app.include_router(commands_api.router)
    app.include_router(pages.router)
    app.add_middleware(AllowedHosts, allowed=ctx.allowed_hosts)
    return app


class Dashboard:
    """Pages + API + SSE + metrics for one fleet server, on `address` (host:port)."""

    def __init__(self, ctx: WebContext, address: str, tls: HttpTls | None = None) -> None:
        self.ctx = ctx
        self.http = HttpServer(create_app(ctx), address, tls)

    @property
    def url(self) -> str:
        return self.http.url

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> Dashboard:
        self.http.start()
        return self

    def stop(self) -> None:
        self.ctx.hub.close()
        self.http.stop()


def start_dashboard(fleet: Fleet, address: str) -> Dashboard:
    """Subscribe the SSE hub and the metrics to `fleet`'s events and serve the dashboard on `address`."""
    assert fleet.registry is not None and fleet.store is not None and fleet.history is not None
    hub = EventHub()
    rollouts = fleet.rollouts
    views = Views(fleet.registry, fleet.store, fleet.history, hub, rollouts)
    metrics = FleetMetrics(
        devices=views.class_counts,
        rollouts=rollouts.state_counts if rollouts is not None else dict,
        classes=frozenset(fleet.policy.classes) | {FALLBACK},
    )
    fleet.observers.add(hub)
    fleet.observers.add(metrics)
    s = fleet.settings
    users = {
        name: User(u.get_secret_value())
        if isinstance(u, SecretStr)
        else User(u.password.get_secret_value(), u.role)
        for name, u in s.http_users.items()
    }
    tls = (
        HttpTls(s.http_tls_cert, s.http_tls_key, s.http_client_ca)
        if s.http_tls_cert and s.http_tls_key
        else None
    )
    ctx = WebContext(
        views,
        hub,
        metrics,
        fleet.commands,
        users,
        mutual_tls=bool(tls and tls.client_ca),
        allowed_hosts=list(s.http_allowed_hosts),
    )
    return Dashboard(ctx, address, tls).start()
