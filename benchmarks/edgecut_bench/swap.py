"""`edgecut bench swap`: inference through the local API while the agent hot-swaps models.

A real agent process (`python -m edgecut.agent agent run`) serves model A with B kept as previous;
client threads send paced Infer requests (open loop, fixed rate) while the main thread asks for
`--swaps` rollbacks (each a full load + warm-up + validation + reference swap of the other model).
Reports failed requests, p50/p99 latency of requests overlapping a swap vs. the rest, the agent's
start-up time, RSS and import time, and writes the "Agent hot-swap" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecut import signing
from edgecut.agent.provision import write_agent_config
from edgecut.agent.trust import Trust
from edgecut.agent.watch import AgentWatch
from edgecut.doc_sections import write_section
from edgecut.envelopes import sign_manifest
from edgecut.errors import ConfigError
from edgecut.v1 import fleet_pb2

SECTION = "Agent hot-swap"  # its `## ` section in docs/benchmarks.md (edgecut.doc_sections)
DEVICE_ID = "bench"
READY_S = 60.0  # for the agent to start and load its model


@dataclass
class Sample:
    start: float
    end: float
    ok: bool


def _default_models() -> list[bytes]:
    from edgecut_bench.clone import support

    build_model = support("onnx_models", "`edgecut bench swap` without --models A.onnx B.onnx").build_model
    return [build_model(["seg", "depth", "count"], width=16, seed=s) for s in (1, 2)]


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def import_time_s(runs: int = 3) -> float:
    """Median wall time to import every agent module in a fresh interpreter."""
    code = (
        "import time; t = time.perf_counter()\n"
        "import edgecut.agent.agent, edgecut.agent.cli\n"
        "print(time.perf_counter() - t)"
    )
    times = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(runs)]
    return statistics.median(times)


def _load(address: str, image: np.ndarray, rate: float, stop: threading.Event, out: list[Sample]) -> None:
    from edgecut.agent.serve import AgentClient

    period = 1.0 / rate
    with AgentClient(address, timeout_s=10) as client:
        nxt = time.perf_counter()
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                client.infer(image)
                ok = True
            except Exception:
                ok = False
            out.append(Sample(t0, time.perf_counter(), ok))
            nxt += period
            time.sleep(max(0.0, nxt - time.perf_counter()))


def run(args: argparse.Namespace) -> dict[str, float]:
    import psutil

    from edgecut.agent.artifacts import ModelStore
    from edgecut.agent.serve import AgentClient
    from edgecut.broker import EmbeddedBroker

    blobs = [Path(p).read_bytes() for p in args.models] if args.models else _default_models()
    if len(blobs) != 2:
        raise ConfigError("--models takes exactly two ONNX artifacts")
    ids = [hashlib.sha256(b).hexdigest() for b in blobs]
    with tempfile.TemporaryDirectory(prefix="edgecut-bench-") as tmp, EmbeddedBroker() as broker:
        state = Path(tmp) / "state"
        store = ModelStore(state)
        # the bench plays the fleet: the agent loads only models whose signed offer it keeps
        key = signing.generate(Path(tmp) / "fleet-signing.key")
        for aid, data in zip(reversed(ids), reversed(blobs), strict=True):  # B first: A ends as current
            store.path(aid).write_bytes(data)
            Trust.keep_offer(store.offer_path(aid), _signed_offer(key, aid, len(data)))
            store.record_swap(aid)
        cfg = Path(tmp) / "agent.yaml"
        write_agent_config(
            cfg,
            key.public_text,
            device_id=DEVICE_ID,
            broker_url=broker.url,
            state_dir=state,
            listen="127.0.0.1:0",
            tasks=["seg", "depth", "count"],
            ort_threads=args.ort_threads,
            telemetry_interval_s=5,
        )
        env = {**os.environ, "OMP_NUM_THREADS": str(args.ort_threads)}
        log = Path(tmp) / "agent.log"
        t_spawn = time.perf_counter()
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgecut.agent", "agent", "run", "--config", str(cfg)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        try:
            address = _wait_ready(AgentWatch("the agent", proc, log, READY_S), state, ids[0])
            startup_s = time.perf_counter() - t_spawn
            agent_ps = psutil.Process(proc.pid)
            rss_idle = agent_ps.memory_info().rss
            meta = json.loads(AgentClient(address).status().model_meta_json)
            shape = [1 if d is None else d for d in meta["input"]["shape"]]
            image = np.random.default_rng(0).random(shape, dtype=np.float32)
            samples: list[Sample] = []
            stop = threading.Event()
            threads = [
                threading.Thread(target=_load, args=(address, image, args.rate / args.clients, stop, samples))
                for _ in range(args.clients)
            ]
            for t in threads:
                t.start()
            windows: list[tuple[float, float]] = []
            with AgentClient(address, timeout_s=60) as control:
                swaps_before = control.status().swaps
                time.sleep(args.swap_interval)
                for _ in range(args.swaps):
                    t0 = time.perf_counter()
                    control.rollback()
                    windows.append((t0, time.perf_counter()))
                    time.sleep(args.swap_interval)
                stop.set()
                for t in threads:
                    t.join(30)
                status = control.status()
            rss_after = agent_ps.memory_info().rss
        finally:
            proc.terminate()
            proc.wait(10)
    swaps_done = status.swaps - swaps_before
    t_first, t_last = min(s.start for s in samples), max(s.end for s in samples)

    def during(s: Sample) -> bool:
        return any(s.start < w1 and s.end > w0 for w0, w1 in windows)

    lat_in = [(s.end - s.start) * 1e3 for s in samples if s.ok and during(s)]
    lat_out = [(s.end - s.start) * 1e3 for s in samples if s.ok and not during(s)]
    swap_ms = [(w1 - w0) * 1e3 for w0, w1 in windows]
    return {
        "requests": len(samples),
        "failed": sum(not s.ok for s in samples),
        "rate": len(samples) / (t_last - t_first),
        "swaps": swaps_done,
        "during_n": len(lat_in),
        "during_p50": _pct(lat_in, 50),
        "during_p99": _pct(lat_in, 99),
        "outside_n": len(lat_out),
        "outside_p50": _pct(lat_out, 50),
        "outside_p99": _pct(lat_out, 99),
        "swap_p50_ms": _pct(swap_ms, 50),
        "swap_max_ms": max(swap_ms),
        "startup_s": startup_s,
        "rss_idle_mb": rss_idle / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "model_kb": len(blobs[0]) / 1024,
        "import_s": import_time_s(),
    }


def _signed_offer(key: signing.SigningKey, aid: str, size: int) -> fleet_pb2.ModelReady:
    manifest = fleet_pb2.Manifest(artifact_id=aid, sha256=aid, size_bytes=size, device_id=DEVICE_ID)
    blob, sig = sign_manifest(key, manifest)
    return fleet_pb2.ModelReady(
        device_id=DEVICE_ID, artifact_id=aid, sha256=aid, size_bytes=size, manifest=blob, signature=sig
    )


def _wait_ready(watch: AgentWatch, state: Path, want: str) -> str:
    """The API address once the agent answers Status with `want` loaded; AgentStalled names why not."""
    from edgecut.agent.errors import AgentError
    from edgecut.agent.serve import AgentClient

    addr_file = state / "api_address"
    deadline = time.monotonic() + watch.stall_s
    while True:
        status = None
        if addr_file.exists():
            address = addr_file.read_text().strip()
            try:
                with AgentClient(address, timeout_s=1) as c:
                    status = c.status()
            except AgentError:
                pass
            if status is not None and status.artifact_id == want:
                return address
        watch.check(status)
        if time.monotonic() > deadline:  # moving, but not towards serving `want`
            watch.fail(f"the agent did not serve {want[:12]} within {watch.stall_s:g} s")
        time.sleep(0.005)


def describe_models(paths: list[str] | None) -> str:
    """What was swapped, from the artifacts' own metadata (or the built-in test models)."""
    if not paths:
        return "two 4 KB three-task test models (seg, depth, count; 1x3x64x64, built with onnx.helper)"
    from edgecut.agent.runtime import load_model

    parts = []
    for p in map(Path, paths):
        meta = load_model(p, p.stem).meta
        parts.append(
            f"`{p.name}` ({p.stat().st_size / 1024:.0f} KB; tasks {', '.join(meta.tasks)}; "
            f"{meta.macs / 1e6:.1f} MMACs; input {'x'.join(str(d or 1) for d in meta.input.shape)})"
        )
    return "two tailored models, " + " and ".join(parts) + ","


def render(r: dict[str, float], args: argparse.Namespace) -> str:
    """The section's body in markdown (without its `## ` heading)."""
    table = [
        ("requests sent / failed", f"{r['requests']:.0f} / {r['failed']:.0f}"),
        ("achieved rate", f"{r['rate']:.0f} requests/s"),
        ("swaps completed", f"{r['swaps']:.0f}"),
        (
            f"latency during swaps (n={r['during_n']:.0f}) p50 / p99",
            f"{r['during_p50']:.2f} / {r['during_p99']:.2f} ms",
        ),
        (
            f"latency outside swaps (n={r['outside_n']:.0f}) p50 / p99",
            f"{r['outside_p50']:.2f} / {r['outside_p99']:.2f} ms",
        ),
        (
            "swap call (load + warm-up + validate + swap) p50 / max",
            f"{r['swap_p50_ms']:.0f} / {r['swap_max_ms']:.0f} ms",
        ),
        ("agent start -> first answer with the model loaded", f"{r['startup_s']:.2f} s"),
        (
            "agent RSS with the model loaded (idle / after the run)",
            f"{r['rss_idle_mb']:.0f} / {r['rss_after_mb']:.0f} MB",
        ),
        ("import time of all agent modules (median of 3, fresh interpreter)", f"{r['import_s']:.2f} s"),
    ]
    rows = "\n".join(f"| {k} | {v} |" for k, v in table)
    machine = f"{os.cpu_count()}-core {platform.machine()}, {platform.system()} {platform.release()}"
    models = getattr(args, "models", None)
    models_arg = f" --models {' '.join(models)}" if models else ""
    return f"""\
Measured by `edgecut bench swap --rate {args.rate:g} --swaps {args.swaps} --clients {args.clients}{models_arg}` \
on a {machine} machine shared with other work; onnxruntime \
intra-op threads = {args.ort_threads}. A real agent process serves {describe_models(models)} \
over its local gRPC API on 127.0.0.1 while {args.clients} client threads send paced Infer requests \
and the main thread asks for {args.swaps} rollbacks, each a full load, \
warm-up, validation and atomic reference swap to the other model. A request counts as "during a swap" \
when it overlaps a swap call.

| metric | value |
|---|---|
{rows}
"""


def cmd_bench_swap(args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.swaps <= 0 or args.clients <= 0:
        raise ConfigError("--rate, --swaps and --clients must be positive")
    result = run(args)
    body = render(result, args)
    print(f"## {SECTION}\n\n{body}")
    if args.out:
        write_section(Path(args.out), SECTION, body)
        print(f"wrote section {SECTION!r} of {args.out}")
    return 0 if result["failed"] == 0 and result["swaps"] == args.swaps else 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs=2, metavar="ONNX", help="two edgecut artifacts (default: test models)")
    p.add_argument("--rate", type=float, default=120.0, help="Infer requests per second in total")
    p.add_argument("--clients", type=int, default=4, help="client threads sharing the rate")
    p.add_argument("--swaps", type=int, default=20)
    p.add_argument("--swap-interval", type=float, default=0.5, help="seconds between swaps")
    p.add_argument("--ort-threads", type=int, default=1)
    p.add_argument("--out", default="docs/benchmarks.md", help="markdown file to update ('' = print only)")
    p.set_defaults(handler=cmd_bench_swap)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add `swap` to the `edgecut bench` subcommands."""
    add_arguments(bench_sub.add_parser("swap", help="inference latency while the agent hot-swaps models"))


def main(argv: list[str] | None = None) -> int:
    from edgecut.errors import EdgecutError

    parser = argparse.ArgumentParser(prog="python -m edgecut_bench.swap", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_bench_swap(args)
    except EdgecutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
