"""The dashboard's HTTP server: uvicorn on its own thread beside the gRPC server and the MQTT bridge.

Optional HTTPS (uvicorn's TLS), and with a client CA mutual TLS: only clients holding a certificate
that CA signed complete the handshake. The socket is bound in `start()` on the caller's thread, so a
taken port or a bad address is a `ConfigError` at start-up (not a log line from a background thread),
and port 0 gives the bound port at once (tests). `stop()` asks uvicorn to exit and waits for the thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from edgecut.errors import ConfigError
from edgecut.server.fleet.settings import split_host_port

logger = logging.getLogger(__name__)

GRACEFUL_S = 3  # open SSE streams are closed by the hub first; this bounds anything else


@dataclass(frozen=True)
class HttpTls:
    """HTTPS for the dashboard: the server's certificate and key; with `client_ca`, mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None


class HttpServer:
    def __init__(self, app: ASGIApp, address: str, tls: HttpTls | None = None) -> None:
        self.app, self.address, self.tls = app, address, tls
        self.port = 0
        self.host = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> HttpServer:
        try:
            host, port = split_host_port(self.address)
        except ValueError as exc:
            raise ConfigError(f"http address: {exc}") from exc
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen for HTTP on {self.address!r}: {exc.strerror or exc}") from exc
        sock.listen(128)
        sock.setblocking(False)
        self._sock, self.host, self.port = sock, host, sock.getsockname()[1]
        tls = self.tls
        for path in (tls.cert, tls.key, tls.client_ca) if tls else ():
            if path is not None and not Path(path).is_file():
                sock.close()
                raise ConfigError(f"HTTP TLS file {path} does not exist")
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_S,
            lifespan="off",
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            ssl_ca_certs=str(tls.client_ca) if tls and tls.client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.client_ca else ssl.CERT_NONE,
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="edgecut-http", daemon=True)
        self._thread.start()
        if not started.wait(15):
            raise ConfigError(f"the HTTP server on {self.address} did not start within 15 s")
        logger.info("dashboard on %s", self.url)
        return self

    def _run(self, started: threading.Event) -> None:
        assert self._server is not None and self._sock is not None
        server, sock = self._server, self._sock

        async def serve() -> None:
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            started.set()
            await task

        try:
            asyncio.run(serve())
        except Exception:
            logger.exception("the HTTP server stopped with an error")
        finally:
            started.set()

    def stop(self, timeout: float = GRACEFUL_S + 5) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._server = None
