"""What the dashboard's routes work with, in one object on `app.state.ctx`."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecut.server.fleet.commands.desk import CommandDesk
from edgecut.server.web.events import EventHub
from edgecut.server.web.metrics import FleetMetrics
from edgecut.server.web.views import Views

VIEWER, OPERATOR = "viewer", "operator"


@dataclass(frozen=True)
class User:
    """A dashboard user (HTTP Basic): a viewer reads, an operator also sends commands."""

    password: str = field(repr=False)
    role: str = OPERATOR


@dataclass
class WebContext:
    views: Views
    hub: EventHub
    metrics: FleetMetrics
    commands: CommandDesk | None = None  # None without MQTT: there is no way to reach a device
    users: dict[str, User] = field(default_factory=dict)  # HTTP Basic: name -> password and role (auth.py)
    mutual_tls: bool = False  # every connection presented a certificate of the configured client CA
    allowed_hosts: list[str] = field(default_factory=list)  # Host names besides localhost and IPs
