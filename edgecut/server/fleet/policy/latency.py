"""Latency budgets: a device's `max_latency_ms` -> a MACs budget, with a cost model per device class.

The model is `ms = a x MMACs + b` (a = ms per million MACs, b = a fixed cost per request: session
overhead, memory traffic that does not scale with MACs).

- **Seed.** `measure_here()` times ONNX models with onnxruntime on the server itself (1 thread, batch
  1): conv stacks of known MACs made with `onnx.helper` (no torch here), plus stored artifacts when
  given. A least-squares line through the points is this machine's (a, b). Each class starts as that
  line scaled by the budget table's relative throughput (`macs_per_ms` of the reference class / of
  the class), so the table gives relative speeds and the measurement the shape. Without a
  measurement, a class is the table alone (a = 1e6 / macs_per_ms, b = 0).
- **Telemetry.** An agent reports `latency_p50_ms` of the model it serves; with that model's MACs it
  is one observation of its device's *ratio* r = measured / predicted. Each device keeps only its
  latest ratio, clipped to [1/4, 4]; a class's scale is the **median** of its devices' ratios, and it
  moves at most `MAX_STEP` per observation. So one hostile or broken device moves nobody else's
  budget more than its clipped share of a median: with three or more honest devices, not at all
  beyond their own spread. Figures that are not finite, not positive or from too few requests are
  ignored.
- **Precision.** A model may run in fp32 or int8 (issue 30); the gain differs by CPU (x86 with VNNI,
  Cortex-A72 without dot-product, A76 with it), so each (class, precision) keeps its own ratios and
  scale. Devices report the precision they serve (telemetry) and what each precision took on their own
  clock when they chose (swap reports: `learn`). A class's latency budget counts the precision most of
  its devices serve (`precision_of`): if they serve int8, the int8 scale sets the budget; a precision
  with no observations yet falls back to the class's fp32 scale.
- **Drift.** A device whose p50 stays above its own `max_latency_ms` x (1 + `tolerance`) for
  `sustain_s` (thermal throttling, a busier device) is *re-tailored*: it gets a slowdown factor (its
  p50 / the class prediction for the served model, within [1, MAX_SLOWDOWN]) that divides its latency
  budget from then on, so its next build is smaller. Only that device's budget changes; the trigger
  fires once per served model.
"""

from __future__ import annotations

import logging
import math
import statistics
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgecut.server.errors import ImpossibleBudgetError

logger = logging.getLogger(__name__)

MIN_RATIO, MAX_RATIO = 0.25, 4.0  # a device's measured / predicted, clipped
MAX_STEP = 0.1  # a class's scale moves at most 10 % per observation
MAX_SLOWDOWN = 8.0
MIN_INFERENCES = 20  # a p50 over fewer requests is noise
MAX_DEVICES = 10_000  # ratios kept (oldest forgotten first)
FP32 = "fp32"


@dataclass(frozen=True)
class CostModel:
    ms_per_mmac: float  # a
    fixed_ms: float = 0.0  # b

    def latency_ms(self, macs: float) -> float:
        return self.ms_per_mmac * macs / 1e6 + self.fixed_ms

    def max_macs(self, max_latency_ms: float) -> int:
        """The most MACs that run within `max_latency_ms`; ImpossibleBudgetError when none do."""
        room = max_latency_ms - self.fixed_ms
        macs = int(room / self.ms_per_mmac * 1e6) if room > 0 else 0
        if macs < 1:
            raise ImpossibleBudgetError(
                f"max_latency_ms={max_latency_ms:g} is below this device class's fixed cost per request "
                f"(~{self.fixed_ms:.3g} ms measured); ask for a longer latency"
            )
        return macs

    def scaled(self, k: float) -> CostModel:
        return CostModel(self.ms_per_mmac * k, self.fixed_ms * k)


def fit(points: Iterable[tuple[float, float]]) -> CostModel:
    """Least squares `ms = a x MMACs + b` through (MACs, ms) points, with a > 0 and b >= 0."""
    pts = [(m / 1e6, ms) for m, ms in points if m > 0 and math.isfinite(ms) and ms > 0]
    if len({x for x, _ in pts}) < 2:
        raise ValueError("fitting a cost model needs measurements of at least two different MAC counts")
    mx, my = statistics.fmean(x for x, _ in pts), statistics.fmean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    a = sum((x - mx) * (y - my) for x, y in pts) / sxx
    if a <= 0:  # times that do not grow with MACs (noise): all of it per MMAC, through the origin
        return CostModel(sum(y for _, y in pts) / sum(x for x, _ in pts), 0.0)
    b = my - a * mx
    if b < 0:
        a, b = sum(x * y for x, y in pts) / sum(x * x for x, _ in pts), 0.0
    return CostModel(a, b)


@dataclass
class _Drift:
    artifact_id: str = ""
    since: float | None = None  # first over-budget report for this artifact
    fired: bool = False


class LatencyModels:
    """Per-class cost models (seeded, then corrected from telemetry) and per-device drift."""

    def __init__(
        self,
        throughput: Mapping[str, float],
        reference_class: str = "x86",
        tolerance: float = 0.1,
        sustain_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`throughput`: class -> the budget table's MACs per ms (relative speeds between classes)."""
        self.throughput = dict(throughput)
        self.reference_class = reference_class
        self.tolerance, self.sustain_s, self.clock = tolerance, sustain_s, clock
        self.measured: CostModel | None = None  # this machine's line, once seed() ran
        self._scale: dict[tuple[str, str], float] = {}  # (class, precision) -> scale
        self._ratios: dict[tuple[str, str], OrderedDict[str, float]] = {}
        self._serving: dict[str, OrderedDict[str, str]] = {}  # class -> device -> precision it serves
        self._drift: dict[str, _Drift] = {}
        self._lock = threading.Lock()

    # -- the models ------------------------------------------------------------------------------

    def seed(self, measured: CostModel) -> None:
        with self._lock:
            self.measured = measured
        logger.info(
            "latency model of this machine: %.4g ms per MMAC + %.3g ms",
            measured.ms_per_mmac,
            measured.fixed_ms,
        )

    def base(self, device_class: str, macs_per_ms: float) -> CostModel:
        """The class's model before telemetry: the measured line scaled to the class, or the table."""
        table = CostModel(1e6 / macs_per_ms)
        ref = self.throughput.get(self.reference_class)
        if self.measured is None or not ref:
            return table
        return self.measured.scaled(ref / macs_per_ms)

    def _scale_of(self, device_class: str, precision: str) -> float:
        got = self._scale.get((device_class, precision))
        return got if got is not None else self._scale.get((device_class, FP32), 1.0)

    def model(self, device_class: str, macs_per_ms: float, precision: str = FP32) -> CostModel:
        return self.base(device_class, macs_per_ms).scaled(self._scale_of(device_class, precision))

    def precision_of(self, device_class: str) -> str:
        """The precision most devices of the class serve (fp32 on a tie or when none reported)."""
        votes = Counter(self._serving.get(device_class, {}).values())
        best = max(votes.values(), default=0)
        winners = sorted(p for p, n in votes.items() if n == best)
        return FP32 if not winners or FP32 in winners else winners[0]

    def max_macs(
        self,
        device_class: str,
        macs_per_ms: float,
        max_latency_ms: float,
        slowdown: float = 1.0,
        precision: str | None = None,
    ) -> int:
        """The MACs budget for `max_latency_ms` in `precision` (default: what the class serves)."""
        with self._lock:
            p = precision or self.precision_of(device_class)
            model = self.model(device_class, macs_per_ms, p)
        return model.max_macs(max_latency_ms / max(1.0, slowdown))

    # -- telemetry -------------------------------------------------------------------------------

    def observe(
        self,
        device_id: str,
        device_class: str,
        macs_per_ms: float,
        macs: int,
        p50_ms: float,
        inferences: int,
        artifact_id: str,
        max_latency_ms: float = 0.0,
        precision: str = FP32,
    ) -> float | None:
        """One telemetry report; returns the device's new slowdown factor when it must be re-tailored.

        `precision`: what served the reported requests ("" from an older agent = fp32).
        """
        if not (math.isfinite(p50_ms) and p50_ms > 0 and macs > 0 and inferences >= MIN_INFERENCES):
            return None
        precision = precision or FP32
        with self._lock:
            serving = self._serving.setdefault(device_class, OrderedDict())
            serving[device_id] = precision
            serving.move_to_end(device_id)
            while len(serving) > MAX_DEVICES:
                serving.popitem(last=False)
            predicted = self._learn(device_id, device_class, macs_per_ms, macs, p50_ms, precision)
            return self._check_drift(device_id, artifact_id, p50_ms, predicted, max_latency_ms)

    def learn(
        self,
        device_id: str,
        device_class: str,
        macs_per_ms: float,
        macs: int,
        ms: float,
        runs: int,
        precision: str,
    ) -> None:
        """One precision's time as the device measured it when it chose (a swap report's timing): it
        moves that precision's scale like telemetry does, but says nothing about drift or what serves."""
        if not (math.isfinite(ms) and ms > 0 and macs > 0 and runs >= MIN_INFERENCES and precision):
            return
        with self._lock:
            self._learn(device_id, device_class, macs_per_ms, macs, ms, precision)

    def _learn(
        self, device_id: str, device_class: str, macs_per_ms: float, macs: int, ms: float, precision: str
    ) -> float:
        """Record the device's clipped ratio for (class, precision), step the scale; the prediction."""
        key = (device_class, precision)
        scale = self._scale_of(device_class, precision)
        predicted = self.model(device_class, macs_per_ms, precision).latency_ms(macs)
        ratio = min(MAX_RATIO, max(MIN_RATIO, ms / predicted * scale))
        ratios = self._ratios.setdefault(key, OrderedDict())
        ratios[device_id] = ratio
        ratios.move_to_end(device_id)
        while len(ratios) > MAX_DEVICES:
            ratios.popitem(last=False)
        target = statistics.median(ratios.values())
        self._scale[key] = min(scale * (1 + MAX_STEP), max(scale / (1 + MAX_STEP), target))
        return predicted

    def _check_drift(
        self, device_id: str, artifact_id: str, p50_ms: float, predicted: float, budget_ms: float
    ) -> float | None:
        d = self._drift.setdefault(device_id, _Drift())
        if d.artifact_id != artifact_id:  # a new model: its own record
            d.artifact_id, d.since, d.fired = artifact_id, None, False
        if budget_ms <= 0 or d.fired or p50_ms <= budget_ms * (1 + self.tolerance):
            d.since = None
            return None
        now = self.clock()
        if d.since is None:
            d.since = now
        if now - d.since < self.sustain_s:
            return None
        d.fired = True
        return min(MAX_SLOWDOWN, max(1.0, p50_ms / predicted))

    def observed(self, device_class: str) -> dict[str, int]:
        """Precision -> how many devices of the class its correction has learnt from."""
        with self._lock:
            return {p: len(r) for (c, p), r in self._ratios.items() if c == device_class and r}

    def scale(self, device_class: str, precision: str = FP32) -> float:
        with self._lock:
            return self._scale_of(device_class, precision)


# -- measuring this machine ------------------------------------------------------------------------


def conv_stack(path: Path, width: int, layers: int, size: int = 64) -> int:
    """Write an ONNX chain of 3x3 convolutions (input "image", 3 channels); returns its MACs."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(width * 100 + layers)
    nodes, inits, x, cin, macs = [], [], "image", 3, 0
    for i in range(layers):
        w = rng.normal(scale=0.1, size=(width, cin, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        macs += size * size * width * cin * 9
        x, cin = f"r{i}", width
    graph = helper.make_graph(
        nodes,
        "latency_probe",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, width, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return macs


PROBES = ((8, 2), (16, 3), (32, 4))  # (width, layers): ~1.5 to ~30 MMACs at 64 x 64


def measure_here(
    artifacts: Iterable[tuple[Path, int, int]] = (), runs: int = 20, threads: int = 1
) -> tuple[CostModel, list[tuple[int, float]]]:
    """Time the probe models (and `artifacts`: (path, input size, MACs)) with onnxruntime here."""
    from edgecut.server.ort_latency import onnx_latency_ms

    points: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="edgecut-latency-") as d:
        for width, layers in PROBES:
            path = Path(d) / f"probe-{width}x{layers}.onnx"
            macs = conv_stack(path, width, layers)
            points.append((macs, onnx_latency_ms(path, 64, runs, warmup=3, threads=threads)))
    for path, size, macs in artifacts:
        try:
            points.append((macs, onnx_latency_ms(path, size, runs, warmup=3, threads=threads)))
        except Exception as exc:  # an artifact this onnxruntime cannot run says nothing about speed
            logger.info("not timing %s: %s", path.name, exc)
    return fit(points), points
