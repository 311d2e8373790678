"""`edgecut server` (the fleet service) and `edgecut bench download`.

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
    """Add `edgecut server` and `edgecut bench download` (joining an existing `bench` command if any).

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
    register_bench(_bench_subparsers(sub))


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    b = bench_sub.add_parser(
        "download", help="DownloadModel throughput on loopback -> docs/benchmarks.md (Fleet service section)"
    )
    b.add_argument("--size-mb", type=float, default=64.0, help="artifact size in MiB (default 64)")
    b.add_argument("--chunks-kb", default="64,256,1024", help="chunk sizes in KiB, comma separated")
    b.add_argument("--repeats", type=int, default=5, help="timed downloads per chunk size (default 5)")
    b.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"), help="markdown file to update")
    b.add_argument("--no-write", action="store_true", help="print the table only")
    b.set_defaults(handler=run_bench_download)
    f = bench_sub.add_parser(
        "fleet", help="simulated devices against a real fleet server, with faults -> docs/reliability.md"
    )
    f.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    f.add_argument("--processes", type=int, default=4, help="device processes (default 4)")
    f.add_argument(
        "--build-s", type=float, default=2.0, help="seconds per build of the fast engine (default 2)"
    )
    f.add_argument("--no-faults", action="store_true", help="no broker restart, server kill or full disk")
    f.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "iotcore"),
        default="auto",
        help="the broker the bench starts (default auto: mosquitto when installed, else iotcore)",
    )
    f.add_argument("--replicas", type=int, default=1, help="fleet server replicas (default 1)")
    f.add_argument(
        "--registry-url", default="", help="PostgreSQL registry the replicas share (needed for 2+)"
    )
    f.add_argument("--lease-s", type=float, default=5.0, help="job lease seconds of the replicas (default 5)")
    f.add_argument("--output", type=Path, default=Path("docs/reliability.md"), help="markdown file to update")
    f.add_argument("--no-write", action="store_true", help="print the results only")
    f.set_defaults(handler=run_bench_fleet)


def _bench_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    existing = sub.choices.get("bench")
    if existing is not None:
        for action in existing._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        raise ConfigError("`edgecut bench` exists without subcommands; cannot add `bench download`")
    bench = sub.add_parser("bench", help="measure edgecut and write docs/benchmarks.md")
    return bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)


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


def run_bench_download(args: argparse.Namespace) -> int:
    from edgecut.benchdoc import write_section
    from edgecut.server.bench import download as bench_download

    try:
        chunks = [int(float(c) * 1024) for c in args.chunks_kb.split(",") if c.strip()]
    except ValueError as exc:
        raise ConfigError(f"--chunks-kb {args.chunks_kb!r}: expected numbers like 64,256,1024") from exc
    if not chunks or args.size_mb <= 0 or args.repeats < 1:
        raise ConfigError("--chunks-kb, --size-mb and --repeats must be positive")
    rows = bench_download.run(int(args.size_mb * 2**20), chunks, args.repeats)
    command = (
        "edgecut bench download "
        + f"--size-mb {args.size_mb:g} --chunks-kb {args.chunks_kb} --repeats {args.repeats}"
    )
    body = bench_download.table(rows, command)
    print(f"## {bench_download.SECTION}\n\n{body}")
    if not args.no_write:
        write_section(args.output, bench_download.SECTION, body)
        print(f"wrote the Fleet service section of {args.output}", file=sys.stderr)
    return 0


def run_bench_fleet(args: argparse.Namespace) -> int:
    from edgecut.benchdoc import write_section
    from edgecut.server.bench import fleet as bench_fleet

    if args.devices < 1 or args.processes < 1 or args.build_s < 0 or args.replicas < 1 or args.lease_s < 2:
        raise ConfigError(
            "--devices, --processes and --replicas must be at least 1, --build-s 0, --lease-s 2"
        )
    outcome = bench_fleet.run(
        args.devices,
        min(args.processes, args.devices),
        args.build_s,
        not args.no_faults,
        lambda line: print(line, file=sys.stderr, flush=True),
        broker_kind=args.broker,
        replicas=args.replicas,
        registry_url=args.registry_url,
        lease_s=args.lease_s,
    )
    command = f"edgecut bench fleet --devices {args.devices} --processes {args.processes} --build-s {args.build_s:g}"
    if args.broker != "auto":
        command += f" --broker {args.broker}"
    if args.replicas > 1:
        command += f" --replicas {args.replicas} --registry-url postgresql://... --lease-s {args.lease_s:g}"
    body = bench_fleet.markdown(outcome, command + (" --no-faults" if args.no_faults else ""))
    print(f"## {bench_fleet.SECTION}\n\n{body}")
    if not args.no_write:
        if not args.output.exists():
            args.output.write_text("# Reliability\n")
        write_section(args.output, bench_fleet.SECTION, body)
        print(f"wrote the {bench_fleet.SECTION!r} section of {args.output}", file=sys.stderr)
    return 0 if outcome.lost == 0 else 1


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
