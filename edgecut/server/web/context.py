"""What the dashboard's routes work with, in one object on `app.state.ctx`."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecut.server.fleet.command_desk import CommandDesk
from edgecut.server.web.events import EventHub
from edgecut.server.web.metrics import FleetMetrics
from edgecut.server.web.views import Views


@dataclass
class WebContext:
    views: Views
    hub: EventHub
    metrics: FleetMetrics
    commands: CommandDesk | None = None  # None without MQTT: there is no way to reach a device
    users: dict[str, str] = field(default_factory=dict)  # HTTP Basic: name -> password (auth.py)
    mutual_tls: bool = False  # every connection presented a certificate of the configured client CA
