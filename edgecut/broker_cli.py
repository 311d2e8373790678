"""`edgecut broker`: an MQTT broker for a trial on this machine (mosquitto when installed, else iotcore).

The same broker `make demo` and the tests start (edgecut/broker.py), in the foreground until Ctrl-C or
SIGTERM. It allows anonymous clients without TLS: a trial's broker, on loopback unless asked otherwise;
a fleet's broker is configured in deploy/ (TLS, per-device ACL).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from edgecut.broker import (
    BROKER_ENV,
    CHOICES,
    BrokerError,
    EmbeddedBroker,
    chosen_broker,
    mosquitto_path,
    port_open,
)

POLL_S = 0.5  # how often a stopped broker child is noticed


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 0 to 65535, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="run an MQTT broker for a trial: mosquitto if installed, else iotcore (Ctrl-C stops)",
        description="Start the embedded MQTT broker (the one `make demo` uses) in the foreground, for a "
        "trial of `edgecut server` and agents. Anonymous and without TLS: for a fleet, use deploy/'s "
        "mosquitto configuration instead.",
    )
    p.add_argument("--port", type=_port, default=1883, help="TCP port (default 1883; 0 = any free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="listen address (default 127.0.0.1; 0.0.0.0 lets devices on the network connect)",
    )
    p.add_argument(
        "--kind",
        choices=CHOICES,
        help=f"which broker (default: ${BROKER_ENV}, else auto = mosquitto when installed, else iotcore)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    prefer = args.kind or chosen_broker()
    broker = EmbeddedBroker(args.port, args.host, prefer=prefer)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    if args.port and port_open(args.port, args.host):  # e.g. Debian's mosquitto service on 1883
        broker.close()
        raise BrokerError(
            f"something already listens on {args.host}:{args.port} (a broker service?): use it, or pick "
            "another --port (0 = any free one)"
        )
    try:
        broker.start()
        if prefer != "auto":
            why = "asked for" if args.kind else f"asked for by ${BROKER_ENV}"
        elif broker.kind == "mosquitto":
            why = f"found {mosquitto_path()}"
        else:
            why = "mosquitto is not installed"
        if broker.kind == "iotcore":  # far slower answers at fleet scale (ARCHITECTURE.md, measured)
            why += "; iotcore is for trials and tests, not fleets"
        print(f"edgecut broker: {broker.kind} ({why}) on {broker.url}; Ctrl-C stops", flush=True)
        while not stop.wait(POLL_S):
            if not broker.running:
                raise BrokerError(f"the {broker.kind} broker on {broker.url} exited")
    finally:
        broker.close()
    print(f"edgecut broker: {broker.kind} on {broker.url} stopped", file=sys.stderr, flush=True)
    return 0
