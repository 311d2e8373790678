"""One fleet server replica in its own process, with the ONNX test engine: `python -m tests.support.replica`.

The replica tests start two of these on one broker, one PostgreSQL database and one S3 bucket, and
SIGKILL one mid-build. Each build start is appended to `--build-log` (one line: replica, key, tasks),
so the tests count builds across processes. With `--hold-first`, the replica's first build stops
after the engine returns, before its result is stored and recorded (like a long export), writes
`<state_dir>/holding` and waits for `<state_dir>/go`: a test stalls it there (SIGSTOP). The process
prints `READY <grpc port>` once its MQTT bridge is subscribed, and stops on SIGTERM or when its stdin
closes (the test process went away).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edgecut.broker import die_with_parent
from edgecut.server.app import build_server

from .waiting import WAIT_S

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--settings", required=True, help="ServerSettings as JSON")
    p.add_argument("--delay", type=float, default=0.0, help="seconds per build")
    p.add_argument("--build-log", type=Path, required=True)
    p.add_argument("--hold-first", action="store_true", help="hold the first build before it finishes")
    p.add_argument(
        "--pad-bytes", type=int, default=0, help="padding that makes this replica's artifacts its own"
    )
    p.add_argument("--statistics", action="store_true", help="builds carry a statistics companion (issue 31)")
    p.add_argument("--refinements", type=int, default=0, help="refinements after each quick build")
    p.add_argument(
        "--hold-refinements", action="store_true", help="refinements wait for <state_dir>/refine to exist"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    from edgecut.server.fleet.settings import ServerSettings
    from edgecut.server.spec import BuildSpec, BuiltArtifact, ProgressFn, Refinement

    from .onnx_engine import OnnxTestEngine
    from .stats_engine import StatsEngine

    base = StatsEngine if args.statistics else OnnxTestEngine
    settings = ServerSettings.model_validate(json.loads(args.settings))

    class LoggedEngine(base):  # type: ignore[valid-type,misc]
        def build(self, spec: BuildSpec, progress: ProgressFn) -> BuiltArtifact:
            line = f"{settings.replica_id} {spec.build_key(self.base_model_id)} {','.join(spec.tasks)}\n"
            fd = os.open(args.build_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())  # one write per line: O_APPEND keeps lines whole
            finally:
                os.close(fd)
            built = super().build(spec, progress)
            holding, go = settings.state_dir / "holding", settings.state_dir / "go"
            if args.hold_first and not holding.exists():
                holding.write_text(spec.build_key(self.base_model_id))
                while not go.exists():  # no progress calls here: nothing tells it the lease is gone
                    time.sleep(0.05)
            return built

        def refine(self, spec: BuildSpec, parent: Refinement, progress: ProgressFn) -> BuiltArtifact | None:
            while args.hold_refinements and not (settings.state_dir / "refine").exists():
                progress("recovery", 0.1, "held by the test")  # still stops on a lost lease
                time.sleep(0.05)
            return super().refine(spec, parent, progress)

    engine = LoggedEngine(
        settings.state_dir / "work", delay=args.delay, pad_bytes=args.pad_bytes, refinements=args.refinements
    )
    server = build_server(settings, engine).start()
    if not server.wait_ready(WAIT_S):
        print("NOT READY", flush=True)
        return 1
    print(f"READY {server.grpc_port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait()
    server.stop()
    return 0


class ReplicaProcess:
    """The test side: start a replica process and read its READY line."""

    def __init__(
        self,
        settings: dict[str, Any],
        build_log: Path,
        delay: float,
        env: dict[str, str],
        extra: tuple[str, ...] = (),
    ) -> None:
        self.replica_id = str(settings["replica_id"])
        log = Path(settings["state_dir"]) / "replica.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.replica",
                "--settings",
                json.dumps(settings),
                "--delay",
                str(delay),
                "--build-log",
                str(build_log),
                *extra,
            ],
            cwd=REPO,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()  # bounded: the replica gives up after WAIT_S
        if not line or line[0] != "READY":
            self.kill()
            raise RuntimeError(
                f"replica {self.replica_id} did not start: {self.log_path.read_text()[-3000:]}"
            )
        self.grpc_address = f"127.0.0.1:{line[1]}"

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, like a node that loses power."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the process stalls (a long GC pause, a frozen VM); its leases run out."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()  # a stopped process would not act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


if __name__ == "__main__":
    sys.exit(main())
