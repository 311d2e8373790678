"""systemd's service notification protocol (sd_notify), for `Type=notify` units, without libsystemd.

`READY=1` once the service is up, `WATCHDOG=1` every half `WatchdogSec` while a health check passes
(a hung process stops pinging and systemd restarts it), `STOPPING=1` on the way out. Outside systemd
(`NOTIFY_SOCKET` unset) every call does nothing. The protocol is one datagram per message on a unix
socket whose path is `NOTIFY_SOCKET` (a leading `@` names an abstract socket).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())  # the variables may be inherited by a child
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else 0.0
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        """Send one notification (`KEY=value` lines); False when not under systemd or it failed."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall(message.encode())
            return True
        except OSError as exc:
            logger.warning("sd_notify to %s failed: %s", self.address.lstrip("\0"), exc)
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def start_watchdog(self, healthy: Callable[[], bool], stop: threading.Event) -> None:
        """Ping every half watchdog period while `healthy()` holds; nothing when no watchdog is set."""
        if not self.enabled or not self.watchdog_s:
            return

        def loop() -> None:
            while not stop.wait(self.watchdog_s / 2):
                try:
                    ok = healthy()
                except Exception:
                    logger.exception("health check failed")
                    ok = False
                if ok:
                    self.send("WATCHDOG=1")
                else:
                    logger.error("unhealthy: not pinging the systemd watchdog (systemd will restart us)")

        self._thread = threading.Thread(target=loop, name="sd-watchdog", daemon=True)
        self._thread.start()
