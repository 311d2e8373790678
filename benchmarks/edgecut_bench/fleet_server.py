"""`python -m edgecut_bench.fleet_server ...`: a real FleetServer with the fast ONNX engine, as a
process that `edgecut bench fleet` can SIGKILL, SIGSTOP and start again. Every build started is appended
to `--build-log` (default `<state_dir>/builds.log`), so builds are counted across restarts and replicas
(an interrupted build counts twice)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut.server.fleet.app import FleetServer
from edgecut.server.fleet.settings import ServerSettings
from edgecut.server.spec import BuildSpec, BuiltArtifact, ProgressFn
from edgecut_bench.clone import support

if TYPE_CHECKING:
    from tests.support.onnx_engine import OnnxTestEngine
else:  # the tests' fast engine, from the clone: fleet figures measure the service, not pruning
    OnnxTestEngine = support("onnx_engine", "the bench fleet server").OnnxTestEngine


class CountingEngine(OnnxTestEngine):
    def __init__(self, log: Path, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.log = log

    def build(self, spec: BuildSpec, progress: ProgressFn) -> BuiltArtifact:
        with self.log.open("a") as f:
            f.write(",".join(spec.tasks) + "\n")
        return super().build(spec, progress)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--broker", required=True)
    p.add_argument("--grpc", required=True)
    p.add_argument("--build-s", type=float, default=2.0)
    p.add_argument("--signing-key", type=Path, required=True)
    p.add_argument("--embedded-broker", default="", help="the kind of broker the bench started")
    p.add_argument("--replica-id", default="", help="this replica's name on the job leases")
    p.add_argument("--registry-url", default="", help="shared registry (PostgreSQL) for several replicas")
    p.add_argument("--store", default="", help="shared artifact store directory")
    p.add_argument("--lease-s", type=float, default=30.0)
    p.add_argument("--build-log", type=Path, help="default STATE_DIR/builds.log")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = CountingEngine(
        args.build_log or args.state_dir / "builds.log", workdir=args.state_dir / "engine", delay=args.build_s
    )
    limits = {"needs_burst": 100, "build_burst": 10, "max_queued_jobs": 64, "scrub_interval_s": 0}
    settings = ServerSettings(
        state_dir=args.state_dir,
        broker=args.broker,
        grpc=args.grpc,
        signing_key=args.signing_key,
        workers=1,
        limits=limits,  # type: ignore[arg-type]
        replica_id=args.replica_id,
        registry_url=args.registry_url,
        store_url=args.store,
        lease_s=args.lease_s,
        job_poll_s=0.5,
    )
    server = FleetServer(settings, engine, args.embedded_broker).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.wait_ready(30)
    print("ready", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
