"""The rows of `edgecut bench quality` (torch-free): one model at one budget for one task set, and what
follows from it (speed-up, MAC cut, per-task change against the full model)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecut.server.mtl.metric_names import DELTA_M_METRICS, task_change

Metrics = dict[str, dict[str, float]]

# Row kinds, in table order. "quick", "refined" (distillation) and "retrained" (the engine's from-scratch
# candidate, when it beat the refined model) are what edgecut ships; the rest are baselines
# ("scratch-candidate": that candidate when it did not beat it, so it was not shipped).
FULL, QUICK, REFINED, RETRAINED = "full", "quick", "refined", "retrained"
SCRATCH_TIME, SCRATCH_CANDIDATE = "scratch-same-time", "scratch-candidate"
# Torch-Pruning (tp_baseline.VARIANTS, in order): each after the quick build's training ("quick") and after
# the refinements' ("final"), the same training edgecut's lineage gets (lineage.py)
TP_QUICK = ("tp-magnitude", "tp-taylor", "tp-isomorphic")
TP_FINAL = tuple(f"{k}-final" for k in TP_QUICK)
TP_MAGNITUDE, TP_TAYLOR, TP_ISOMORPHIC = TP_QUICK
SHIPPED = (QUICK, REFINED, RETRAINED)
SCRATCH = (SCRATCH_TIME, SCRATCH_CANDIDATE)


@dataclass
class Row:
    kind: str
    label: str
    macs: int
    params: int
    latency_ms: float  # onnxruntime, 1 thread, batch 1
    seconds: float  # this model's own build / training time
    elapsed: float  # wall clock from the request to this model (a refinement adds to its parent's)
    metrics: Metrics
    delta_m: float  # % vs. the full model
    refinement: int = 0
    note: str = ""
    recovery_steps: int = 0  # distillation steps behind this model's weights (all stages together)

    @property
    def shipped(self) -> bool:
        return self.kind in SHIPPED


@dataclass
class Case:
    """One task set at one budget (a fraction of the decomposed full model's MACs), on one seed."""

    tasks: tuple[str, ...]
    budget: float
    kinds: dict[str, str]  # task -> kind
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seed: int | None = None  # None: a run without seeds (one run, named without one)

    @property
    def full(self) -> Row:
        return next(r for r in self.rows if r.kind == FULL)

    def of(self, *kinds: str) -> list[Row]:
        return [r for r in self.rows if r.kind in kinds]

    def distilled(self) -> Row | None:
        """The last shipped model of the distillation lineage (quick, refinements), before any
        from-scratch candidate: what a baseline given the same training is compared with."""
        shipped = self.of(QUICK, REFINED)
        return shipped[-1] if shipped else None

    def final(self) -> Row | None:
        """What the device serves at the end: the last shipped model (a refinement ships only when better)."""
        shipped = self.of(*SHIPPED)
        return shipped[-1] if shipped else None

    def speedup(self, row: Row) -> float:
        return self.full.latency_ms / row.latency_ms

    def mac_cut(self, row: Row) -> float:
        return self.full.macs / row.macs

    def task_changes(self, row: Row) -> dict[str, float]:
        """Per task, the % change of its Δm metrics against the full model (negative = worse)."""
        out = {}
        for task, kind in self.kinds.items():
            change = task_change(row.metrics.get(task, {}), self.full.metrics[task], DELTA_M_METRICS[kind])
            if change is not None:
                out[task] = 100.0 * change
        return out

    @property
    def setting(self) -> str:
        """The task set and budget, the same for every seed."""
        return f"{' + '.join(self.tasks)} @ macs {self.budget:g}"

    @property
    def name(self) -> str:
        return self.setting if self.seed is None else f"{self.setting}, seed {self.seed}"


def by_setting(cases: list[Case]) -> dict[str, list[Case]]:
    """Cases grouped by task set and budget, in first-seen order, each group in seed order."""
    out: dict[str, list[Case]] = {}
    for c in cases:
        out.setdefault(c.setting, []).append(c)
    return {k: sorted(v, key=lambda c: c.seed or 0) for k, v in out.items()}
