"""What the dashboard's routes work with, in one object on `app.state.ctx`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from edgecut.server.web.events import EventHub
from edgecut.server.web.metrics import FleetMetrics
from edgecut.server.web.views import Views


class CommandDesk(Protocol):
    """Operator commands as the dashboard uses them (edgecut.server.fleet.commands)."""

    def list(self, device_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]: ...


@dataclass
class WebContext:
    views: Views
    hub: EventHub
    metrics: FleetMetrics
    commands: CommandDesk | None = None
