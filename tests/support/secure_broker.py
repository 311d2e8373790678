"""mosquitto with deploy/mosquitto's config, ACL and certificates from deploy/mosquitto/issue-cert.sh.

The config file is deploy/mosquitto/mosquitto.conf with only the machine-specific lines replaced
(listen address and port, file paths, the user it runs as); the ACL file is used as it is.
"""

from __future__ import annotations

import getpass
import re
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgecut.broker import die_with_parent, free_port, mosquitto_path

from .processes import child_log, stop, wait_listening
from .waiting import WAIT_S

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "mosquitto"


class Pki:
    """A fleet CA in `root`, driven through deploy/mosquitto/issue-cert.sh."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run("ca")
        self.run("broker", "localhost", "127.0.0.1")

    def run(self, *args: str) -> str:
        out = subprocess.run(
            [str(DEPLOY / "issue-cert.sh"), "-d", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode:
            raise RuntimeError(f"issue-cert.sh {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def identity(self, folder: str) -> dict[str, Path]:
        d = self.root / folder
        return {"ca": d / "ca.crt", "cert": d / "client.crt", "key": d / "client.key"}

    def device(self, device_id: str) -> dict[str, Path]:
        if not (self.root / f"device-{device_id}").exists():
            self.run("device", device_id)
        return self.identity(f"device-{device_id}")

    def server(self, name: str = "edgecut") -> dict[str, Path]:
        if not (self.root / f"server-{name}").exists():
            self.run("server", name)
        return self.identity(f"server-{name}")


class SecureBroker:
    def __init__(self, pki: Pki, workdir: Path) -> None:
        if mosquitto_path() is None:
            raise RuntimeError("mosquitto is not installed")
        self.pki, self.port = pki, free_port()
        self.conf = workdir / "mosquitto.conf"
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        paths = {
            "/etc/mosquitto/certs/ca.crt": pki.root / "ca" / "ca.crt",
            "/etc/mosquitto/certs/crl.pem": pki.root / "ca" / "crl.pem",
            "/etc/mosquitto/certs/broker.crt": pki.root / "broker" / "broker.crt",
            "/etc/mosquitto/certs/broker.key": pki.root / "broker" / "broker.key",
            "/etc/mosquitto/edgecut.acl": DEPLOY / "edgecut.acl",
            "/var/lib/mosquitto/": f"{workdir / 'data'}/",
        }
        text = (DEPLOY / "mosquitto.conf").read_text()
        text, n = re.subn(r"(?m)^listener 8883$", f"listener {self.port} 127.0.0.1", text)
        assert n == 1, "deploy/mosquitto/mosquitto.conf has no `listener 8883` line"
        for deployed, here in paths.items():
            assert deployed in text, f"deploy/mosquitto/mosquitto.conf no longer names {deployed}"
            text = text.replace(deployed, str(here))
        self.conf.write_text(text + f"\nuser {getpass.getuser()}\nlog_dest stderr\n")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = child_log("mosquitto")

    def start(self) -> SecureBroker:
        exe = mosquitto_path()
        assert exe is not None
        self._proc = subprocess.Popen(
            [exe, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        wait_listening(self._proc, self.port, "mosquitto with the deploy config", self._log)
        return self

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        stop(self._proc)
        self._proc = None


class Client:
    """A paho MQTT 5 client over TLS that records what happens to it."""

    def __init__(self, broker: SecureBroker, client_id: str, ident: dict[str, Path] | None, ca: Path) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.tls_set(
            ca_certs=str(ca),
            certfile=str(ident["cert"]) if ident else None,
            keyfile=str(ident["key"]) if ident else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        self.connack: Any = None
        self.connected = threading.Event()
        self.closed = (
            threading.Event()
        )  # the broker ended the connection (e.g. after checking the certificate)
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, Any] = {}
        self.subacks: list[Any] = []
        self.changed = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.on_disconnect = lambda *_a: self.closed.set()
        self.broker = broker

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connack = reason
        if not reason.is_failure:
            self.connected.set()

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self.changed:
            self.messages.append((m.topic, bytes(m.payload)))
            self.changed.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.changed:
            self.pubacks[mid] = reason
            self.changed.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        with self.changed:
            self.subacks.append(reasons)
            self.changed.notify_all()

    def connect(self, timeout: float = 5.0) -> str:
        """'connected', or why not (TLS refused the handshake, the broker closed the connection, ...)."""
        try:
            self.c.connect("127.0.0.1", self.broker.port, keepalive=30)
        except (ssl.SSLError, OSError) as exc:
            return f"refused: {type(exc).__name__}: {exc}"
        self.c.reconnect_delay_set(60, 60)  # one attempt: a refusal must not be retried under our feet
        self.c.loop_start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected.is_set():
                return "connected"
            if self.closed.is_set():
                return f"refused: the broker closed the connection ({self.connack or 'no CONNACK'})"
            time.sleep(0.02)
        return f"refused: no CONNACK within {timeout:g} s"

    def publish(self, topic: str, payload: bytes) -> Any:
        """The PUBACK reason code of a QoS 1 publish (MQTT 5 says 'Not authorized' for an ACL refusal)."""
        mid = self.c.publish(topic, payload, qos=1).mid
        with self.changed:
            assert self.changed.wait_for(lambda: mid in self.pubacks, WAIT_S), f"no PUBACK for {topic}"
            return self.pubacks[mid]

    def subscribe(self, filters: list[tuple[str, int]]) -> list[Any]:
        n = len(self.subacks)
        self.c.subscribe(filters)
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.subacks) > n, WAIT_S), "no SUBACK"
            return list(self.subacks[n])

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
