"""The demo's live log: MQTT traffic of the fleet, build progress from the engine, agents' own log lines.

Everything shown comes from the running system: the monitor is one more MQTT client subscribed to every
device topic, the engine wrapper sees the server's real builds, and agent lines are read from the
agent processes' stderr.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import paho.mqtt.client as mqtt
from google.protobuf.message import DecodeError
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.markup import escape

from edgecut import topics
from edgecut.model_meta import ModelMeta
from edgecut.server.mtl.metric_names import PRIMARY
from edgecut.server.spec import AdaptRequest, BuildSpec, BuiltArtifact, Engine, ProgressFn, Refinement
from edgecut.v1 import fleet_pb2 as pb

PROGRESS_EVERY_S = 10.0


def human(n: float) -> str:
    """12345 -> 12.3k, 4.5e6 -> 4.50M."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


class EventLog:
    """Timestamped lines (seconds since the demo started), one writer at a time."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, who: str, text: str, style: str = "") -> None:
        line = f"[dim]{self.elapsed():6.1f}s[/] [bold]{escape(who):<14}[/] {text}"
        with self._lock:
            self.console.print(f"[{style}]{line}[/]" if style else line, highlight=False)


@dataclass
class DeviceTrace:
    """What the monitor saw of one device on the wire."""

    needs: list[tuple[float, list[str], int]] = field(default_factory=list)  # (t, tasks, seq)
    offers: list[tuple[float, str, bool]] = field(default_factory=list)  # (t, artifact id, cache hit)
    swaps: list[tuple[float, str, bool, str]] = field(default_factory=list)  # (t, artifact, ok, reason)
    errors: list[str] = field(default_factory=list)


class FleetMonitor:
    """Subscribes to every device topic and logs needs, model offers, swaps and errors as they pass."""

    def __init__(self, broker_url: str, log: EventLog, meta_of: Callable[[str], ModelMeta | None]) -> None:
        host, port = broker_url.removeprefix("mqtt://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.log, self.meta_of = log, meta_of
        self.traces: dict[str, DeviceTrace] = {}
        self._lock = threading.Lock()
        self._offered = threading.Condition(self._lock)
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgecut-demo-{id(self):x}")
        self.client.on_connect = lambda c, *_a: c.subscribe(self._subscriptions())
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_message = self._on_message

    @staticmethod
    def _subscriptions() -> list[tuple[str, int]]:
        # A plain subscription: the server's shared one still gets every message (mosquitto and iotcore
        # deliver to both), and this one sees them too.
        leaves = (topics.NEEDS, topics.MODEL, topics.SWAP, topics.ERROR, topics.STATE)
        return [(topics.device_topic("+", leaf), 1) for leaf in leaves]

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            raise TimeoutError(f"the demo's MQTT monitor did not subscribe within {timeout:.0f} s")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def trace(self, device_id: str) -> DeviceTrace:
        with self._lock:
            return self.traces.setdefault(device_id, DeviceTrace())

    def wait_offer(self, device_id: str, text: str, timeout: float = 1.0) -> None:
        """Until an offer to `device_id` whose artifact id starts a word of `text` was logged.

        The agent's download line and the monitor's copy of the offer race on two threads; this keeps
        the log in causal order (offer, download, swap) without holding the download line for long.
        """
        words = set(text.split())
        with self._offered:
            self._offered.wait_for(
                lambda: any(
                    aid[:12] in words for _, aid, _ in self.traces.get(device_id, DeviceTrace()).offers
                ),
                timeout,
            )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device_id = topics.device_of(msg.topic)
        leaf = msg.topic.rsplit("/", 1)[-1]
        if device_id is None or not msg.payload:
            return
        try:
            handler = {
                topics.NEEDS: self._needs,
                topics.MODEL: self._model,
                topics.SWAP: self._swap,
                topics.ERROR: self._error,
                topics.STATE: self._state,
            }[leaf]
            handler(device_id, bytes(msg.payload))
        except (KeyError, DecodeError) as exc:
            self.log.say(device_id, f"unreadable {leaf} message: {exc}", "red")
        except Exception as exc:  # an exception would end paho's network loop: the log must go on
            self.log.say(device_id, f"could not show a {leaf} message: {escape(repr(exc))}", "red")

    def _needs(self, device_id: str, payload: bytes) -> None:
        n = pb.TaskNeeds.FromString(payload)
        self.trace(device_id).needs.append((self.log.elapsed(), list(n.tasks), n.seq))
        self.log.say(
            device_id,
            f"[cyan]needs[/] {','.join(n.tasks)} (class {n.resources.device_class or '?'}, "
            f"{n.resources.cpu_count} cores, seq {n.seq})",
        )

    def _model(self, device_id: str, payload: bytes) -> None:
        m = pb.ModelReady.FromString(payload)
        meta = self.meta_of(m.artifact_id)
        share = f" ({m.macs / meta.full_macs:.0%} of full)" if meta and meta.full_macs else ""
        how = "[green]cache hit[/], no build" if m.cache_hit else f"from build {m.build_key[:8]}"
        if m.refinement:
            how = f"[bold green]refinement {m.refinement}[/] of {m.parent_artifact_id[:12]} (build {m.build_key[:8]})"
        self.log.say(
            device_id,
            f"[cyan]model offered[/] {m.artifact_id[:12]} ({','.join(m.tasks)}): {human(m.params)} params, "
            f"{human(m.macs)} MACs{share}, {m.size_bytes / 1024:.0f} KiB, {how}",
        )
        with self._offered:
            self.traces.setdefault(device_id, DeviceTrace()).offers.append(
                (self.log.elapsed(), m.artifact_id, m.cache_hit)
            )
            self._offered.notify_all()

    def _swap(self, device_id: str, payload: bytes) -> None:
        s = pb.SwapReport.FromString(payload)
        self.trace(device_id).swaps.append((self.log.elapsed(), s.artifact_id, s.ok, s.reason))
        if s.ok:
            was = s.previous_artifact_id[:12] or "nothing"
            self.log.say(
                device_id,
                f"[green]hot-swapped[/] to {s.artifact_id[:12]} (was {was}; load + warm-up + check "
                f"{s.load_ms:.0f} ms)",
            )
        else:
            self.log.say(device_id, f"refused model {s.artifact_id[:12]}: {escape(s.reason)}", "red")

    def _error(self, device_id: str, payload: bytes) -> None:
        e = pb.Error.FromString(payload)
        names = {v.number: v.name for v in pb.Error.Code.DESCRIPTOR.values}
        text = f"{names.get(e.code, e.code)}: {e.message}"
        self.trace(device_id).errors.append(text)
        self.log.say(device_id, f"server error {escape(text)}", "red")

    def _state(self, device_id: str, payload: bytes) -> None:
        st = pb.DeviceState.FromString(payload)
        if st.status == pb.DeviceState.OFFLINE:
            self.log.say(device_id, "offline", "dim")
        elif not st.artifact_id:
            self.log.say(device_id, f"online (agent {st.agent_version}), no model yet", "dim")


@dataclass
class BuildRecord:
    key: str
    tasks: list[str]
    budget: str
    seconds: float


class ReportingEngine:
    """The real engine, with each build's start, stage changes and end told to the event log."""

    def __init__(
        self, engine: Engine, log: EventLog, refine_tasks: set[tuple[str, ...]] | None = None
    ) -> None:
        self.engine, self.log = engine, log
        # task sets whose builds are refined (None: all); the demo refines one, so it stays minutes long
        self.refine_tasks = refine_tasks
        self.builds: list[BuildRecord] = []
        self.refine_runs: list[BuildRecord] = []  # refinement runs (shipped or not)
        self.adapt_runs: list[BuildRecord] = []  # adaptations to a device's statistics (issue 31)
        self._announced: set[str] = set()
        self._lock = threading.Lock()

    @property
    def base_model_id(self) -> str:
        return self.engine.base_model_id

    @property
    def tasks(self) -> list[str]:
        return self.engine.tasks

    def validate(self, spec: BuildSpec) -> None:
        self.engine.validate(spec)

    def refinements(self, spec: BuildSpec) -> int:
        if self.refine_tasks is not None and tuple(spec.tasks) not in self.refine_tasks:
            return 0
        return self.engine.refinements(spec)

    def adapt(self, spec: BuildSpec, request: AdaptRequest, progress: ProgressFn) -> BuiltArtifact | None:
        key = spec.build_key(self.base_model_id)
        who = f"build {key[:8]} adaptation"
        self.log.say("server", f"{who}: adapting the delivered model to a device's statistics", "blue")
        t0 = time.perf_counter()
        built = self.engine.adapt(spec, request, progress)
        seconds = time.perf_counter() - t0
        self.adapt_runs.append(BuildRecord(key, list(spec.tasks), spec.budget.bucket(), seconds))
        if built is None:
            self.log.say("server", f"{who}: loses too much on the validation set; not shipped", "blue")
        else:
            note = built.notes[0] if built.notes else ""
            self.log.say("server", f"{who}: ready after {seconds:.1f} s: {escape(note)}", "blue")
        return built

    def refine(self, spec: BuildSpec, parent: Refinement, progress: ProgressFn) -> BuiltArtifact | None:
        key = spec.build_key(self.base_model_id)
        who = f"build {key[:8]} refinement {parent.number}"
        self.log.say(
            "server", f"{who}: longer distillation of the delivered model starts (background)", "blue"
        )
        last = ""

        def relay(stage: str, fraction: float, detail: str = "") -> None:
            nonlocal last
            if stage != last:
                last = stage
                self.log.say("server", f"{who}: {stage} ({fraction:.0%}) {escape(detail)}", "blue")
            progress(stage, fraction, detail)

        t0 = time.perf_counter()
        built = self.engine.refine(spec, parent, relay)
        seconds = time.perf_counter() - t0
        self.refine_runs.append(BuildRecord(key, list(spec.tasks), spec.budget.bucket(), seconds))
        if built is None:
            self.log.say(
                "server", f"{who}: not measurably better after {seconds:.1f} s; nothing shipped", "blue"
            )
        else:
            before, after = _task_line(parent.parent_meta), _task_line(built.meta)
            self.log.say(
                "server",
                f"{who}: [bold]better[/] after {seconds:.1f} s: {before} -> {after}; shipping it",
                "blue",
            )
        return built

    def announce_queued(self, key: str, describe: Callable[[str], str], ahead: int) -> None:
        """Say "queued" once per build key, whoever sees it first: the job watcher or the build."""
        with self._lock:  # held while printing, so the build's next line never comes first
            if key in self._announced:
                return
            self._announced.add(key)
            self.log.say("server", f"build {key[:8]}: queued, {describe(key)}; {ahead} ahead of it", "yellow")

    def build(self, spec: BuildSpec, progress: ProgressFn) -> BuiltArtifact:
        key, tasks, budget = spec.build_key(self.base_model_id), ",".join(spec.tasks), spec.budget.bucket()
        who = f"build {key[:8]}"
        self.announce_queued(key, lambda _key: f"{tasks} at budget {budget}", ahead=0)
        self.log.say("server", f"{who}: tailoring starts", "yellow")
        last, last_t = "", time.monotonic()

        def relay(stage: str, fraction: float, detail: str = "") -> None:
            nonlocal last, last_t
            # a line per stage, and one every PROGRESS_EVERY_S within a long stage, not per step
            if stage != last or time.monotonic() - last_t > PROGRESS_EVERY_S:
                last, last_t = stage, time.monotonic()
                self.log.say("server", f"{who}: {stage} ({fraction:.0%}) {escape(detail)}", "yellow")
            progress(stage, fraction, detail)

        t0 = time.perf_counter()
        built = self.engine.build(spec, relay)
        seconds = time.perf_counter() - t0
        self.builds.append(BuildRecord(key, list(spec.tasks), budget, seconds))
        m = built.meta
        self.log.say(
            "server",
            f"{who}: [bold]ready[/] in {seconds:.1f} s: {human(m.params)} params, {human(m.macs)} MACs "
            f"({m.macs / m.full_macs:.0%} of the full model's MACs)",
            "yellow",
        )
        return built


def _task_line(meta: ModelMeta) -> str:
    """Each task's primary metric, e.g. `seg miou 0.612, depth abs_err 0.301`."""
    parts = []
    for task in meta.tasks:
        key = PRIMARY.get(meta.outputs[task].kind, "")
        value = meta.metrics.get(task, {}).get(key)
        if value is not None:
            parts.append(f"{task} {key} {value:.3f}")
    return ", ".join(parts) or "-"


def watch_jobs(
    jobs: Callable[[], list[str]],
    describe: Callable[[str], str],
    engine: ReportingEngine,
    stop: threading.Event,
) -> None:
    """Announce each build key when it enters the server's job queue (builds run one at a time)."""
    while not stop.wait(0.1):
        active = jobs()
        for key in active:
            engine.announce_queued(key, describe, ahead=len(active) - 1)


_AGENT_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<name>[\w.]+): (?P<msg>.*)$")


def relay_agent_log(
    device_id: str,
    stream: IO[bytes],
    sink: IO[str],
    log: EventLog,
    before_download: Callable[[str, str], None] | None = None,
) -> None:
    """Copy an agent's stderr to its log file; show its download lines and any warning live.

    Runs until the agent closes stderr (it exits); swaps are shown from the MQTT reports instead.
    """
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        sink.write(line + "\n")
        sink.flush()
        m = _AGENT_LINE.match(line)
        if m is None:
            continue
        level, name, text = m["level"], m["name"], m["msg"]
        if name == "edgecut.agent.fetch" and level == "INFO":
            if before_download is not None:
                before_download(device_id, text)
            log.say(device_id, f"[magenta]download[/] {escape(text)} over gRPC")
        elif level in ("WARNING", "ERROR", "CRITICAL"):
            log.say(
                device_id, f"agent {level.lower()}: {escape(text)}", "red" if level != "WARNING" else "yellow"
            )
