"""A fast Engine that builds a real, small ONNX model per BuildSpec (no torch): the tests' engine and
the one `edgecut bench fleet` states it uses, so fleet figures measure the service, not the pruning.

Input "image" N x 3 x 64 x 64; one output per selected task (1x1 convolutions after a shared
stem whose width follows the budget), ModelMeta embedded under metadata_props["edgecut"]. Builds
report progress like the real engine, can be slowed down (`delay`), fail on request
(`fail_tasks`), or succeed with an artifact a device must refuse (`faults`: "nan" outputs, or
"unloadable" bytes that onnxruntime cannot parse), or one a staged rollout must stop (`faults`: "slow",
a chain of 3x3 convolutions that makes inference tens of times slower; "low_quality", metrics far
below the full model's). Every model carries per-task metrics next to the full model's like the real
engine's: made-up figures that fall with the kept width (test data, not measurements).

Progressive delivery: with `refinements=N` every build is followed by N refinements; refinement n is
the same architecture with other weights and metrics that close half of the remaining gap to the full
model, or None ("not better") for the numbers in `not_better`; the numbers in `retrained` stand for the
real engine's from-scratch candidate: one channel narrower (another architecture, method "scratch").
Refinements honour `delay` and `hold()`.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecut.model_meta import ONNX_METADATA_KEY, SCRATCH_METHOD, InputSpec, ModelMeta, OutputSpec
from edgecut.server.errors import BuildError, ImpossibleBudgetError, UnknownTaskError
from edgecut.server.spec import AdaptRequest, BuildSpec, BuiltArtifact, ProgressFn, Refinement


def corrupted(data: bytes) -> bytes:
    """Bytes that onnxruntime cannot load (the header survives, the graph does not)."""
    return data[:64] + b"\xff" * 256 + data[64 + 256 :]


SIZE = 64
FULL_WIDTH = 32
SLOW_LAYERS = 12  # 3x3 convolutions a full-width "slow" model runs before its heads
FAULTS = ("nan", "unloadable", "slow", "low_quality")
# kind -> (metric, full model's value, lower is better)
REFERENCE = {
    "segmentation": ("miou", 0.60, False),
    "depth": ("abs_err", 0.10, True),
    "normals": ("mean_angle", 20.0, True),
    "edges": ("f1", 0.70, False),
    "classification": ("accuracy", 0.80, False),
}
# task -> (output kind, channels)
TASKS: dict[str, tuple[str, int]] = {
    "seg": ("segmentation", 5),
    "depth": ("depth", 1),
    "normals": ("normals", 3),
    "edges": ("edges", 1),
    "count": ("classification", 10),
}


class OnnxTestEngine:
    def __init__(
        self,
        workdir: Path | None = None,
        delay: float = 0.0,
        fail_tasks: set[str] | None = None,
        pad_bytes: int = 0,
        base_model_id: str = "test-mtl-v1",
        faults: dict[tuple[str, ...], str] | None = None,
        refinements: int = 0,
        not_better: set[int] | None = None,
        retrained: set[int] | None = None,
    ) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="edgecut-test-engine-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.delay, self.fail_tasks, self.pad_bytes = delay, set(fail_tasks or ()), pad_bytes
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._base = base_model_id
        # sorted tasks -> "nan" | "unloadable": that build "succeeds" with a broken model (may be set later)
        self.faults: dict[tuple[str, ...], str] = dict(faults or {})  # sorted tasks -> one of FAULTS
        self.builds: list[BuildSpec] = []  # every build started, in order
        self.refinement_count, self.not_better = refinements, set(not_better or ())
        self.retrained = set(retrained or ())
        self.refines: list[tuple[BuildSpec, Refinement]] = []  # every refinement started, in order
        self.adapts: list[tuple[BuildSpec, Any]] = []  # every adaptation started (stats_engine.py)
        self._lock = threading.Lock()
        self._gate = threading.Event()  # cleared inside hold(): builds wait before they export
        self._gate.set()
        self._refine_gate = threading.Event()  # cleared inside hold_refinements()
        self._refine_gate.set()

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """Builds started inside the block finish only after it ends (a test orders events with it)."""
        return _closed(self._gate)

    def hold_refinements(self) -> contextlib.AbstractContextManager[None]:
        """Refinements started inside the block finish only after it ends (quick builds do not wait)."""
        return _closed(self._refine_gate)

    @property
    def base_model_id(self) -> str:
        return self._base

    @property
    def tasks(self) -> list[str]:
        return list(TASKS)

    def _width(self, spec: BuildSpec) -> int:
        frac = min(f for f in (spec.budget.macs_fraction, spec.budget.params_fraction, 1.0) if f is not None)
        return max(1, round(FULL_WIDTH * frac))

    def _macs_params(self, tasks: tuple[str, ...], width: int) -> tuple[int, int]:
        params = 3 * width + width + sum(width * TASKS[t][1] + TASKS[t][1] for t in tasks)
        macs = SIZE * SIZE * (3 * width + sum(width * TASKS[t][1] for t in tasks))
        return macs, params

    def validate(self, spec: BuildSpec) -> None:
        unknown = [t for t in spec.tasks if t not in TASKS]
        if unknown:
            raise UnknownTaskError(f"unknown task {unknown[0]!r}: this model knows {', '.join(TASKS)}")
        macs, params = self._macs_params(spec.tasks, 1)
        b = spec.budget
        if b.max_macs is not None and b.max_macs < macs:
            raise ImpossibleBudgetError(
                f"max_macs={b.max_macs} is below the smallest model for {', '.join(spec.tasks)} "
                f"({macs} MACs); allow a longer latency or fewer tasks"
            )
        if b.max_params is not None and b.max_params < params:
            raise ImpossibleBudgetError(
                f"max_params={b.max_params} is below the smallest model for {', '.join(spec.tasks)} "
                f"({params} parameters); allow a bigger model or fewer tasks"
            )

    def refinements(self, spec: BuildSpec) -> int:
        return self.refinement_count

    def adapt(self, spec: BuildSpec, request: AdaptRequest, progress: ProgressFn) -> BuiltArtifact | None:
        """Nothing to ship: this engine does not adapt (tests/support/stats_engine.py does)."""
        return None

    def refine(self, spec: BuildSpec, parent: Refinement, progress: ProgressFn) -> BuiltArtifact | None:
        with self._lock:
            self.refines.append((spec, parent))
        steps = [("distillation", 0.3), ("distillation", 0.6), ("exporting", 0.9)]
        self._steps(spec, progress, steps, self._refine_gate)
        if parent.number in self.not_better:
            return None
        built = self._artifact(spec, parent.number, parent.parent_meta, parent.number in self.retrained)
        built.parent_artifact_id, built.refinement = parent.parent_artifact_id, parent.number
        return built

    def build(self, spec: BuildSpec, progress: ProgressFn) -> BuiltArtifact:
        with self._lock:
            self.builds.append(spec)
        steps = [
            ("importance", 0.1),
            ("pruning", 0.3),
            ("pruning", 0.5),
            ("recovery", 0.7),
            ("exporting", 0.9),
        ]
        self._steps(spec, progress, steps, self._gate)
        return self._artifact(spec)

    def _steps(
        self, spec: BuildSpec, progress: ProgressFn, steps: list[tuple[str, float]], gate: threading.Event
    ) -> None:
        for stage, frac in steps:
            progress(stage, frac, f"{stage} {int(frac * 100)}%")
            if self.delay:
                time.sleep(self.delay / len(steps))
            if stage == "exporting":
                while not gate.wait(0.05):
                    if gate is self._refine_gate:  # a held refinement can still be stopped or yield
                        progress(stage, frac, f"{stage} {int(frac * 100)}% (held)")
            if stage == "recovery" and self.fail_tasks & set(spec.tasks):
                raise BuildError(
                    f"recovery diverged for {', '.join(sorted(self.fail_tasks & set(spec.tasks)))}"
                )

    def _artifact(
        self, spec: BuildSpec, refinement: int = 0, parent: ModelMeta | None = None, narrower: bool = False
    ) -> BuiltArtifact:
        width = max(1, self._width(spec) - int(narrower))
        macs, params = self._macs_params(spec.tasks, width)
        while True:  # honour max_macs / max_params like the real engine would
            b = spec.budget
            if (b.max_macs is None or macs <= b.max_macs) and (
                b.max_params is None or params <= b.max_params
            ):
                break
            width -= 1
            macs, params = self._macs_params(spec.tasks, width)
        full_macs, full_params = self._macs_params(spec.tasks, FULL_WIDTH)
        key = spec.build_key(self._base)
        fault = self.faults.get(spec.tasks)
        if fault not in (None, *FAULTS):
            raise ValueError(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")
        metrics, reference = _metrics(spec.tasks, width, fault == "low_quality")
        if parent is not None:  # half of the parent's remaining gap to the full model is recovered
            metrics = {
                t: {m: round((v + reference[t][m]) / 2, 4) for m, v in parent.metrics.get(t, {}).items()}
                for t in spec.tasks
            }
        meta = ModelMeta(
            base_model=self._base,
            tasks=list(spec.tasks),
            input=InputSpec(shape=[None, 3, SIZE, SIZE], mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
            outputs={
                t: OutputSpec(
                    name=t,
                    kind=TASKS[t][0],  # type: ignore[arg-type]
                    shape=[None, TASKS[t][1]] if t == "count" else [None, TASKS[t][1], SIZE, SIZE],
                )
                for t in spec.tasks
            },
            params=params,
            macs=macs,
            full_params=full_params,
            full_macs=full_macs,
            build_key=key,
            method=SCRATCH_METHOD if narrower else "test-onnx",
            refinement=refinement,
            pipeline_version="test",
            metrics=metrics,
            reference_metrics=reference,
        )
        path = self.workdir / (f"{key}.r{refinement}.onnx" if refinement else f"{key}.onnx")
        seed = int(key[:8], 16) + refinement  # a refinement has other weights: other bytes
        model = self._model(spec.tasks, width, meta, seed, nan=fault == "nan", slow=fault == "slow")
        data = model.SerializeToString()
        if fault == "unloadable":
            data = corrupted(data)
        path.write_bytes(data)
        return BuiltArtifact(path, meta)

    def _model(
        self,
        tasks: tuple[str, ...],
        width: int,
        meta: ModelMeta,
        seed: int,
        nan: bool = False,
        slow: bool = False,
    ) -> onnx.ModelProto:
        rng = np.random.default_rng(seed)
        inits = [
            numpy_helper.from_array(rng.normal(size=(width, 3, 1, 1)).astype(np.float32), "stem_w"),
            numpy_helper.from_array(np.zeros(width, np.float32), "stem_b"),
        ]
        nodes = [
            helper.make_node("Conv", ["image", "stem_w", "stem_b"], ["stem"]),
            helper.make_node("Relu", ["stem"], ["feat"]),
        ]
        trunk = "feat"
        # same shape in and out, many MACs; a narrow (small-budget) model gets more layers, so a slow
        # variant costs what the full width's chain does (~8 ms) and stays far above timing jitter
        layers = SLOW_LAYERS * max(1, round((FULL_WIDTH / width) ** 2)) if slow else 0
        for i in range(layers):
            w = rng.normal(scale=0.05, size=(width, width, 3, 3)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"slow{i}_w"))
            nodes.append(helper.make_node("Conv", [trunk, f"slow{i}_w"], [f"slow{i}"], pads=[1, 1, 1, 1]))
            trunk = f"slow{i}"
        if nan:  # loads and runs, but every output is NaN
            inits.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan"))
            nodes.append(helper.make_node("Add", ["feat", "nan"], ["feat_nan"]))
            trunk = "feat_nan"
        outputs = []
        for t in tasks:
            c = TASKS[t][1]
            inits.append(
                numpy_helper.from_array(rng.normal(size=(c, width, 1, 1)).astype(np.float32), f"{t}_w")
            )
            conv_out = f"{t}_map" if t == "count" else t
            nodes.append(helper.make_node("Conv", [trunk, f"{t}_w"], [conv_out]))
            if t == "count":
                nodes.append(helper.make_node("ReduceMean", [conv_out], [t], axes=[2, 3], keepdims=0))
                outputs.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, ["N", c]))
            else:
                outputs.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, ["N", c, SIZE, SIZE]))
        if self.pad_bytes:  # an unused initializer makes the artifact as large as a download test needs
            inits.append(numpy_helper.from_array(rng.integers(0, 255, self.pad_bytes, dtype=np.uint8), "pad"))
        graph = helper.make_graph(
            nodes,
            "edgecut_test",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
            outputs,
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        helper.set_model_props(model, {ONNX_METADATA_KEY: meta.to_json()})
        onnx.checker.check_model(model)
        return model


@contextlib.contextmanager
def _closed(gate: threading.Event) -> Iterator[None]:
    gate.clear()
    try:
        yield
    finally:
        gate.set()


def _metrics(
    tasks: tuple[str, ...], width: int, low: bool
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Made-up per-task metrics (and the full model's) that get worse as the model gets narrower."""
    keep = width / FULL_WIDTH
    metrics, reference = {}, {}
    for t in tasks:
        name, full, lower_better = REFERENCE[TASKS[t][0]]
        if low:
            value = full * 3.0 if lower_better else full * 0.3
        else:
            value = full * (1.1 - 0.1 * keep) if lower_better else full * (0.9 + 0.1 * keep)
        metrics[t], reference[t] = {name: round(value, 4)}, {name: full}
    return metrics, reference
