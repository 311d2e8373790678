"""The demo's result: per-device facts, the checks that decide the exit code, the final table and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from edgecut.model_meta import ModelMeta
from edgecut.server.mtl.metric_names import LOWER_IS_BETTER, PRIMARY

from .events import BuildRecord, human

INTERRUPTED = "interrupted before the end"
# Requests go out every 1/rate s (0.2 s by default); a pause this long means serving stopped.
MAX_GAP_S = 3.0


@dataclass
class DeviceResult:
    device_id: str
    device_class: str  # as the server's budget policy read it from the device's needs
    budget: str
    tasks: list[str]  # selected on the device at the end
    model_tasks: list[str]  # of the model it serves at the end
    artifact_id: str
    meta: ModelMeta | None
    swaps: int
    failed_swaps: int
    cache_hits: int  # model offers answered from the store without a build
    requests: int
    failed: int  # Infer calls that raised, counted by the client
    agent_failed: int  # failed inferences counted by the agent itself
    latency_p50_ms: float  # the model's run time on the device
    round_trip_p50_ms: float  # Infer through the local gRPC API
    errors: list[str] = field(default_factory=list)
    # what reached the fleet server's registry over MQTT (proves telemetry and swap reports arrive)
    server_swaps: int = 0  # successful swaps the server recorded
    server_telemetry: bool = False  # the server holds a telemetry sample of the device
    version: str = ""  # quick / refinement n / quick (refinement not better) of its build
    served: list[str] = field(default_factory=list)  # artifacts that answered its requests, in order
    # the precision the device chose by timing the offered variants on its own CPU, and those timings
    precision: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)  # precision -> median ms at the swap


@dataclass
class TaskChange:
    device_id: str
    old: list[str]
    new: list[str]
    at_s: float  # seconds since the demo started
    new_model_after_s: float | None = None  # until the first answer from a model with the new tasks
    requests_during: int = 0  # Infer calls between the change and that answer
    failed_during: int = 0
    max_gap_s: float = 0.0  # longest pause between two requests over the change: inference never stops


@dataclass
class AdaptationGain:
    """Issue 31: the dim garage's adapted model against the fleet's model it adapts, Δm (%) of each on the
    demo's labelled scenes under the device's shift."""

    device_id: str
    shift: str
    scenes: int
    base_artifact_id: str
    adapted_artifact_id: str
    adapted_from_sequence: int
    delta_m_fleet: float
    delta_m_adapted: float

    def describe(self) -> str:
        return (
            f"adapted to its statistics (summary {self.adapted_from_sequence}): Δm {self.delta_m_adapted:+.1f} % "
            f"against the fleet model's {self.delta_m_fleet:+.1f} % on {self.scenes} labelled scenes as its "
            f"{self.shift} camera sees them ({self.delta_m_adapted - self.delta_m_fleet:+.1f} points)"
        )


@dataclass
class DemoResult:
    broker: str
    model_source: str
    devices: list[DeviceResult] = field(default_factory=list)
    change: TaskChange | None = None
    builds: list[BuildRecord] = field(default_factory=list)
    refinements: list[BuildRecord] = field(default_factory=list)  # refinement runs, shipped or not
    timings_s: dict[str, float] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    ports_open_after: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    pids_alive_after: list[int] = field(default_factory=list)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    dashboard: str = ""  # the fleet dashboard's URL while the demo ran ("" = off)
    adaptation: AdaptationGain | None = None  # the dim garage's adapted model (issue 31)

    def problems(self) -> list[str]:
        """Everything that makes the run a failure (empty = exit code 0)."""
        out = list(self.notes)
        if self.interrupted:
            out.append(INTERRUPTED)
        for d in self.devices:
            if d.swaps < 1 or not d.artifact_id:
                out.append(f"{d.device_id}: never swapped in a model")
            elif sorted(d.model_tasks) != sorted(d.tasks):
                out.append(f"{d.device_id}: serves a model for {d.model_tasks}, not its tasks {d.tasks}")
            if d.swaps and d.server_swaps < d.swaps:
                out.append(f"{d.device_id}: the server recorded {d.server_swaps} of its {d.swaps} swaps")
            if not d.server_telemetry:
                out.append(f"{d.device_id}: no telemetry reached the server")
            if d.failed or d.agent_failed:
                out.append(
                    f"{d.device_id}: {d.failed} failed requests ({d.agent_failed} counted by the agent)"
                )
        c = self.change
        if c is not None:
            if c.new_model_after_s is None:
                out.append(f"task change on {c.device_id} to {c.new} never reached inference")
            elif c.max_gap_s > MAX_GAP_S:
                out.append(f"inference on {c.device_id} paused {c.max_gap_s:.1f} s during the task change")
            if c.failed_during:
                out.append(f"{c.failed_during} requests failed on {c.device_id} during the task change")
        if self.ports_open_after:
            out.append(f"ports still open after the demo: {self.ports_open_after}")
        if self.pids_alive_after:
            out.append(f"processes still alive after the demo: {self.pids_alive_after}")
        return out

    def to_json(self) -> str:
        doc: dict[str, Any] = asdict(self)
        for dev, res in zip(doc["devices"], self.devices, strict=True):
            dev["meta"] = json.loads(res.meta.model_dump_json()) if res.meta else None
        doc["problems"] = self.problems()
        return json.dumps(doc, indent=2)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())


def _share(part: float, whole: float) -> str:
    return f"{human(part)} ({part / whole:.0%})" if whole else human(part)


def _num(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def metric_cells(meta: ModelMeta) -> str:
    """One line per task: its primary metric, tailored model vs. the full model (↓ = lower is better)."""
    lines = []
    for task in meta.tasks:
        key = PRIMARY.get(meta.outputs[task].kind, "")
        got = meta.metrics.get(task, {}).get(key)
        ref = meta.reference_metrics.get(task, {}).get(key)
        if got is None:
            continue
        arrow = "↓" if key in LOWER_IS_BETTER else "↑"
        change = meta.task_changes.get(task)  # % over the task's Δm metrics (engine's no-task-left-behind)
        delta = f" ({change:+.1f} %)" if change is not None else ""
        lines.append(f"{task} {key}{arrow} {_num(got)} / {_num(ref)}{delta}")
    return "\n".join(lines) or "-"


def render(result: DemoResult) -> Table:
    table = Table(title="edgecut demo: what each device ended up serving", show_lines=True)
    for col, justify in (
        ("device\nclass, budget", "left"),
        ("tasks", "left"),
        ("version", "left"),
        ("params\nMACs\n(vs full)", "right"),
        ("per-task metric\ntailored / full model (change)", "left"),
        ("latency\np50", "right"),
        ("requests", "right"),
        ("swaps", "right"),
        ("failed\nrequests", "right"),
    ):
        # wrapped names and metrics read badly; a narrow terminal squeezes the number columns instead
        no_wrap = not col.startswith(("latency", "requests", "swaps", "failed"))
        table.add_column(col, justify=justify, no_wrap=no_wrap)  # type: ignore[arg-type]
    for d in result.devices:
        m = d.meta
        change = result.change if result.change and result.change.device_id == d.device_id else None
        tasks = ",".join(d.tasks) + (f"\n(was {','.join(change.old)})" if change else "")
        swaps = f"{d.swaps}" + (f" ({d.failed_swaps} refused)" if d.failed_swaps else "")
        if d.cache_hits:
            swaps += f"\n{d.cache_hits} cache hit" + ("s" if d.cache_hits != 1 else "")
        failed = d.failed + d.agent_failed
        table.add_row(
            f"{d.device_id}\n{d.device_class}, {d.budget}",
            tasks,
            d.version.replace(" (", "\n(") or "-",
            f"{_share(m.params, m.full_params)}\n{_share(m.macs, m.full_macs)}" if m else "-",
            metric_cells(m) if m else "-",
            f"{d.latency_p50_ms:.2f} ms" + _precision_cell(d),
            str(d.requests),
            swaps,
            f"[{'red' if failed else 'green'}]{failed}[/]",
        )
    return table


def _precision_cell(d: DeviceResult) -> str:
    """The precision serving and, when the device timed several, each one's time: why it chose it."""
    if not d.precision:
        return ""
    timed = ", ".join(f"{p} {ms:.2f}" for p, ms in sorted(d.timings_ms.items(), key=lambda x: x[1]))
    return f"\n{d.precision}" + (f"\n({timed})" if len(d.timings_ms) > 1 else "")
