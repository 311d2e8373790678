"""What a build is asked for and what it returns: the seam between the fleet service and the engine.

No torch here, so the service modules (jobs, grpc_api, mqtt_bridge) stay light; the engine that
implements `Engine` (edgecut.server.engine) imports torch when it is created.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgecut.model_meta import ModelMeta
from edgecut.server.errors import EmptyTasksError, ImpossibleBudgetError

# 2: decomposition drops unread trunk parts; per-MAC ranking for MACs budgets
# 3: quick recovery with feature distillation, weighted vote, rebalanced fusion for a lagging task
# 4: channel axis from the layer (token Linears, attention), a user model calibrated on its own data
# 5: a static INT8 variant (checked per task, mixed precision) beside the fp32 model
# 6: layer widths in steps of 16 (faster in INT8 and fp32 on the CPU)
# 7: a task that lost half its metric in steps of 16 is pruned again in steps of 8
# 8: mixed precision keeps a failing task's last layer fp32 alone where that passes (faster int8 variants)
PIPELINE_VERSION = "cut-8"

# Δm (%) below which a build is refused, not shipped: a model that lost this much is broken (calibrated on
# the wrong images, a budget far too tight), and a device is better off keeping what it runs
MIN_DELTA_M = -30.0
# benchmarks measure Δm and report it beside the baselines: a figure below the floor is a finding, not a refusal
NO_FLOOR = -math.inf
# stage name (queued, importance, pruning, recovery, exporting, ready, failed), fraction 0..1, detail
ProgressFn = Callable[[str, float, str], None]


@dataclass(frozen=True)
class Budget:
    """A limit on the tailored model; fractions are of the selected-task model (after decomposition)."""

    macs_fraction: float | None = None
    params_fraction: float | None = None
    max_macs: int | None = None
    max_params: int | None = None

    def __post_init__(self) -> None:
        for name in ("macs_fraction", "params_fraction"):
            v = getattr(self, name)
            if v is not None and not (0.0 < v <= 1.0):
                raise ImpossibleBudgetError(f"{name}={v} must be in (0, 1]")
        for name in ("max_macs", "max_params"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ImpossibleBudgetError(f"{name}={v} must be positive")

    @property
    def empty(self) -> bool:
        return all(
            getattr(self, n) is None for n in ("macs_fraction", "params_fraction", "max_macs", "max_params")
        )

    def bucketed(self) -> Budget:
        """Near-identical budgets share one build: fractions to 5 % (1 s.f. below 10 %), absolutes to 2 s.f.

        The engine builds the bucketed budget, so an artifact always matches its build key.
        """
        return Budget(
            macs_fraction=_round_fraction(self.macs_fraction),
            params_fraction=_round_fraction(self.params_fraction),
            max_macs=_two_sig(self.max_macs),
            max_params=_two_sig(self.max_params),
        )

    def bucket(self) -> str:
        b = self.bucketed()
        parts = [
            f"{k}={v:g}"
            for k, v in (
                ("macs", b.macs_fraction),
                ("params", b.params_fraction),
                ("max_macs", b.max_macs),
                ("max_params", b.max_params),
            )
            if v is not None
        ]
        return ",".join(parts) or "none"

    @classmethod
    def parse(cls, text: str) -> Budget:
        """`macs=0.3`, `params=0.4,macs=0.5`, `max_macs=20e6`; fractions <= 1, absolutes > 1."""
        kwargs: dict[str, float | int] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = item.partition("=")
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not sep or math.isnan(value):
                raise ImpossibleBudgetError(f"bad budget item {item!r}: expected KEY=NUMBER, e.g. macs=0.3")
            key = key.strip()
            if key in ("macs", "params"):
                if value <= 1.0:
                    kwargs[f"{key}_fraction"] = value
                else:
                    kwargs[f"max_{key}"] = int(value)
            elif key in ("max_macs", "max_params"):
                kwargs[key] = int(value)
            else:
                raise ImpossibleBudgetError(
                    f"unknown budget key {key!r}: use macs, params, max_macs, max_params"
                )
        return cls(**kwargs)  # type: ignore[arg-type]


def _round_fraction(v: float | None) -> float | None:
    if v is None:
        return None
    return min(1.0, round(v * 20) / 20) if v >= 0.1 else float(f"{v:.1g}")


def _two_sig(v: int | None) -> int | None:
    return None if v is None else int(float(f"{v:.2g}"))


@dataclass(frozen=True)
class BuildSpec:
    """One tailored model: the tasks (kept sorted), the budget and the per-task priorities."""

    tasks: tuple[str, ...]
    budget: Budget
    priorities: tuple[tuple[str, float], ...] = ()
    recover: bool = True

    @classmethod
    def create(
        cls,
        tasks: list[str] | tuple[str, ...],
        budget: Budget,
        priorities: dict[str, float] | None = None,
        recover: bool = True,
    ) -> BuildSpec:
        clean = sorted({t.strip() for t in tasks if t.strip()})
        if not clean:
            raise EmptyTasksError("no task selected: name at least one task")
        prio = tuple(sorted((t, float(w)) for t, w in (priorities or {}).items() if t in clean and w != 1.0))
        return cls(tuple(clean), budget, prio, recover)

    def build_key(self, base_model_id: str) -> str:
        """sha256 over (base model, sorted tasks, budget bucket, priorities, recovery, pipeline version)."""
        doc = {
            "base": base_model_id,
            "tasks": list(self.tasks),
            "budget": self.budget.bucket(),
            "priorities": [[t, round(w, 2)] for t, w in self.priorities],
            "recover": self.recover,
            "pipeline": PIPELINE_VERSION,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def spec_to_dict(spec: BuildSpec) -> dict[str, Any]:
    """`spec` as plain JSON values: how the registry stores a job's spec (read back by `spec_from_dict`)."""
    return {
        "tasks": list(spec.tasks),
        "budget": asdict(spec.budget),
        "priorities": [list(p) for p in spec.priorities],
        "recover": spec.recover,
    }


def spec_from_dict(d: dict[str, Any]) -> BuildSpec:
    """The BuildSpec stored by `spec_to_dict` (a job recorded before `recover` existed recovers)."""
    return BuildSpec.create(
        d["tasks"],
        Budget(**d["budget"]),
        {t: float(w) for t, w in d.get("priorities", [])},
        bool(d.get("recover", True)),
    )


@dataclass
class Variant:
    """Another precision of a built model (same weights, same tasks): its own ONNX file and metadata
    (`meta.precision`, and metrics measured on the validation set in that precision)."""

    onnx_path: Path
    meta: ModelMeta


@dataclass
class BuiltArtifact:
    """An exported model: the ONNX file (metadata embedded) and its metadata.

    `scratch` is a folder the engine made for this build only; the consumer calls `cleanup()` once
    it has stored the file, so finished builds leave nothing behind.
    """

    onnx_path: Path
    meta: ModelMeta
    extras: dict[str, float] = field(default_factory=dict)
    scratch: Path | None = None
    parent_artifact_id: str = ""  # progressive refinement: the artifact this one improves on ("" = none)
    refinement: int = 0  # 0 = first build of its key's lineage; signed into the device's manifest
    # what the build decided and why, for people (logged and shown with the job): a recovery a deadline
    # cut short ("quick recovery: 37 of 60 steps (8 s time limit)"), a refinement's shipping test
    notes: list[str] = field(default_factory=list)
    # the same model in other precisions (int8, fp16), each checked against this fp32 model; offered
    # beside it so the device can time them on its own CPU and serve the faster one
    variants: list[Variant] = field(default_factory=list)
    # the statistics companion (issue 31, `meta.precision` "stats"): the model with every BatchNorm
    # computed from its batch, reporting each layer's statistics; None for a model without BatchNorm
    statistics: Variant | None = None

    def cleanup(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


@dataclass(frozen=True)
class Refinement:
    """What a refinement build starts from: a stored artifact of the same build key (progressive delivery).

    The quick model of a key is refinement 0; refinement n trains the same pruned architecture further
    and is shipped as a new artifact of the same key only when it is measurably better than its parent.
    """

    parent_artifact_id: str
    parent_meta: ModelMeta
    number: int  # the refinement to make: 1 = first refinement of the quick model


@dataclass(frozen=True)
class AdaptRequest:
    """An adaptation (issue 31): `parent` (a stored model) adapted to a device's statistics `layers`
    (edgecut/norm_stats.py's Layers: layer -> (mean, variance)) with `method` (None: cut/adapt.py's
    default); shipped only when the summary shows a shift and its Δm on the validation set as the
    device's camera shows it is at most `max_loss` points below the parent's."""

    parent: Refinement
    layers: dict[str, tuple[Any, Any]]
    method: str | None = None
    max_loss: float = 0.5


class Engine(Protocol):
    """What the fleet service needs from the tailoring engine."""

    @property
    def base_model_id(self) -> str: ...

    @property
    def tasks(self) -> list[str]: ...

    def validate(self, spec: BuildSpec) -> None:
        """Raise UnknownTaskError / EmptyTasksError / ImpossibleBudgetError before queueing."""

    def build(self, spec: BuildSpec, progress: ProgressFn) -> BuiltArtifact:
        """Tailor, export and return the artifact (runs in a worker thread)."""

    def refinements(self, spec: BuildSpec) -> int:
        """How many refinements follow the quick build of `spec` (0 = the quick model is final)."""

    def refine(self, spec: BuildSpec, parent: Refinement, progress: ProgressFn) -> BuiltArtifact | None:
        """Train `parent`'s pruned architecture further (worker thread); None when the result is not
        measurably better than the parent on the validation set (nothing is shipped then)."""

    def adapt(self, spec: BuildSpec, request: AdaptRequest, progress: ProgressFn) -> BuiltArtifact | None:
        """`request.parent` adapted to a device's statistics and exported with its companion (worker
        thread); None when it loses more than `request.max_loss` points of Δm (nothing is shipped then)."""
