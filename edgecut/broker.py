"""Start a real MQTT broker on loopback for the demo and the tests.

Prefers Debian's mosquitto (MQTT 5, shared subscriptions) when it is installed; falls back to
iotcore (rumqttd in a pip wheel). `EDGECUT_EMBEDDED_BROKER=mosquitto|iotcore|auto` picks one for
the demo and the tests, so both are exercised. amqtt is deliberately not used: it has no shared subscriptions
and leaks retained messages (see ARCHITECTURE.md).

Either broker dies with the process that started it, even when that process is SIGKILLed: mosquitto
through the kernel's parent-death signal, iotcore's child when its stdin pipe closes.
"""

from __future__ import annotations

import ctypes
import getpass
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from edgecut.errors import EdgecutError

logger = logging.getLogger(__name__)

_MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
# Not EDGECUT_BROKER: that is the server's `broker` URL setting (EDGECUT_<SETTING>).
BROKER_ENV = "EDGECUT_EMBEDDED_BROKER"
CHOICES = ("auto", "mosquitto", "iotcore")


class BrokerError(EdgecutError):
    """No MQTT broker could be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def restartable_port(host: str = "127.0.0.1") -> int:
    """A free port *below* the kernel's ephemeral range, for a listener that is stopped and started again
    on the same port: a port from the ephemeral range can be taken, while the listener is down, as the
    local port of some client's outgoing connection (seen with 10,000 simulated devices: the restarted
    replica could not bind)."""
    low = _ephemeral_low()
    if low <= 2048:
        return free_port(host)
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low // 2), low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    return free_port(host)


def mosquitto_path() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _MOSQUITTO_PATHS if Path(p).exists()), None)


def chosen_broker(environ: dict[str, str] | None = None) -> str:
    """The broker `EDGECUT_EMBEDDED_BROKER` asks for (default auto: mosquitto when installed, else iotcore)."""
    value = (os.environ if environ is None else environ).get(BROKER_ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise BrokerError(f"{BROKER_ENV}={value!r}: choose one of {', '.join(CHOICES)}")
    return value


def die_with_parent() -> None:
    """In a child before exec: the kernel sends it SIGTERM when its parent dies (Linux; a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port (used to prove nothing is left running)."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A broker child process on 127.0.0.1; `stop()` then `start()` keeps the same port."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", prefer: str | None = None) -> None:
        prefer = chosen_broker() if prefer is None else prefer
        if prefer not in CHOICES:
            raise BrokerError(f"unknown broker {prefer!r}: choose auto, mosquitto or iotcore")
        self.host = host
        self.port = port or restartable_port(host)
        self.kind = "mosquitto" if prefer != "iotcore" and mosquitto_path() else "iotcore"
        if prefer == "mosquitto" and self.kind != "mosquitto":
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self._proc: subprocess.Popen[bytes] | None = None
        self._iot: Any = None
        self._tmp = tempfile.TemporaryDirectory(prefix="edgecut-broker-")

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Start (again); call it from a thread that lives as long as the broker should: the kernel's
        parent-death signal follows the thread that started the child, not the process."""
        if self.kind == "mosquitto":
            self._start_mosquitto(timeout)
        else:
            self._start_iotcore(timeout)
        logger.info("MQTT broker %s listening on %s", self.kind, self.url)
        return self

    def _start_mosquitto(self, timeout: float) -> None:
        conf = Path(self._tmp.name) / "mosquitto.conf"
        # `user` = ourselves: run as root, mosquitto would switch to its own user, which clears the
        # parent-death signal below.
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            f"max_queued_messages 10000\nlog_dest none\nuser {getpass.getuser()}\n"
        )
        exe = mosquitto_path()
        assert exe is not None
        # Its own session: a terminal's Ctrl-C goes to the owner, which stops its clients before the broker.
        # The parent-death signal ends it if the owner is killed outright and cannot stop it. util-linux's
        # setpriv sets it without Python code in the child: a preexec_fn forces a real fork(), whose gRPC
        # fork handlers could kill the child when the owner has gRPC threads running (seen in tests).
        setpriv = shutil.which("setpriv")
        self._proc = subprocess.Popen(
            [setpriv, "--pdeathsig", "TERM", exe, "-c", str(conf)] if setpriv else [exe, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=None if setpriv else die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrokerError(f"mosquitto exited at start on port {self.port}: {err.strip()}")
            if port_open(self.port, self.host):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout}s")

    def _start_iotcore(self, timeout: float) -> None:
        try:
            import iotcore
        except ImportError as exc:
            raise BrokerError("no MQTT broker available: install mosquitto or `pip install iotcore`") from exc
        try:
            self._iot = iotcore.Broker(port=self.port, listen=self.host).start(timeout=timeout)
        except (OSError, RuntimeError) as exc:
            raise BrokerError(f"iotcore broker failed on port {self.port}: {exc}") from exc

    def stop(self) -> None:
        """Stop the broker and release its port; safe to call twice."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        if self._iot is not None:
            self._iot.stop()
            self._iot = None

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._iot is not None and bool(self._iot.is_running)

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
