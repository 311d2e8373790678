"""The composition root: a fleet server wired to its web dashboard.

The one module that knows both edgecut.server.fleet and edgecut.server.web: fleet/ never imports web/,
and web/ reads a fleet through the small `web.app.Fleet` protocol. `edgecut server`, the demo and the
tests build their servers here. Module scope stays light (no grpc, no FastAPI): `edgecut --help`
imports this module; the service and the dashboard load when a server is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgecut.server.fleet.app import FleetServer, Frontend
    from edgecut.server.fleet.settings import ServerSettings
    from edgecut.server.spec import Engine


def build_server(settings: ServerSettings, engine: Engine, embedded_broker: str = "") -> FleetServer:
    """A fleet server (not started) that serves the dashboard on `settings.http` when it is set."""
    from edgecut.server.fleet.app import FleetServer

    return FleetServer(settings, engine, embedded_broker, dashboard=_dashboard if settings.http else None)


def _dashboard(server: FleetServer) -> Frontend:
    from edgecut.server.web.app import start_dashboard  # FastAPI, uvicorn: only when asked for

    return start_dashboard(server, server.settings.http)
