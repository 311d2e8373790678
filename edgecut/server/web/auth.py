"""Who is asking, and whether they may: allowed hosts, HTTP Basic users with roles, mutual TLS, loopback.

Every request but `/healthz` must name this dashboard in its `Host` header: an IP address, `localhost`,
or a name in `http_allowed_hosts`. A page on another site whose name resolves to this server (DNS
rebinding) arrives with its own name in `Host` and is refused, even when its `Origin` matches.

With `http_users` set (name -> password, an operator; or name -> {password, role}), every page and API
route asks for one of them (HTTP Basic; serve the dashboard over HTTPS (`http_tls_cert`/`http_tls_key`)
or keep it on loopback, since Basic sends the password as is), a `viewer` only reads, an `operator` also
sends commands, and the name is what the audit log records. With a client CA (`http_client_ca`) and no
users, every connection has already shown a certificate that CA signed (the handshake refuses the rest),
so commands are taken from any of them, recorded as `tls-client`. Otherwise anyone who can reach the
port may read, but commands are taken only from loopback clients, recorded as `local` (the settings
refuse such a dashboard listening beyond loopback). A command must also come from the dashboard's own
origin: a browser sends `Origin` with a cross-site POST, and one naming another host is refused, so a
web page elsewhere cannot make an operator's browser send commands.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlparse

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from edgecut.server.web.context import OPERATOR, VIEWER, User, WebContext

__all__ = ["OPERATOR", "VIEWER", "AllowedHosts", "Operator", "User", "host_allowed", "operator", "reader"]

REALM = 'Basic realm="edgecut fleet", charset="UTF-8"'


@dataclass(frozen=True)
class Operator:
    who: str
    origin: str  # the client's address
    role: str = OPERATOR


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def _user(request: Request) -> str | None:
    """The configured user these Basic credentials name, None when absent or wrong."""
    users = _ctx(request).users
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    expected = users.get(name) if sep else None
    if expected is None or not hmac.compare_digest(password.encode(), expected.password.encode()):
        return None
    return name


def reader(request: Request) -> None:
    """Dependency of every page and read route: a configured user when there are users."""
    if _ctx(request).users and _user(request) is None:
        raise HTTPException(
            401, "sign in with a user from the server's http_users", {"WWW-Authenticate": REALM}
        )


def operator(request: Request) -> Operator:
    """Dependency of the command routes: who sends it, refused with a sentence when nobody may.

    A signed-in viewer is returned with its role: the route refuses and audits it (it names a device).
    """
    client = request.client.host if request.client else ""
    origin = request.headers.get("origin")
    if origin is not None and urlparse(origin).netloc != request.headers.get("host", ""):
        raise HTTPException(
            403, f"commands are taken from this dashboard's own pages, not from {origin[:80]}"
        )
    if _ctx(request).users:
        name = _user(request)
        if name is None:
            raise HTTPException(
                401, "sign in with a user from the server's http_users", {"WWW-Authenticate": REALM}
            )
        return Operator(name, client, _ctx(request).users[name].role)
    if _ctx(request).mutual_tls:
        return Operator("tls-client", client)
    if not _loopback(client):
        raise HTTPException(
            403,
            "without http_users in the server config, commands are taken only from this machine (loopback)",
        )
    return Operator("local", client)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str, allowed: list[str]) -> bool:
    """Whether a request's Host names this dashboard: an IP address, localhost, or an allowed name.

    An IP address cannot be a rebinding attack (the browser's origin is then this server itself).
    """
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return any(host == n or (n.startswith("*.") and host.endswith(n[1:])) for n in ["localhost", *allowed])


class AllowedHosts:
    """ASGI middleware: refuse (421) a request whose Host is not this dashboard's; /healthz is open."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") != "/healthz":
            host = Headers(scope=scope).get("host", "")
            if not host_allowed(host, self.allowed):
                response = JSONResponse(
                    {
                        "detail": f"this dashboard does not answer to the host name {host[:80]!r}: "
                        "add it to http_allowed_hosts in the server config"
                    },
                    status_code=421,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
