"""`edgecut server` (the fleet service), `keygen`, `command` and `health`.

Module scope stays light (no torch, no grpc): the engine and the service are imported in the handlers.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from edgecut.errors import ConfigError, EdgecutError
from edgecut.server.cliopts import add_data, add_floor, add_model
from edgecut.server.paths import CHECKPOINT_HELP, DEFAULT_DATA_DIR, reference_checkpoint

if TYPE_CHECKING:
    from edgecut.server.fleet.app import FleetServer
    from edgecut.server.fleet.settings import ServerSettings
    from edgecut.server.spec import Engine

    ServerBuilder = Callable[[ServerSettings, Engine], FleetServer]

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction, build_server: ServerBuilder | None = None) -> None:
    """Add `edgecut server`, `keygen`, `command` and `health`.

    `build_server` makes the server `edgecut server` runs: edgecut.server.app's, which wires the
    dashboard (this package never imports web/); without it, a server with `http` set is refused."""
    p = sub.add_parser(
        "server",
        help="run the fleet service: gRPC (RequestModel, DownloadModel) + MQTT bridge",
        description="Tailor models for the devices that ask over MQTT or gRPC and deliver them. "
        "Settings come from --config YAML, then EDGECUT_<SETTING> variables, then these options.",
    )
    p.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP.replace("DATA_DIR", str(DEFAULT_DATA_DIR)))
    add_model(p)
    add_data(p)
    add_floor(p, default=None)
    p.add_argument(
        "--train-data",
        metavar="FOLDER|synthetic|off",
        help="labelled data for from-scratch candidates (default: synthetic scenes when they label every "
        "task and the calibration data is synthetic)",
    )
    p.add_argument("--broker", help="MQTT broker URL, e.g. mqtt://127.0.0.1:1883 ('' disables MQTT)")
    p.add_argument("--grpc", help="gRPC listen address host:port (default 127.0.0.1:50051)")
    p.add_argument("--public-grpc", help="gRPC address told to devices (default: the listen address)")
    p.add_argument("--state-dir", type=Path, help="registry, artifacts and scratch (default .edgecut/server)")
    p.add_argument("--workers", type=int, help="concurrent builds (default 1)")
    p.add_argument(
        "--signing-key", type=Path, help="Ed25519 key that signs offers (default STATE_DIR/fleet-signing.key)"
    )
    p.add_argument(
        "--http",
        help="dashboard, JSON API and /metrics on host:port, e.g. 127.0.0.1:8080 (default off; 'off' disables)",
    )
    p.add_argument("--config", type=Path, help="YAML settings file")
    p.set_defaults(handler=run_server, build_server=build_server)
    m = p.add_subparsers(title="maintenance", metavar="migrate").add_parser(
        "migrate",
        help="upgrade the registry database's schema to this edgecut's newest revision, then exit",
        description="Upgrade the registry database (what `edgecut server` does at start, under a lock on "
        "PostgreSQL) and say from which revision to which. Back the database up first.",
    )
    m.add_argument(
        "--url", help="registry URL (default: registry_url from the settings, or STATE_DIR's SQLite)"
    )
    # SUPPRESS: given before `migrate` (edgecut server --config F migrate), the server's own options count
    m.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help="the server's state dir")
    m.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="the server's YAML settings file")
    m.set_defaults(handler=run_migrate)
    k = sub.add_parser(
        "keygen", help="make an Ed25519 key (fleet signing or operator) and print its public half"
    )
    k.add_argument("path", type=Path, help="where to write the private key (PEM, mode 0600)")
    k.set_defaults(handler=run_keygen)
    c = sub.add_parser("command", help="send a signed operator command to a device and wait for its ack")
    c.add_argument("device_id")
    c.add_argument("action", choices=["set-tasks", "rollback", "pin", "unpin"])
    c.add_argument("tasks", nargs="?", help="for set-tasks: e.g. seg,depth")
    c.add_argument("--key", type=Path, required=True, help="operator private key (edgecut keygen)")
    c.add_argument(
        "--broker", default="mqtt://127.0.0.1:1883", help="broker URL (mqtts://user:pass@host:port)"
    )
    c.add_argument("--ca-file", type=Path, help="CA of the broker's certificate (mqtts)")
    c.add_argument("--cert-file", type=Path, help="client certificate for the broker")
    c.add_argument("--key-file", type=Path, help="client key for the broker")
    c.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the ack")
    c.set_defaults(handler=run_command)
    h = sub.add_parser(
        "health",
        help="ask a fleet server's gRPC health service; exit 0 when it is SERVING (for container probes)",
    )
    h.add_argument("address", help="host:port of the server's gRPC listener")
    h.add_argument(
        "--service", default="", help="service name ('' = the whole server, or edgecut.v1.FleetService)"
    )
    h.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    h.set_defaults(handler=run_health)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "checkpoint": args.checkpoint,
        "broker": args.broker,
        "grpc": args.grpc,
        "public_grpc": args.public_grpc,
        "state_dir": args.state_dir,
        "workers": args.workers,
        "signing_key": args.signing_key,
        "calib_data": args.calib_data,
        "min_delta_m": args.min_delta_m,
        "http": "" if args.http == "off" else args.http,
        "model": args.model,
        "val_data": args.val_data,
        "train_data": args.train_data,
        "image_scale": args.image_scale,
    }


def run_server(args: argparse.Namespace) -> int:
    from edgecut.sdnotify import Notifier
    from edgecut.server.fleet.app import FleetServer, masked
    from edgecut.server.fleet.settings import load_settings

    settings = load_settings(args.config, _overrides(args))
    if settings.checkpoint is None:
        settings.checkpoint = reference_checkpoint(DEFAULT_DATA_DIR)
        print(
            f"edgecut server: no --checkpoint, tailoring the reference model {settings.checkpoint}",
            file=sys.stderr,
        )
    if not settings.checkpoint.is_file():
        raise ConfigError(f"checkpoint {settings.checkpoint} does not exist (train one with `edgecut train`)")
    settings.state_dir.mkdir(parents=True, exist_ok=True)

    from edgecut.server.engine import load_engine  # imports torch

    # positional: the engine names its first parameter checkpoint_path
    engine = load_engine(
        settings.checkpoint,
        settings.state_dir,
        calib_data=settings.calib_data,
        val_data=settings.val_data,
        model=settings.model,
        image_scale=settings.image_scale,
        train_data=settings.train_data,
        scratch_seconds=settings.scratch_seconds,
        min_delta_m=settings.min_delta_m,
    )
    engine.fp16 = settings.fp16_variants
    print(f"edgecut server: calibrating on {engine.calibrated_on}", file=sys.stderr, flush=True)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    build: ServerBuilder = getattr(args, "build_server", None) or FleetServer
    server = build(settings, engine).start()
    dashboard = f"dashboard {server.http_url}/fleet, " if server.http_url else ""
    print(
        f"edgecut server: gRPC {settings.grpc} (devices told {server.grpc_address}), "
        f"broker {masked(settings.broker) or 'off'}, {dashboard}state {settings.state_dir}; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    systemd = Notifier()  # a no-op unless run by systemd (Type=notify)
    systemd.ready(f"gRPC {server.grpc_address}")
    systemd.start_watchdog(server.alive, stop)
    try:
        stop.wait()
    finally:
        systemd.stopping()
        server.stop()
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    from edgecut.server.fleet.settings import load_settings
    from edgecut.server.fleet.state.registry import Registry

    settings = load_settings(args.config, {"registry_url": args.url, "state_dir": args.state_dir})
    if not settings.registry_url:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(settings.registry)
    try:
        print(f"edgecut server migrate: registry {registry.url}: {registry.migration}")
    finally:
        registry.close()
    return 0


class Unhealthy(EdgecutError):
    """The server did not answer SERVING."""

    exit_code = 1


def run_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNAVAILABLE"
            raise Unhealthy(
                f"no health answer from {args.address} within {args.timeout:g} s ({code})"
            ) from exc
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise Unhealthy(f"{args.address} answers {status}")
    print(f"{args.address}: {status}")
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    from edgecut.server.fleet.commands.client import keygen

    key = keygen(args.path)
    print(key.public_text)
    print(f"wrote {args.path} (key id {key.key_id}); give the line above to the devices", file=sys.stderr)
    return 0


def run_command(args: argparse.Namespace) -> int:
    from edgecut.server.fleet.commands import client as commands
    from edgecut.server.fleet.link.broker import BrokerAuth
    from edgecut.signing import load_signing_key

    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    cmd = commands.build(args.device_id, args.action, tasks)
    auth = BrokerAuth(args.ca_file, args.cert_file, args.key_file)
    ack = commands.send(args.broker, load_signing_key(args.key), cmd, auth, args.timeout)
    if not ack.ok:
        raise commands.CommandFailed(f"{args.device_id} refused {args.action}: {ack.reason}")
    print(f"{args.device_id} did {args.action} (command {ack.command_id})")
    return 0
