"""The dashboard's HTTP server: bad addresses and taken ports are clear errors at start, stop is prompt."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from edgecut.broker import port_open
from edgecut.errors import ConfigError
from edgecut.server.fleet.settings import load_settings
from edgecut.server.web.server import HttpServer


def app() -> Starlette:
    return Starlette(routes=[Route("/", lambda _r: PlainTextResponse("hello"))])


def test_serves_on_a_free_port_and_stops() -> None:
    server = HttpServer(app(), "127.0.0.1:0").start()
    try:
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        with urllib.request.urlopen(server.url + "/", timeout=10) as r:
            assert r.read() == b"hello"
    finally:
        server.stop()
    assert not port_open(server.port)  # nothing listens there any more


def test_a_taken_port_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen for HTTP on '127.0.0.1:{port}'"):
            HttpServer(app(), f"127.0.0.1:{port}").start()


@pytest.mark.parametrize("bad", ["8080", "localhost:", "127.0.0.1:99999", ":8080"])
def test_a_bad_address_in_the_settings_names_the_key(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(overrides={"http": bad}, environ={})
    assert "http = " in str(err.value) and "host:port" in str(err.value)
