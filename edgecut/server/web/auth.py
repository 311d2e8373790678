"""Who is asking: HTTP Basic users from the server config, mutual TLS, else this machine only for commands.

With `http_users` set (name -> password), every page and API route asks for one of them (HTTP Basic;
serve the dashboard over HTTPS (`http_tls_cert`/`http_tls_key`) or keep it on loopback, since Basic
sends the password as is), and the name is what the audit log records. With a client CA
(`http_client_ca`) and no users, every connection has already shown a certificate that CA signed
(the handshake refuses the rest), so commands are taken from any of them, recorded as `tls-client`.
Otherwise anyone who can reach the port may read, but commands are taken only from loopback clients,
recorded as `local`. A command must also come from the
dashboard's own origin: a browser sends `Origin` with a cross-site POST, and one naming another host
is refused, so a web page elsewhere cannot make an operator's browser send commands.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlparse

from fastapi import HTTPException, Request

from edgecut.server.web.context import WebContext

REALM = 'Basic realm="edgecut fleet", charset="UTF-8"'


@dataclass(frozen=True)
class Operator:
    who: str
    origin: str  # the client's address


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
    if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
        return None
    return name


def reader(request: Request) -> None:
    """Dependency of every page and read route: a configured user when there are users."""
    if _ctx(request).users and _user(request) is None:
        raise HTTPException(
            401, "sign in with a user from the server's http_users", {"WWW-Authenticate": REALM}
        )


def operator(request: Request) -> Operator:
    """Dependency of the command routes: who sends it, refused with a sentence when nobody may."""
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
        return Operator(name, client)
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
