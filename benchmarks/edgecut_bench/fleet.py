"""`edgecut bench fleet`: N simulated devices against a real fleet server, with faults, -> docs/reliability.md.

What runs: a mosquitto (else iotcore) broker; the fleet server as its own process (fleet_server.py,
the fast ONNX engine with a fixed build time, 1 build worker); `processes` device processes with
N/processes light devices each (fleet_devices.py); with faults, one real `edgecut agent run` whose
state dir is a small tmpfs that is full when the run starts.

Phase 1 (cold): every device asks for one of 5 distinct task sets. Faults meanwhile: the broker is
stopped for 2 s, the server is SIGKILLed mid-build and started again, and the real agent cannot
download (disk full) until its filler file is deleted. With `replicas` > 1 (on a shared PostgreSQL
registry and store), replica 0 is SIGKILLed once it holds a running job and started again, and
replica 1 is SIGSTOPped once it holds one, for its lease and 3 s more, then SIGCONTed: its late
results must be refused (fenced leases) and every device still served. Phase 2 (warm): every device switches to
another of the same 5 sets (all cache hits): needs/s handled. "Nothing lost" = every device ends
with a verified artifact made for exactly the tasks it asked for last.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from edgecut import signing
from edgecut.agent.provision import write_agent_config
from edgecut.broker import EmbeddedBroker, die_with_parent, mosquitto_path, restartable_port
from edgecut.errors import EdgecutError
from edgecut_bench.fleet_devices import SimDevice, worker_main

SECTION = "Fleet under load and faults"
NEEDS = [["seg"], ["seg", "depth"], ["depth", "normals"], ["edges"], ["count", "seg"]]
Say = Callable[[str], None]
FENCED = ("lost its lease before it finished", "another replica builds it now")  # server log lines


@dataclass
class Outcome:
    devices: int
    processes: int
    build_s: float
    faults: list[str] = field(default_factory=list)
    phase_s: list[float] = field(default_factory=list)
    latencies: list[list[float]] = field(default_factory=list)  # per phase: needs -> serving, seconds
    needs_per_s: list[float] = field(default_factory=list)
    builds: int = 0
    lost: int = 0
    refused: int = 0
    retries: int = 0
    reasks: int = 0
    rss_mib: list[float] = field(default_factory=list)  # server RSS samples
    agent_recovered_s: float | None = None
    broker: str = ""
    broker_warning: str = ""  # what the server said about the embedded broker's load, if anything
    replicas: int = 1
    registry: str = "SQLite"
    fenced: int = 0  # late results a stalled replica had refused
    fault_error: str = ""  # why a planned fault could not be injected


class ServerProcess:
    def __init__(
        self,
        state: Path,
        broker_url: str,
        port: int,
        key: Path,
        build_s: float,
        broker_kind: str = "",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.name = state.name
        self.args = [
            sys.executable,
            "-m",
            "edgecut_bench.fleet_server",
            "--state-dir",
            str(state),
            "--broker",
            broker_url,
            "--grpc",
            f"127.0.0.1:{port}",
            "--build-s",
            str(build_s),
            "--signing-key",
            str(key),
            "--embedded-broker",
            broker_kind,
            "--build-log",
            str(state.parent / "builds.log"),
            *extra,
        ]
        self.log_path = state.parent / f"{state.name}.log"
        self.log = self.log_path.open("ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # dies with the bench, also when it is interrupted (the fault thread that restarts one lives
        # until the bench ends: see _faults)
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=self.log, preexec_fn=die_with_parent
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise EdgecutError("the bench's fleet server did not start; see server.log in the work dir")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process would not act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class DiskFullAgent:
    """A real `edgecut agent run` on a 24 MiB tmpfs filled up before it starts (needs root to mount)."""

    def __init__(self, work: Path, broker_url: str, server: str, fleet_key: str) -> None:
        self.mnt = work / "agent-disk"
        self.mnt.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(self.mnt)], capture_output=True
        )
        if done.returncode != 0:
            raise EdgecutError(
                f"cannot mount a tmpfs for the disk-full agent: {done.stderr.decode().strip()}"
            )
        self.filler = self.mnt / "filler"
        with open(self.filler, "wb") as f:  # leave ~2 MiB: below what a download needs with its margin
            f.write(b"\0" * (22 << 20))
        cfg = work / "agent.yaml"
        write_agent_config(
            cfg,
            fleet_key,
            device_id="real-agent",
            broker_url=broker_url,
            server_address=server,
            state_dir=self.mnt / "state",
            listen="127.0.0.1:0",
            tasks=["seg", "depth"],
            device_class="x86",
            ort_threads=1,
            download_retry_max_s=2.0,
            reconnect_max_s=2.0,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECUT_")} | {"OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecut.agent", "agent", "run", "--config", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(work / "agent.log").open("ab"),
        )

    def status(self) -> Any:
        from edgecut.agent.serve import AgentClient

        address = (self.mnt / "state" / "api_address").read_text().strip()
        with AgentClient(address, timeout_s=5) as c:
            return c.status()

    def free(self) -> None:
        self.filler.unlink()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run(["umount", "-l", str(self.mnt)], check=False)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, max(0, round(q * (len(data) - 1))))]


def run(
    devices: int,
    processes: int,
    build_s: float,
    faults: bool,
    say: Say,
    timeout_s: float = 600.0,
    broker_kind: str = "auto",
    replicas: int = 1,
    registry_url: str = "",
    lease_s: float = 5.0,
) -> Outcome:
    if replicas > 1 and not registry_url.startswith(("postgresql", "postgres")):
        raise EdgecutError(
            "several replicas need a shared PostgreSQL registry: pass --registry-url postgresql://..."
        )
    out = Outcome(devices, processes, build_s, replicas=replicas)
    out.registry = "PostgreSQL" if registry_url else "SQLite"
    with tempfile.TemporaryDirectory(prefix="edgecut-bench-fleet-") as tmp:
        work = Path(tmp)
        key_path = work / "fleet.key"
        key = signing.generate(key_path)
        auto = "mosquitto" if mosquitto_path() else "iotcore"
        broker = EmbeddedBroker(prefer=auto if broker_kind == "auto" else broker_kind).start()
        out.broker = broker.kind
        port = restartable_port()  # replicas restart on their port: see restartable_port
        servers = []
        for i in range(replicas):
            name = "server" if replicas == 1 else f"replica-{i}"
            (work / name).mkdir()
            extra: tuple[str, ...] = ("--replica-id", name, "--lease-s", str(lease_s))
            if registry_url:
                extra += ("--registry-url", registry_url, "--store", str(work / "store"))
            grpc_port = port if i == 0 else restartable_port()
            servers.append(
                ServerProcess(work / name, broker.url, grpc_port, key_path, build_s, broker.kind, extra)
            )
        for s in servers:
            s.start()
        server = servers[0]
        rss_stop = threading.Event()
        ended = threading.Event()  # the fault thread lives until then: see _faults
        sampler = threading.Thread(target=_sample_rss, args=(server, out.rss_mib, rss_stop), daemon=True)
        sampler.start()
        agent = None
        ctx = mp.get_context("spawn")
        controls = [ctx.Queue() for _ in range(processes)]
        results: Any = ctx.Queue()
        procs = []
        try:
            if faults:
                try:
                    agent = DiskFullAgent(work, broker.url, f"127.0.0.1:{port}", key.public_text)
                    out.faults.append("disk full on a real agent (24 MiB tmpfs, filled)")
                except EdgecutError as exc:
                    say(f"skipping the disk-full agent: {exc}")
            sims = [SimDevice(f"sim-{i:05d}", [NEEDS[i % 5], NEEDS[(i + 2) % 5]]) for i in range(devices)]
            for w in range(processes):
                p = ctx.Process(
                    target=worker_main,
                    args=(sims[w::processes], broker.port, key.public_text, controls[w], results, w),
                    daemon=True,
                )
                p.start()
                procs.append(p)
            say(f"{devices} devices in {processes} processes connecting; phase 1: 5 distinct needs")
            t0 = time.monotonic()
            done = threading.Event()
            if faults:
                plan = _fault_schedule if replicas == 1 else _replica_faults
                args = (plan, broker, servers, out, say, done, ended, registry_url, lease_s)
                threading.Thread(target=_faults, args=args, daemon=True).start()
            records = _wait_phase(controls, results, 1, devices, t0 + timeout_s, say, out)
            done.set()
            out.phase_s.append(time.monotonic() - t0)
            if agent is not None:
                t_free = time.monotonic()
                agent.free()
                _wait(
                    lambda: agent.status().artifact_id != "", t_free + 120, "the disk-full agent to recover"
                )
                out.agent_recovered_s = time.monotonic() - t_free
                st = agent.status()
                if sorted(st.model_tasks) != ["depth", "seg"]:
                    out.lost += 1
            say("phase 2: every device switches to another of the 5 (cache hits)")
            t1 = time.monotonic()
            for q in controls:
                q.put("next")
            records = _wait_phase(controls, results, 2, devices, t1 + timeout_s, say, out)
            out.phase_s.append(time.monotonic() - t1)
            for q in controls:
                q.put("stop")
            _summarise(records, out)
            out.builds = len((work / "builds.log").read_text().splitlines())
            logs = [ln for s in servers for ln in s.log_path.read_text(errors="replace").splitlines()]
            said = [ln for ln in logs if "embedded iotcore" in ln]
            out.broker_warning = said[0].split(": ", 1)[-1] if said else ""
            # a woken replica's result or progress refused by the fencing, and the build dropped
            out.fenced = sum(any(m in ln for m in FENCED) for ln in logs)
        finally:
            rss_stop.set()
            ended.set()
            for q in controls:
                q.put("stop")
            for p in procs:
                p.join(20)
                if p.is_alive():
                    p.kill()
            if agent is not None:
                agent.stop()
            for s in servers:
                s.stop()
            broker.close()
    return out


def _wait(cond: Callable[[], bool], deadline: float, what: str) -> None:
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (EdgecutError, OSError):  # not up yet
            pass
        time.sleep(0.5)
    raise EdgecutError(f"timed out waiting for {what}")


def _wait_phase(
    controls: list[Any], results: Any, seq: int, n: int, deadline: float, say: Say, out: Outcome
) -> dict[str, Any]:
    """Poll the workers until every device serves the answer to needs `seq`; returns their records."""
    while True:
        if out.fault_error:
            raise EdgecutError(f"a fault could not be injected, so the run proves nothing: {out.fault_error}")
        for q in controls:
            q.put("report")
        records: dict[str, Any] = {}
        for _ in controls:
            try:
                part = results.get(timeout=120)
            except queue.Empty:
                raise EdgecutError(
                    "a device process did not report within 120 s: the machine is overloaded (fewer "
                    "--devices or more --processes)"
                ) from None
            if "error" in part:
                raise EdgecutError(f"a device process failed: {part['error']}")
            records.update(part)
        served = sum(seq in r["served"] for r in records.values())
        say(f"  {served}/{n} devices serve their phase-{seq} model")
        if served == n:
            return records
        if time.monotonic() > deadline:
            raise EdgecutError(f"only {served} of {n} devices were served in phase {seq} before the time-out")
        time.sleep(1.0)


def _faults(
    plan: Callable[..., None],
    broker: EmbeddedBroker,
    servers: list[ServerProcess],
    out: Outcome,
    say: Say,
    done: threading.Event,
    ended: threading.Event,
    registry_url: str,
    lease_s: float,
) -> None:
    try:
        plan(broker, servers, out, say, done, registry_url, lease_s)
    except Exception as exc:  # the bench ends with this sentence (see _wait_phase), not a thread traceback
        out.fault_error = str(exc) or repr(exc)
    finally:
        # the restarted broker and server get the parent-death signal when the *thread* that started
        # them exits (Linux PR_SET_PDEATHSIG): this one stays until the bench tears everything down
        ended.wait()


def _restart_broker(broker: EmbeddedBroker, out: Outcome, say: Say, when: str) -> None:
    say("fault: broker stopped for 2 s")
    broker.stop()
    time.sleep(2.0)
    broker.start()
    out.faults.append(f"broker stopped for 2 s {when}, then restarted (same port, state lost)")


def _fault_schedule(
    broker: EmbeddedBroker,
    servers: list[ServerProcess],
    out: Outcome,
    say: Say,
    done: threading.Event,
    _registry_url: str,
    _lease_s: float,
) -> None:
    server = servers[0]
    if done.wait(2.0):
        return
    _restart_broker(broker, out, say, "at t=2 s")
    if done.wait(3.0):
        return
    say("fault: fleet server SIGKILLed (mid-build), restarted 1 s later")
    server.kill()
    time.sleep(1.0)
    server.start()
    out.faults.append("fleet server SIGKILLed at t~7 s, mid-build; restarted 1 s later on the same state")


def _replica_faults(
    broker: EmbeddedBroker,
    servers: list[ServerProcess],
    out: Outcome,
    say: Say,
    done: threading.Event,
    registry_url: str,
    lease_s: float,
) -> None:
    """Replica 1 SIGSTOPped and replica 0 SIGKILLed, each while it holds a running job; a broker restart."""
    from edgecut.server.fleet.state.registry import Registry
    from edgecut.server.fleet.state.schema import RUNNING

    registry = Registry(registry_url)

    def building(name: str) -> bool:
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            if any(j.owner == name for j in registry.jobs.all((RUNNING,))):
                return True
            time.sleep(0.1)
        return False

    killed, stalled = servers[0], servers[1]
    try:
        if building(stalled.name):
            pause = lease_s + 3.0
            say(f"fault: {stalled.name} SIGSTOPped mid-build for {pause:g} s")
            stalled.signal(signal.SIGSTOP)
            timer = threading.Timer(pause, stalled.signal, args=(signal.SIGCONT,))
            timer.start()
            out.faults.append(
                f"{stalled.name} SIGSTOPped mid-build for {pause:g} s (its {lease_s:g} s lease + 3 s), then SIGCONTed"
            )
        if building(killed.name):
            say(f"fault: {killed.name} SIGKILLed mid-build, restarted 1 s later")
            killed.kill()
            time.sleep(1.0)
            killed.start()
            out.faults.append(
                f"{killed.name} SIGKILLed mid-build (it held a running job); restarted 1 s later"
            )
        if not done.is_set():
            _restart_broker(broker, out, say, "after those")
    finally:
        registry.close()


def _sample_rss(server: ServerProcess, samples: list[float], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            if server.proc is not None:
                samples.append(psutil.Process(server.proc.pid).memory_info().rss / 2**20)
        except psutil.Error:
            pass


def _summarise(records: dict[str, Any], out: Outcome) -> None:
    for seq in (1, 2):
        lat = [r["served"][seq][0] - r["sent"][seq] for r in records.values() if seq in r["served"]]
        out.latencies.append(lat)
        sent = [r["sent"][seq] for r in records.values()]
        last = max(r["served"][seq][0] for r in records.values())
        out.needs_per_s.append(len(records) / max(1e-9, last - min(sent)))
    for r in records.values():
        tasks_asked = sorted(r["phases"][-1])
        if sorted(r["served"][2][2]) != tasks_asked:
            out.lost += 1
        out.refused += r["refused"]
        out.retries += r["retries"]
        out.reasks += r["reasks"]


def servers_text(o: Outcome) -> str:
    if o.replicas == 1:
        return "A real fleet server process"
    return f"{o.replicas} fleet server replica processes on one {o.registry} registry and one store"


def markdown(o: Outcome, command: str) -> str:
    rows = []
    for i, name in enumerate(
        ("1: cold, 5 distinct needs" + (", with faults" if o.faults else ""), "2: warm, cache hits")
    ):
        lat = o.latencies[i]
        rows.append(
            f"| {name} | {o.phase_s[i]:.1f} | {o.needs_per_s[i]:.0f} | {_pct(lat, 0.5):.2f} | "
            f"{_pct(lat, 0.99):.2f} | {max(lat):.2f} |"
        )
    rss = o.rss_mib or [float("nan")]
    redone = " or taken over from the stopped replica" if o.replicas > 1 else ""
    lines = [
        f"`{command}` on this machine ({platform.machine()}, {os.cpu_count()} cores, shared with other "
        f"work). {servers_text(o)} (the fast ONNX engine: {o.build_s:g} s per build, 1 build "
        f"worker each; {o.broker} broker) and {o.devices} simulated devices in {o.processes} processes, each "
        "with its own MQTT connection, verifying every signed manifest and the downloaded bytes' sha256 "
        "(`benchmarks/edgecut_bench/fleet_devices.py`; serving = verified bytes held, no onnxruntime load).",
        "",
        "| phase | wall s | needs/s handled | needs -> serving p50 s | p99 s | max s |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"- builds: **{o.builds}** for 5 distinct needs ({o.builds / 5:.1f} per distinct need; a build "
        f"interrupted by the SIGKILL{redone} runs again and counts twice)",
        f"- nothing lost: **{o.devices - o.lost if o.lost <= o.devices else 0} of {o.devices}** devices "
        f"(+ the real agent) ended with a verified model for exactly the tasks they asked last; lost: {o.lost}",
        f"- server RSS: {rss[0]:.0f} MiB at start, {max(rss):.0f} MiB peak, {rss[-1]:.0f} MiB at the end",
        f"- download retries by devices: {o.retries}; needs sent again for want of an answer: {o.reasks}; "
        f"offers refused by devices: {o.refused}",
    ]
    if o.faults:
        lines.append("- faults during phase 1: " + "; ".join(o.faults))
    if o.replicas > 1:
        lines.append(
            f"- builds a stopped replica woke up to and had to drop (its lease was taken over; fenced): {o.fenced}"
        )
    if o.broker_warning:
        lines.append(f'- the server warned: "{o.broker_warning}"')
    if o.agent_recovered_s is not None:
        lines.append(
            f"- the disk-full agent reported the error, kept retrying, and served its model "
            f"{o.agent_recovered_s:.1f} s after its filler file was deleted"
        )
    return "\n".join(lines)
