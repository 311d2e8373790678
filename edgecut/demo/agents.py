"""Real agent processes for the demo, and the inference load each one serves through its local API."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from edgecut.agent.errors import AgentError
from edgecut.agent.provision import write_agent_config
from edgecut.agent.serve import AgentClient
from edgecut.agent.watch import AgentWatch, log_tail
from edgecut.model_meta import ModelMeta
from edgecut.v1 import agent_pb2

from .events import EventLog, relay_agent_log
from .profiles import DeviceProfile

IMAGE_SEED = 4242  # scenes no model was trained, calibrated or validated on
ADAPT_IMAGES = 64  # inputs an adapting demo device measures per statistics summary (the agent's least: 16)


class AgentProcess:
    """`python -m edgecut.agent agent run --config ...` with its own state dir and a declared device class."""

    def __init__(
        self,
        profile: DeviceProfile,
        work_dir: Path,
        broker_url: str,
        log: EventLog,
        before_download: Callable[[str, str], None] | None = None,
        *,
        fleet_key: str,
        operator_key: str = "",
    ) -> None:
        self.profile, self.log, self.before_download = profile, log, before_download
        self.device_id = profile.device_id
        self.state_dir = work_dir / self.device_id
        self.config = work_dir / f"{self.device_id}.yaml"
        self.log_path = work_dir / f"{self.device_id}.log"
        self.broker_url = broker_url
        self.fleet_key = fleet_key  # the fleet server's public key: the agent trusts its signed offers only
        self.operator_key = operator_key  # the dashboard's command key: its commands are obeyed
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""
        self._relay: threading.Thread | None = None
        self._log_file: IO[str] | None = None
        self.watch: AgentWatch | None = None

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_agent_config(
            self.config,
            self.fleet_key,
            device_id=self.device_id,
            broker_url=self.broker_url,
            state_dir=self.state_dir,
            listen="127.0.0.1:0",
            tasks=list(self.profile.tasks),
            device_class=self.profile.device_class,
            ort_threads=1,
            telemetry_interval_s=5.0,
            keepalive_s=10,
            reconnect_max_s=2.0,
            operator_keys=[self.operator_key] if self.operator_key else [],
            # issue 31: a summary every ADAPT_IMAGES inputs, so the demo's minutes see one
            **({"adapt": True, "adapt_images": ADAPT_IMAGES} if self.profile.adapt else {}),
        )
        # The demo's own settings only: an EDGECUT_* variable in the user's shell would override them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECUT_")}
        env["OMP_NUM_THREADS"] = "1"
        # stdin is a lifeline: when the demo ends in any way (even SIGKILL) the pipe closes and the
        # agent stops by itself, so no agent outlives its demo.
        command = [sys.executable, "-m", "edgecut.agent", "agent", "run", "--config", str(self.config)]
        self.proc = subprocess.Popen(
            [*command, "--exit-on-stdin-eof"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the demo only, which stops agents in order
        )
        self._log_file = self.log_path.open("w")
        assert self.proc.stderr is not None
        self._relay = threading.Thread(
            target=relay_agent_log,
            args=(self.device_id, self.proc.stderr, self._log_file, self.log, self.before_download),
            name=f"log-{self.device_id}",
            daemon=True,
        )
        self._relay.start()
        # the demo's --timeout bounds a silent wait; the watch ends one early on a refusal or an exit
        self.watch = AgentWatch(f"agent {self.device_id}", self.proc, self.log_path, stall_s=float("inf"))

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_api(self, timeout: float = 30.0) -> str:
        """The local API address once the agent answers Status there."""
        addr_file = self.state_dir / "api_address"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AgentError(f"agent {self.device_id} exited with {self.returncode()}: {self.log_tail()}")
            if addr_file.exists():
                address = addr_file.read_text().strip()
                try:
                    with AgentClient(address, timeout_s=2) as c:
                        c.status()
                    self.address = address
                    return address
                except AgentError:
                    pass
            time.sleep(0.05)
        raise AgentError(f"agent {self.device_id} did not open its local API within {timeout:.0f} s")

    def status(self) -> agent_pb2.AgentStatus:
        with AgentClient(self.address, timeout_s=5) as c:
            return c.status()

    def set_tasks(self, tasks: list[str]) -> agent_pb2.AgentStatus:
        with AgentClient(self.address, timeout_s=5) as c:
            return c.set_tasks(tasks)

    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the agent closes its link and API), SIGKILL after `timeout`; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._relay is not None:
            self._relay.join(5)
            self._relay = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_path, lines)


def scene_images(meta: ModelMeta, n: int = 8, shift: str = "") -> list[np.ndarray]:
    """`n` synthetic scenes as the model's input: 1 x 3 x H x W float32 in its value range, as a camera
    with covariate shift `shift` (mtl/shifts.py; "" = none) sees them."""
    import torch

    from edgecut.server.mtl.scenes import render
    from edgecut.server.mtl.shifts import shift as named_shift

    _, _, h, w = meta.input.shape
    if h is None or w is None or h != w:
        raise AgentError(f"the demo needs a square fixed-size input, the model has {meta.input.shape}")
    lo, hi = meta.input.value_range
    images = torch.from_numpy(np.stack([render(IMAGE_SEED, i, h).image for i in range(n)]))
    if shift:
        seen = named_shift(shift).apply({"image": images}, seed=IMAGE_SEED)["image"].numpy()
    else:
        seen = images.numpy().astype(np.float32) / 255.0
    return [(lo + x[None] * (hi - lo)).astype(np.float32) for x in seen]


@dataclass(frozen=True)
class Sample:
    t: float  # monotonic seconds at send
    ok: bool
    latency_ms: float  # the model's run time on the agent (0 when failed)
    round_trip_ms: float
    artifact_id: str
    error: str = ""


class InferenceDriver:
    """Paced Infer calls on one agent (open loop, `rate` per second) from its first model to `stop()`."""

    def __init__(self, agent: AgentProcess, rate: float, log: EventLog) -> None:
        self.agent, self.rate, self.log = agent, rate, log
        self.samples: list[Sample] = []
        self.serving = threading.Event()  # set once the agent had a model and the first request went out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"infer-{agent.device_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _wait_model(self, client: AgentClient) -> ModelMeta | None:
        while not self._stop.is_set():
            try:
                st = client.status()
            except AgentError:
                st = None
            if st is not None and st.model_meta_json:
                return ModelMeta.from_json(st.model_meta_json)
            self._stop.wait(0.2)
        return None

    def _run(self) -> None:
        device = self.agent.device_id
        with AgentClient(self.agent.address, timeout_s=10) as client:
            meta = self._wait_model(client)
            if meta is None:
                return
            images = scene_images(meta, shift=self.agent.profile.shift)
            self.log.say(device, f"[blue]inference[/] starts: {self.rate:g} requests/s through the local API")
            self.serving.set()
            period, nxt, i = 1.0 / self.rate, time.monotonic(), 0
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    resp = client.infer(images[i % len(images)])
                    sample = Sample(
                        t0, True, resp.latency_ms, (time.monotonic() - t0) * 1e3, resp.artifact_id
                    )
                except AgentError as exc:  # every failure counts: the demo must show none
                    sample = Sample(t0, False, 0.0, (time.monotonic() - t0) * 1e3, "", str(exc))
                    self.log.say(device, f"request failed: {exc}", "red")
                self.samples.append(sample)
                i += 1
                nxt = max(nxt + period, time.monotonic() - period)  # never burst to catch up
                self._stop.wait(max(0.0, nxt - time.monotonic()))
