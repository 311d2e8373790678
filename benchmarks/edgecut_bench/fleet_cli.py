"""`edgecut bench download` (the fleet service's DownloadModel throughput) and `edgecut bench fleet`
(simulated devices against a real fleet server, with faults); the benches load in their handlers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgecut.errors import ConfigError


def register(bench_sub: argparse._SubParsersAction) -> None:
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


def run_bench_download(args: argparse.Namespace) -> int:
    from edgecut.doc_sections import write_section
    from edgecut_bench import download as bench_download

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
    from edgecut.doc_sections import write_section
    from edgecut_bench import clone
    from edgecut_bench import fleet as bench_fleet

    if args.devices < 1 or args.processes < 1 or args.build_s < 0 or args.replicas < 1 or args.lease_s < 2:
        raise ConfigError(
            "--devices, --processes and --replicas must be at least 1, --build-s 0, --lease-s 2"
        )
    clone.support("onnx_engine", "`edgecut bench fleet` (its server runs the tests' fast ONNX engine)")
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
        timeout_s=max(600.0, 0.15 * args.devices),  # per phase: 10,000 devices need more than 10 min here
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
