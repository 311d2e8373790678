"""`edgecut demo`: reference model -> broker -> fleet server -> agents -> inference, a task change, the table.

The server runs in this process (its builds are shown live through `ReportingEngine`); every agent is a
real `edgecut agent` child process with its own state dir, device class and local API, driven by a
client thread per agent. Whatever happens (end, failure, Ctrl-C), `_cleanup` stops agents, then the
server, then the broker, checks no port or process is left, and removes the run's temp dir.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from edgecut import topics
from edgecut.agent.errors import AgentError
from edgecut.agent.watch import AgentStalled
from edgecut.broker import BROKER_ENV, EmbeddedBroker, mosquitto_path, port_open
from edgecut.errors import EdgecutError
from edgecut.model_meta import ModelMeta
from edgecut.server.app import build_server
from edgecut.server.fleet.app import FleetServer
from edgecut.server.fleet.jobs.refiner import NOT_BETTER
from edgecut.server.fleet.settings import ServerSettings
from edgecut.server.fleet.state.job_record import refinement_key
from edgecut.server.fleet.state.schema import DONE, FAILED
from edgecut.server.spec import spec_from_dict

from .agents import IMAGE_SEED, AgentProcess, InferenceDriver
from .events import EventLog, FleetMonitor, ReportingEngine, watch_jobs
from .profiles import DIM_GARAGE, DeviceProfile, changed_device, fleet, waves
from .reference import reference_model
from .table import AdaptationGain, DemoResult, DeviceResult, TaskChange

WAIT_REPORT_S = 10.0  # while the demo waits for devices, a line this often says for what
REGISTRY_WAIT_S = 15.0  # at the end, how long the last reports may take to reach the server
# One refinement per refined build, long enough to be measurably better than the quick model and short
# enough that `make demo` stays a few minutes on 2 cores (docs/demo.md has the measured run).
REFINE_STEPS, QUICK_REFINE_STEPS = (120,), (30,)
GAIN_SCENES = 64  # labelled scenes the dim garage's gain is measured on (shifted as its camera sees them)


class DemoStalled(EdgecutError):
    """A step did not happen in time (the run still ends with its table and a clean shutdown)."""


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path
    agents: int = 4
    duration: float = 60.0
    quick: bool = False
    broker: str = "auto"
    rate: float = 5.0  # Infer requests per second per agent
    timeout: float = 900.0  # give up when the devices' steps are not done this long after they start
    reuse_builds: bool = False  # keep the server's registry and artifacts between runs (a build cache)
    recovery_steps: int | None = None  # None: the demo's default for the model size
    refine_steps: tuple[int, ...] | None = None  # the refinements' lengths; None: the demo's default
    keep: bool = False
    http: str = "127.0.0.1:8080"  # the dashboard ("" = off)

    def server_dir(self, work: Path) -> Path:
        """By default every run builds its models (the demo is about building them); the run's temp dir."""
        if self.reuse_builds:
            return self.data_dir / "demo" / ("quick-server" if self.quick else "server")
        return work / "server"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _free_or_any(address: str) -> str:
    """`address`, or the same host with any free port when that port is taken (the demo must start)."""
    if not address:
        return ""
    host, _, port = address.rpartition(":")
    if port != "0" and port_open(int(port), host.strip("[]") or "127.0.0.1"):
        return f"{host}:0"
    return address


def _p50(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] if xs else 0.0


class Demo:
    def __init__(self, opts: DemoOptions, console: Console) -> None:
        self.opts, self.console = opts, console
        self.log = EventLog(console)
        self.work = Path(tempfile.mkdtemp(prefix="edgecut-demo-"))
        self.deadline = time.monotonic() + opts.timeout  # set again once the model and server are up
        self.broker: EmbeddedBroker | None = None
        self.server: FleetServer | None = None
        self.engine: ReportingEngine | None = None
        self.monitor: FleetMonitor | None = None
        self.agents: list[AgentProcess] = []
        self.drivers: dict[str, InferenceDriver] = {}
        self.change: TaskChange | None = None
        self.result = DemoResult(broker="", model_source="")
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> DemoResult:
        t0 = time.monotonic()
        try:
            try:
                self._start_system()
                self._fleet_phase()
            except (DemoStalled, AgentError) as exc:
                self.result.notes.append(str(exc))
                self.log.say("demo", f"stopping early: {exc}", "red")
            self._collect()
        except KeyboardInterrupt:
            self.result.interrupted = True
            self.log.say("demo", "interrupted: stopping agents, server and broker", "red")
        finally:
            self._cleanup()
            self._timed("total", t0)
        return self.result

    def _timed(self, name: str, since: float) -> None:
        self.result.timings_s[name] = round(time.monotonic() - since, 2)

    def _start_system(self) -> None:
        from edgecut.server.engine import load_engine  # torch
        from edgecut.server.mtl.sources import OFF

        opts = self.opts
        checkpoint, source, train_s = reference_model(opts.data_dir, opts.quick, self.console)
        self.result.model_source = source
        self.log.say("model", source)
        if train_s:
            self.result.timings_s["train"] = round(train_s, 1)

        t = time.monotonic()
        self.broker = EmbeddedBroker(prefer=opts.broker).start()
        self.result.broker = self.broker.kind
        if opts.broker != "auto":
            why = f"asked for by --broker or ${BROKER_ENV}"
        elif self.broker.kind == "mosquitto":
            why = f"found {mosquitto_path()}"
        else:
            why = "mosquitto is not installed: rumqttd from the iotcore wheel"
        self.log.say("broker", f"{self.broker.kind} ({why}) on {self.broker.url}", "bold")
        self.result.ports.append(self.broker.port)
        self._timed("broker", t)

        t = time.monotonic()
        n_val = 64 if opts.quick else 256
        steps = opts.recovery_steps if opts.recovery_steps is not None else (20 if opts.quick else 60)
        # scenes are cached under the data dir beside the training ones; n_calib 256 is plenty for
        # importance (4 batches of 32) and for the distillation steps of one build
        refine = opts.refine_steps
        if refine is None:
            refine = QUICK_REFINE_STEPS if opts.quick else REFINE_STEPS
        # no from-scratch candidate: its minutes of training would double the demo (docs/demo.md)
        engine = load_engine(
            checkpoint,
            opts.data_dir,
            n_calib=n_val,
            n_val=n_val,
            recovery_steps=steps,
            refine_steps=refine,
            train_data=OFF,
        )
        engine.work_dir = self.work / "engine"  # build scratch goes away with the run
        self.log.say("server", f"scoring the full model on {n_val} validation scenes (the baseline)")
        engine.reference_metrics()
        # Refinements run one at a time after the quick builds, each tens of seconds on 2 cores: the demo
        # refines the first device's task set only (the two Raspberry Pis share it), enough to show
        # quick-then-refined hot-swaps while `make demo` stays within a few minutes.
        shown = fleet(opts.agents)[0]
        self.engine = ReportingEngine(engine, self.log, {tuple(sorted(shown.tasks))})
        settings = ServerSettings(
            state_dir=opts.server_dir(self.work),
            broker=self.broker.url,
            grpc="127.0.0.1:0",
            workers=1,
            http=_free_or_any(opts.http),
            # the dim garage's adaptation: AdaBN alone (seconds; it recovers the dark shift in
            # docs/benchmarks.md) keeps `make demo` within its minutes, where restyle distils for longer
            adapt_method="adabn",
        )
        self.server = build_server(settings, self.engine, self.broker.kind).start()
        if not self.server.wait_ready(15):
            raise DemoStalled("the fleet server's MQTT bridge did not subscribe within 15 s")
        self.result.ports.append(self.server.grpc_port)
        if self.server.dashboard is not None:
            self.result.ports.append(self.server.dashboard.port)
            self.result.dashboard = self.server.http_url
            self.log.say("server", f"dashboard: {self.server.http_url}/fleet (open it in a browser)", "bold")
        self.log.say(
            "server",
            f"fleet server up: gRPC {self.server.grpc_address}, MQTT {topics.shared(topics.NEEDS)}, "
            f"base model {engine.base_model_id[:12]}",
            "bold",
        )
        self._timed("server", t)
        self.monitor = FleetMonitor(self.broker.url, self.log, self._meta_of)
        self.monitor.start()
        jobs = self.server.jobs
        self._watcher = threading.Thread(
            target=watch_jobs,
            args=(jobs.active if jobs else list, self._describe_job, self.engine, self._stop_watch),
            name="demo-jobs",
            daemon=True,
        )
        self._watcher.start()

    def _describe_job(self, key: str) -> str:
        rec = self.server.registry.jobs.get(key) if self.server and self.server.registry else None
        if rec is None:
            return "?"
        spec = spec_from_dict(rec.spec)
        return f"{','.join(spec.tasks)} at budget {spec.budget.bucket()}"

    def _meta_of(self, artifact_id: str) -> ModelMeta | None:
        store = self.server.store if self.server else None
        try:
            return store.meta(artifact_id) if store is not None else None
        except EdgecutError:
            return None

    def _fleet_phase(self) -> None:
        opts = self.opts
        first, later = waves(fleet(opts.agents))
        t_fleet = time.monotonic()
        self.deadline = t_fleet + opts.timeout  # training the model first may take longer than the run
        self._launch(first)
        self._wait_serving(self.agents, "first models")
        self._timed("first_models", t_fleet)
        if later:
            names = ", ".join(p.device_id for p in later)
            self.log.say(
                "demo", f"{names} join now: same class and tasks as a device above -> cache hits", "bold"
            )
            t = time.monotonic()
            self._launch(later)
            self._wait_serving(self.agents, "late joiners")
            self._timed("late_joiners", t)
        self.log.say(
            "demo",
            f"{DIM_GARAGE.device_id} joins: same class and tasks as {first[0].device_id}, but a dim camera "
            "and adapt: on -> it sends statistics summaries (never images) and gets a model adapted to them",
            "bold",
        )
        self._launch([DIM_GARAGE])
        garage = self.agents[-1]
        self._wait_serving([garage], "the dim garage's first model")
        self._sleep_until(t_fleet + opts.duration * 0.3)
        target = changed_device(first)
        agent = next(a for a in self.agents if a.profile == target)
        self._change_tasks(agent, list(target.changes_to))
        t = time.monotonic()
        self._wait(
            lambda: not [a for a in self.agents if self._version(a) is None],
            "refined models",
            lambda: [a for a in self.agents if self._version(a) is None],
        )
        self._timed("refined_models", t)
        t = time.monotonic()
        self._wait(lambda: self._adapted_from(garage) > 0, "the dim garage's adapted model", lambda: [garage])
        self._timed("adapted_model", t)
        self._sleep_until(t_fleet + opts.duration)
        self._timed("fleet_phase", t_fleet)

    def _launch(self, profiles: list[DeviceProfile]) -> None:
        assert self.broker is not None
        started = []
        for p in profiles:
            gate = self.monitor.wait_offer if self.monitor else None
            assert self.server is not None and self.server.signer is not None
            key = self.server.signer.key.public_text
            operator = self.server.commands.key.public_text if self.server.commands else ""
            agent = AgentProcess(
                p, self.work / "agents", self.broker.url, self.log, gate, fleet_key=key, operator_key=operator
            )
            self.log.say(p.device_id, f"agent starting: {p.hardware}; wants {','.join(p.tasks)}", "dim")
            agent.start()
            self.agents.append(agent)
            started.append(agent)
        for agent in started:
            agent.wait_api(max(1.0, min(60.0, self.deadline - time.monotonic())))
            self.result.ports.append(int(agent.address.rsplit(":", 1)[1]))
            self.result.pids.append(agent.pid)
            driver = self.drivers[agent.device_id] = InferenceDriver(agent, self.opts.rate, self.log)
            driver.start()

    def _serves(self, agent: AgentProcess, tasks: list[str]) -> bool:
        """The agent serves a model for `tasks` and the demo's client has had answers from it."""
        if not agent.alive():
            raise DemoStalled(f"agent {agent.device_id} exited ({agent.returncode()}):\n{agent.log_tail()}")
        try:
            st = agent.status()
        except AgentError:
            return False
        if agent.watch is not None:
            try:
                agent.watch.check(st)
            except AgentStalled as exc:  # a refused offer: the wait would last until --timeout
                raise DemoStalled(str(exc)) from None
        return sorted(st.model_tasks) == sorted(tasks) and self.drivers[agent.device_id].serving.is_set()

    def _wait_serving(self, agents: list[AgentProcess], what: str) -> None:
        def pending() -> list[AgentProcess]:
            return [a for a in agents if not self._serves(a, list(a.profile.tasks))]

        self._wait(lambda: not pending(), what, pending)

    def _wait(
        self, cond: Callable[[], bool], what: str, pending: Callable[[], list[AgentProcess]] | None = None
    ) -> None:
        """Until `cond`; every WAIT_REPORT_S say what is still missing, and name it at the time-out."""
        since = time.monotonic()
        next_report = since + WAIT_REPORT_S
        while not cond():
            now = time.monotonic()
            if now > self.deadline or now > next_report:
                waiting = pending() if pending is not None else []
                details = "; ".join(f"{a.device_id}: {self._waiting_on(a)}" for a in waiting)
                if now > self.deadline:
                    tail = (
                        f"\nThe last log lines of {waiting[0].device_id}:\n{waiting[0].log_tail()}"
                        if waiting
                        else ""
                    )
                    raise DemoStalled(
                        f"timed out waiting for {what} after {now - since:.0f} s "
                        f"(--timeout {self.opts.timeout:g} s)" + (f"; {details}" if details else "") + tail
                    )
                left = self.deadline - now
                self.log.say(
                    "demo",
                    f"still waiting for {what} ({now - since:.0f} s so far, time-out in {left:.0f} s)"
                    + (f": {details}" if details else ""),
                    "dim",
                )
                next_report = now + WAIT_REPORT_S
            time.sleep(0.2)

    def _waiting_on(self, agent: AgentProcess) -> str:
        """Where one device is on its way to serving, from what the monitor saw on the broker."""
        if self.monitor is None:
            return "no monitor"
        trace = self.monitor.trace(agent.device_id)
        if not trace.needs:
            return "no needs seen on the broker yet"
        t_needs, tasks, seq = trace.needs[-1]
        offers = [o for o in trace.offers if o[0] >= t_needs]
        if not offers:
            building = (
                ", a build is running"
                if self.server and self.server.jobs and self.server.jobs.active()
                else ""
            )
            return (
                f"needs {','.join(tasks)} (seq {seq}) sent at {t_needs:.1f} s, no model offered yet{building}"
            )
        t_offer, artifact, _ = offers[-1]
        swaps = [sw for sw in trace.swaps if sw[0] >= t_offer and sw[1] == artifact]
        if not swaps:
            return f"model {artifact[:12]} offered at {t_offer:.1f} s, not swapped in yet"
        if not swaps[-1][2]:
            return f"refused model {artifact[:12]}: {swaps[-1][3]}"
        return f"serves {artifact[:12]} since {swaps[-1][0]:.1f} s; waiting for its first answers"

    def _sleep_until(self, t: float) -> None:
        while time.monotonic() < t:
            time.sleep(min(0.5, t - time.monotonic()))
            if not all(a.alive() for a in self.agents):
                raise DemoStalled("an agent exited during the run")

    def _change_tasks(self, agent: AgentProcess, tasks: list[str]) -> None:
        old = list(agent.profile.tasks)
        at = self.log.elapsed()
        t_mono = time.monotonic()
        self.log.say(
            agent.device_id,
            f"[bold]user sets tasks[/] {','.join(tasks)} (was {','.join(old)}) through the local API; "
            "inference goes on",
        )
        agent.set_tasks(tasks)
        self.change = TaskChange(agent.device_id, old, tasks, round(at, 1))
        self._wait(
            lambda: self._serves(agent, tasks) and self._new_model_answered(agent, tasks, t_mono),
            f"the task change on {agent.device_id}",
            lambda: [agent],
        )
        c = self.change
        self.log.say(
            agent.device_id,
            f"[green]task change done[/] in {c.new_model_after_s:.1f} s: answers come from the "
            f"{','.join(tasks)} model; {c.requests_during} requests served meanwhile, {c.failed_during} failed",
        )
        self._timed("task_change", t_mono)

    def _new_model_answered(self, agent: AgentProcess, tasks: list[str], since: float) -> bool:
        st = agent.status()
        everything = list(self.drivers[agent.device_id].samples)
        samples = [s for s in everything if s.t >= since]
        first_new = next((s for s in samples if s.ok and s.artifact_id == st.artifact_id), None)
        if first_new is None or self.change is None:
            return False
        during = [s for s in samples if s.t < first_new.t]
        # from the last request before the change to the first answer of the new model
        window = [s.t for s in everything if s.t < since][-1:] + [s.t for s in during] + [first_new.t]
        self.change.new_model_after_s = round(first_new.t - since, 2)
        self.change.requests_during = len(during)
        self.change.failed_during = sum(not s.ok for s in during)
        self.change.max_gap_s = round(max((b - a for a, b in itertools.pairwise(window)), default=0.0), 2)
        return True

    def _adapted_from(self, agent: AgentProcess) -> int:
        """The summary sequence the model the device serves was adapted to (issue 31; 0 = not adapted)."""
        try:
            st = agent.status()
        except AgentError:
            return 0
        prov = json.loads(st.provenance_json) if st.provenance_json else {}
        return int(prov.get("adapted_from_sequence", 0))

    def _version(self, agent: AgentProcess) -> str | None:
        """Which version of its build the device serves: `quick`, `refinement n`, `quick (refinement
        not better)`, `adapted ...`; None while a refinement of its model is still to come (built or on
        its way)."""
        try:
            st = agent.status()
        except AgentError:
            return None
        prov = json.loads(st.provenance_json) if st.provenance_json else {}
        n, key = int(prov.get("refinement", 0)), str(prov.get("build_key", ""))
        if int(prov.get("adapted_from_sequence", 0)):  # a model adapted to the device's own statistics
            return f"adapted to its statistics ({f'refinement {n}' if n else 'quick model'})"
        registry = self.server.registry if self.server else None
        if n >= 1:
            return f"refinement {n}"
        if not key or registry is None or self.engine is None:
            return None
        job = registry.jobs.get(key)
        if job is None:
            return None
        if job.refinement >= 1:  # the server serves a refinement the device has not swapped in yet
            return None
        if self.engine.refinements(spec_from_dict(job.spec)) < 1:
            return "quick"
        rec = registry.jobs.get(refinement_key(key, 1))
        if rec is None or rec.state not in (DONE, FAILED):
            return None
        if rec.state == DONE and rec.stage == NOT_BETTER:
            return "quick (refinement not better)"
        return "quick" if rec.state == FAILED or rec.stage != "ready" else None

    # -- results and shutdown ------------------------------------------------------------------

    def _collect(self) -> None:
        for driver in self.drivers.values():
            driver.stop()
        self.result.change = self.change
        devices = [self._device_result(agent) for agent in self.agents]
        # Reports travel over MQTT: give the last swap's report and telemetry a moment to land.
        deadline = time.monotonic() + REGISTRY_WAIT_S
        while not all(self._server_view(d) for d in devices) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.result.devices.extend(devices)
        garage = next((a for a in self.agents if a.profile.adapt), None)
        if garage is not None:
            self.result.adaptation = self._adaptation_gain(garage)

    def _server_view(self, d: DeviceResult) -> bool:
        """Fill in what the fleet server's registry holds for `d`; True once it has all of it."""
        registry = self.server.registry if self.server else None
        if registry is None:
            return True
        rec = registry.devices.get(d.device_id) or {}
        d.server_telemetry = bool(rec.get("telemetry"))
        d.server_swaps = sum(1 for s in registry.offers.swaps(d.device_id, limit=1000) if s["ok"])
        return d.server_telemetry and d.server_swaps >= d.swaps

    def _device_result(self, agent: AgentProcess) -> DeviceResult:
        samples = self.drivers[agent.device_id].samples if agent.device_id in self.drivers else []
        reg: dict[str, Any] = {}
        if self.server is not None and self.server.registry is not None:
            reg = self.server.registry.devices.get(agent.device_id) or {}
        trace = self.monitor.trace(agent.device_id) if self.monitor else None
        try:
            st = agent.status()
        except AgentError as exc:
            return DeviceResult(
                agent.device_id,
                reg.get("device_class", "?"),
                reg.get("budget", ""),
                list(agent.profile.tasks),
                [],
                "",
                None,
                0,
                0,
                0,
                len(samples),
                sum(not s.ok for s in samples),
                0,
                0.0,
                0.0,
                [str(exc)],
            )
        ok = [s for s in samples if s.ok]
        return DeviceResult(
            device_id=agent.device_id,
            device_class=reg.get("device_class", "?"),
            budget=reg.get("budget", ""),
            tasks=list(st.tasks),
            model_tasks=list(st.model_tasks),
            artifact_id=st.artifact_id,
            meta=ModelMeta.from_json(st.model_meta_json) if st.model_meta_json else None,
            swaps=st.swaps,
            failed_swaps=st.failed_swaps,
            cache_hits=sum(hit for _, _, hit in trace.offers) if trace else 0,
            requests=len(samples),
            failed=sum(not s.ok for s in samples),
            agent_failed=int(st.failed_count),
            latency_p50_ms=_p50([s.latency_ms for s in ok]),
            round_trip_p50_ms=_p50([s.round_trip_ms for s in ok]),
            errors=(trace.errors if trace else []) + ([st.last_error] if st.last_error else []),
            version=self._version(agent) or "quick (refinement pending)",
            served=sorted(
                {s.artifact_id for s in ok}, key=lambda a: next(s.t for s in ok if s.artifact_id == a)
            ),
            precision=st.precision,
            timings_ms={
                t["precision"]: t["median_ms"]
                for t in json.loads(st.timings_json or "[]")
                if t["median_ms"] > 0
            },
        )

    def _adaptation_gain(self, agent: AgentProcess) -> AdaptationGain | None:
        """The adapted model against the one it adapts, on the demo's own labelled scenes under the device's
        shift (the demo knows the labels; the server never saw these scenes, or any of the device's)."""
        from edgecut.server.cut.refine import quality
        from edgecut.server.mtl.data import synthetic_scenes
        from edgecut.server.mtl.evaluate import evaluate_onnx
        from edgecut.server.mtl.shifts import shifted

        if self.server is None or self.server.store is None or self.engine is None:
            return None
        if self._adapted_from(agent) <= 0:
            return None
        try:
            store, adapted = self.server.store, agent.status().artifact_id
            meta = store.meta(adapted)
            base = meta.parent_artifact_id
            specs = {t: s for t, s in self.engine.engine.base.task_specs.items() if t in meta.tasks}  # type: ignore[attr-defined]
            scenes = shifted(
                synthetic_scenes(GAIN_SCENES, IMAGE_SEED, meta.input.shape[-1] or 64, show_progress=False),
                agent.profile.shift,
                seed=IMAGE_SEED,
            )
            with tempfile.TemporaryDirectory(dir=self.work) as tmp:
                dm = {}
                for name, aid in (("fleet", base), ("adapted", adapted)):
                    path = Path(tmp) / f"{name}.onnx"
                    with store.open(aid) as src, path.open("wb") as out:
                        shutil.copyfileobj(src, out)
                    dm[name] = quality(evaluate_onnx(path, specs, scenes), meta.reference_metrics, specs)
        except Exception as exc:  # a figure for the report: say why it is missing, never lose the table
            self.result.notes.append(f"could not measure the dim garage's adaptation: {exc!r}")
            return None
        if dm["fleet"] is None or dm["adapted"] is None:
            return None
        gain = AdaptationGain(
            agent.device_id,
            agent.profile.shift,
            GAIN_SCENES,
            base,
            adapted,
            self._adapted_from(agent),
            round(dm["fleet"], 2),
            round(dm["adapted"], 2),
        )
        self.log.say(agent.device_id, gain.describe(), "green")
        return gain

    def _cleanup(self) -> None:
        # A second Ctrl-C must not cut the shutdown short: every step below is bounded by a timeout.
        previous = signal.signal(signal.SIGINT, lambda *_: self.log.say("demo", "still stopping...", "dim"))
        try:
            self.log.say(
                "demo", f"stopping {len(self.agents)} agents, the fleet server and the broker", "bold"
            )
            self._stop_watch.set()
            if self._watcher is not None:
                self._watcher.join(5)
            for driver in self.drivers.values():
                driver.stop()
            for agent in self.agents:  # all at once; each takes a moment to close its link and API
                if agent.alive() and agent.proc is not None:
                    agent.proc.terminate()
            if self.server is not None:  # meanwhile: interrupt a running build, close gRPC and MQTT
                self.server.stop()
            if self.engine is not None:
                self.result.builds = list(self.engine.builds)
                self.result.refinements = list(self.engine.refine_runs)
            for agent in self.agents:
                agent.stop(timeout=10)
            if self.monitor is not None:
                self.monitor.stop()
            if self.broker is not None:
                self.broker.close()
            self.result.ports_open_after = [p for p in self.result.ports if port_open(p)]
            self.result.pids_alive_after = [p for p in self.result.pids if alive(p)]
            if self.opts.keep:
                self.log.say("demo", f"kept the run's files in {self.work}")
            else:
                shutil.rmtree(self.work, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
