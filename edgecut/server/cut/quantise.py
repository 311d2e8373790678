"""Static INT8 of an exported model with onnxruntime's own tools, checked task by task against fp32.

    images = calibration_images(calib_dataset, n=128, seed=0)      # float32 N x 3 x H x W
    q = quantise(Path("m.onnx"), Path("m.int8.onnx"), images)       # one static quantisation
    outcome = quantise_checked(Path("m.onnx"), Path("m.int8.onnx"), images, specs, val)

`quantise` runs `quant_pre_process` (shape inference + graph optimisation), then `quantize_static`
(QDQ, per-channel QInt8 weights, activation ranges from the 99.999th percentiles on `images`, or from
their extremes: `CALIBRATIONS`); operators onnxruntime cannot quantise stay fp32 and one log line names
their types. `quantise_checked` evaluates the INT8 and the fp32 file on the validation samples with the
project's metrics; where a task loses more than `threshold` points against fp32, that task's last
weighted layer is kept fp32 first (its output's quantisation is what a regression head such as surface
normals loses most to), then the nodes whose INT8 error is largest (measured layer by layer,
onnxruntime.quantization.qdq_loss_debug), a few at a time, until every task passes (mixed precision) or
`max_excluded` is reached; then the same again with the other activation ranges, and if neither passes
the answer is fp32 with the reason.
Nothing here raises for a model that cannot be quantised: the outcome says fp32 and why.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    calibrate,
    quantize_static,
)
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_signal_to_quantization_noice_ratio,
    modify_model_output_intermediate_tensors,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch.utils.data import Dataset, Subset

from edgecut.server.cut.balance import task_changes
from edgecut.server.mtl.data import Batch, batches
from edgecut.server.mtl.evaluate import Metrics, evaluate_onnx
from edgecut.server.mtl.tasks import TaskSpec

logger = logging.getLogger(__name__)

# Activations QUInt8, weights QInt8 (onnxruntime's U8S8 kernels): measured on the packaged reference,
# seg+depth at 64 px, this 2-core x86 machine, 1 thread, timed in turns: fp32 1.79 ms, QUInt8
# activations 0.60 ms, QInt8 activations 1.48 ms; both lose 0.17 % Δm against fp32 on 256 scenes.
ACTIVATIONS = QuantType.QUInt8
WEIGHTS = QuantType.QInt8


@dataclass(frozen=True)
class Calibration:
    """How activation ranges are found: an onnxruntime calibration method and its options."""

    name: str
    method: CalibrationMethod
    options: tuple[tuple[str, float], ...] = ()


# The 0.0005 % tails cut on each side (a histogram, onnxruntime's Percentile calibration), where with the
# extremes (MinMax) a rare large activation stretches the range and costs every ordinary value its
# precision. Measured on a tailored seg+depth+normals model (macs 0.5, 1100 recovery steps), three draws
# of 128 images, each task's change against fp32 in points: depth -0.48/-0.35/-0.37 with MinMax (over the
# 0.5-point check: 11 nodes kept fp32 still failed it) and +0.01/-0.09/+0.08 with the percentile; seg
# the same; normals -6.8 either way (its last layer, kept fp32 first, is what fixes it). It costs ~1 s
# and ~250 MB more per calibration at 64 px. Where large activations are rare but matter (a pruned model
# before any recovery: depth -0.51 against MinMax's pass), cutting them loses: when the percentile's
# model fails the check even with layers kept fp32, `quantise_checked` tries MinMax the same way.
PERCENTILE = Calibration("percentile", CalibrationMethod.Percentile, (("CalibPercentile", 99.999),))
MINMAX = Calibration("minmax", CalibrationMethod.MinMax)
CALIBRATIONS = (PERCENTILE, MINMAX)
# onnxruntime's histogram calibration print()s its progress to stdout, which would land in the middle of
# a CLI's or the demo's output; its module's own `print` is shadowed (not sys.stdout swapped: builds run
# on worker threads beside others that print)
calibrate.print = lambda *args, **kwargs: None
# operators that only move or shape data: never worth naming as "left in fp32"
_PLUMBING = frozenset(
    {
        "Shape",
        "Constant",
        "ConstantOfShape",
        "Gather",
        "Unsqueeze",
        "Squeeze",
        "Cast",
        "Range",
        "Equal",
        "Where",
        "Expand",
        "Identity",
        "QuantizeLinear",
        "DequantizeLinear",
    }
)
ProgressFn = Callable[[str], None]
_MAX_SNR = 100.0  # dB: a tensor equal in both models
# activations the QDQ quantiser folds into the quantisation of their input: keeping one fp32 changes nothing
_FUSED = frozenset({"Relu", "Clip"})


@dataclass(frozen=True)
class QuantOptions:
    """How `quantise_checked` quantises and checks; the defaults are what the engine uses."""

    calib_images: int = 128  # calibration images (a seeded draw when the build has more)
    seed: int = 0
    threshold: float = 0.5  # points a kept task may lose against its fp32 twin
    step: int = 1  # layers kept fp32 per retry (each with the producers of its inputs)
    max_excluded: int = 12  # nodes kept fp32 at most; then the answer is fp32
    probe_images: int = 8  # images of the layer-by-layer error measurement


class QuantisationFailed(Exception):
    """onnxruntime could not quantise the model; the message is one sentence for people."""


@dataclass
class Quantised:
    """One static quantisation: the INT8 file, what stayed fp32 and how long it took."""

    path: Path
    float_ops: list[str]  # operator types onnxruntime left in fp32 (not counting excluded nodes)
    quantised_nodes: int  # nodes that run on quantised inputs
    seconds: float


@dataclass
class Outcome:
    """What `quantise_checked` decided: int8 (the file at `path`) or fp32 (and `note` says why)."""

    precision: Literal["int8", "fp32"]
    path: Path | None  # the INT8 file when precision is int8
    metrics: Metrics  # the INT8 model's metrics on the validation samples (empty when none ran)
    fp32_metrics: Metrics
    changes: dict[str, float]  # each task's change against fp32, in points (%) of its metrics
    excluded_nodes: list[str] = field(default_factory=list)
    float_ops: list[str] = field(default_factory=list)  # types onnxruntime left fp32 (logged once)
    size_bytes: int = 0
    seconds: float = 0.0
    tries: int = 0
    note: str = ""


class _Images(CalibrationDataReader):
    """onnxruntime's calibration reader over a float32 NCHW array, a few images per run."""

    def __init__(self, images: np.ndarray, batch: int = 16, name: str = "image") -> None:
        self.images, self.batch, self.name, self.at = images, batch, name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.at >= len(self.images):
            return None
        chunk = self.images[self.at : self.at + self.batch]
        self.at += self.batch
        return {self.name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self) -> None:
        self.at = 0

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch)


def calibration_images(data: Dataset[Batch], n: int = 128, seed: int = 0) -> np.ndarray:
    """`n` images of `data` as float32 N x 3 x H x W in [0, 1]; `seed` picks which when it holds more."""
    total = len(data)  # type: ignore[arg-type]
    if total == 0:
        raise QuantisationFailed("no calibration images to quantise with")
    idx = (
        sorted(np.random.default_rng(seed).choice(total, n, replace=False).tolist())
        if total > n
        else list(range(total))
    )
    return np.concatenate([b["image"].numpy() for b in batches(Subset(data, idx), 64)]).astype(np.float32)


def quantise(
    src: Path,
    dst: Path,
    images: np.ndarray,
    exclude: Sequence[str] = (),
    work: Path | None = None,
    log: bool = True,
    calibration: Calibration = PERCENTILE,
) -> Quantised:
    """Static INT8 (QDQ, per-channel weights) of `src` into `dst`, calibrated on `images`.

    `exclude` names nodes of the pre-processed model to keep fp32; `work` (a folder) keeps the
    pre-processed model and the calibration ranges between calls, so a retry does not calibrate again.
    One log line (unless `log` is False) names the operator types left in fp32.
    Raises QuantisationFailed (one sentence) when onnxruntime cannot quantise the model at all.
    """
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantise-") as tmp:
        folder = work or Path(tmp)
        pre = _pre_processed(src, folder)
        out = folder / "int8.onnx"
        try:
            quantize_static(
                str(pre),
                str(out),
                _Images(images),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=ACTIVATIONS,
                weight_type=WEIGHTS,
                nodes_to_exclude=list(exclude),
                calibrate_method=calibration.method,
                extra_options=dict(calibration.options),
                calibration_cache_path=str(folder / f"ranges-{calibration.name}.json"),
            )
            model = onnx.load(str(out))
            float_ops, quantised = _precision_of_nodes(model, set(exclude))
        except Exception as exc:  # onnxruntime's quantiser and onnx's shape inference raise many types
            raise QuantisationFailed(f"onnxruntime could not quantise the model: {_first_line(exc)}") from exc
        _keep_metadata(onnx.load(str(src), load_external_data=False), model)
        dst.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(dst))
    if log and float_ops:
        logger.info(
            "int8: operator types left in fp32 (onnxruntime does not quantise them): %s", ", ".join(float_ops)
        )
    return Quantised(dst, float_ops, quantised, time.perf_counter() - t0)


def _pre_processed(src: Path, folder: Path) -> Path:
    """`quant_pre_process`'s output in `folder` (made once per folder). Its symbolic shape inference
    fails on some attention models (an AssertionError on the gallery's MobileViT): then without it
    (ONNX's own shape inference still runs), and the model as it is when that fails too."""
    pre = folder / "pre.onnx"
    if pre.exists():
        return pre
    try:
        quant_pre_process(str(src), str(pre))
        return pre
    except Exception as exc:  # symbolic shape inference raises many types
        why = _first_line(exc)
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        logger.info("int8: pre-processed without symbolic shape inference (%s)", why)
    except Exception as exc:
        logger.info("int8: quantising without pre-processing (%s; %s)", why, _first_line(exc))
        pre.write_bytes(src.read_bytes())
    return pre


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _keep_metadata(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    """The source's metadata_props on the quantised model (the edgecut key the agent reads)."""
    have = {p.key for p in dst.metadata_props}
    for p in src.metadata_props:
        if p.key not in have:
            dst.metadata_props.add(key=p.key, value=p.value)
    dst.doc_string = src.doc_string


def _precision_of_nodes(model: onnx.ModelProto, excluded: set[str]) -> tuple[list[str], int]:
    """(types of the operators that compute on float activations though not excluded, the number of
    nodes that run on quantised inputs); shape arithmetic (integer tensors) is not counted."""
    g = onnx.shape_inference.infer_shapes(model).graph
    floats = _float_tensors(g)
    producer = {o: n.op_type for n in g.node for o in n.output}
    left: set[str] = set()
    quantised = 0
    for node in g.node:
        if node.op_type in _PLUMBING:
            continue
        if any(producer.get(i) == "DequantizeLinear" for i in node.input if i):
            quantised += 1
        elif any(i in floats for i in node.input) and node.name not in excluded:
            left.add(node.op_type)
    return sorted(left), quantised


def _float_tensors(g: onnx.GraphProto) -> set[str]:
    """The float activations of a shape-inferred graph (not its weights, not shape arithmetic)."""
    typed = (*g.value_info, *g.input, *g.output)
    weights = {i.name for i in g.initializer}
    return {v.name for v in typed if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT} - weights


def sensitivity(pre: Path, int8: Path, images: np.ndarray) -> list[str]:
    """Nodes of the pre-processed fp32 model `pre`, the most damaged by quantisation first.

    Both models run on `images`; each tensor's signal-to-noise ratio (dB) compares its INT8 value with
    its fp32 value. A node's damage is how much that ratio drops from its inputs to its output: this
    finds the node that suffers from its own quantised inputs and weights (a layer fed by an
    outlier-ranged activation: the outlier dominates the tensor's ratio, the other channels are lost)
    rather than every node downstream of it.
    """
    acts = []
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        for model in (pre, int8):
            augmented = Path(tmp) / f"{model.stem}.augmented.onnx"
            modify_model_output_intermediate_tensors(str(model), str(augmented))
            acts.append(collect_activations(str(augmented), _Images(images, batch=len(images))))
    fp32, quant = acts

    def snr(tensor: str) -> float | None:
        if tensor not in fp32 or tensor not in quant:
            return None
        return min(_MAX_SNR, compute_signal_to_quantization_noice_ratio(fp32[tensor], quant[tensor]))

    drop: dict[str, float] = {}
    for node in onnx.load(str(pre), load_external_data=False).graph.node:
        outs = [v for v in map(snr, node.output) if v is not None]
        ins = [v for v in map(snr, node.input) if v is not None]
        if outs and ins and node.op_type not in _PLUMBING | _FUSED and min(ins) > min(outs):
            drop[node.name] = min(ins) - min(outs)
    return sorted(drop, key=lambda n: -drop[n])


def _with_inputs(graph: onnx.GraphProto, name: str) -> list[str]:
    """Node `name` and the nodes producing its activation inputs (through Relu/Clip): for a layer hurt by
    its quantised inputs, keeping it fp32 helps only when its producers do not quantise them either."""
    producer = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == name)
    group = [name]
    for tensor in node.input:
        p = producer.get(tensor) if tensor in _float_tensors(graph) else None
        while p is not None and p.op_type not in _PLUMBING:
            group.append(p.name)
            if p.op_type not in _FUSED:
                break
            p = producer.get(p.input[0])
    return group


_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _last_layers(graph: onnx.GraphProto, tasks: Iterable[str]) -> list[str]:
    """Per task (a graph output of that name), the weighted node nearest its output, found by walking back
    through the first input of each node in between (resizes, normalisations, activations)."""
    producer = {o: n for n in graph.node for o in n.output}
    found = []
    for task in tasks:
        node = producer.get(task)
        while node is not None and node.op_type not in _WEIGHTED:
            node = producer.get(node.input[0]) if node.input else None
        if node is not None:
            found.append(node.name)
    return found


def quantise_checked(
    src: Path,
    dst: Path,
    images: np.ndarray,
    specs: Mapping[str, TaskSpec],
    val: Dataset[Batch] | None,
    options: QuantOptions = QuantOptions(),
    progress: ProgressFn | None = None,
    fp32_metrics: Metrics | None = None,
) -> Outcome:
    """Static INT8 of `src` checked task by task against `src` itself on `val` (module docstring).

    `images`: the build's calibration images (`calibration_images`; `options.seed` draws
    `options.calib_images` of them when there are more); `specs`: the tasks to check (those `val`
    labels); `fp32_metrics`: the fp32 file's metrics on `val` when already measured. On int8 the file
    is at `dst`; on fp32 nothing is left there and `note` says why. Never raises for the model's sake.
    """
    t0 = time.perf_counter()
    say = progress or (lambda text: None)
    if len(images) > options.calib_images:
        pick = np.random.default_rng(options.seed).choice(len(images), options.calib_images, replace=False)
        images = images[np.sort(pick)]
    if not specs or val is None:
        return _fp32(dst, t0, "no labelled validation samples to check an int8 model against", {}, [], 0)
    reference = fp32_metrics if fp32_metrics is not None else evaluate_onnx(src, dict(specs), val)
    check = _Check(src, dst, images, specs, val, options, say, reference, t0)
    failed: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="quantise-") as tmp:
        for calibration in CALIBRATIONS:
            out = check.run(calibration, Path(tmp), tries_before=sum(o.tries for o in failed))
            if out.precision == "int8" or not out.changes:  # passed, or failed for no range's sake
                return out
            failed.append(out)
    out = failed[0]
    each = "; ".join(
        f"{c.name} ranges: {_worst(o.changes, options.threshold)} with {len(o.excluded_nodes)} nodes kept fp32"
        for c, o in zip(CALIBRATIONS, failed, strict=True)
    )
    out.note = f"int8 lost more than {options.threshold:g} point against fp32 ({each})"
    out.tries, out.seconds = sum(o.tries for o in failed), time.perf_counter() - t0
    return out


@dataclass
class _Check:
    """One model's int8 check (`quantise_checked`), run once per calibration."""

    src: Path
    dst: Path
    images: np.ndarray
    specs: Mapping[str, TaskSpec]
    val: Dataset[Batch]
    options: QuantOptions
    say: Callable[[str], None]
    reference: Metrics
    t0: float

    def run(self, calibration: Calibration, work: Path, tries_before: int = 0) -> Outcome:
        """Quantise with `calibration`, check, keep layers fp32 until every task passes or the cap; an
        outcome without `changes` failed for a reason no other calibration changes."""
        src, dst, images, specs, val, options, say = (
            self.src, self.dst, self.images, self.specs, self.val, self.options, self.say
        )  # fmt: skip
        reference, t0 = self.reference, self.t0
        kinds = {t: s.kind for t, s in specs.items()}
        excluded: list[str] = []
        ranked: list[str] | None = None
        float_ops: list[str] = []
        for tries in range(1, options.max_excluded + 2):
            attempt = tries_before + tries
            kept = f"{len(excluded)} nodes kept fp32"
            say(f"int8: calibrating ({calibration.name} ranges) and quantising (try {attempt}, {kept})")
            try:
                q = quantise(src, dst, images, excluded, work, log=attempt == 1, calibration=calibration)
            except QuantisationFailed as exc:
                return _fp32(dst, t0, str(exc), reference, [], attempt)
            if tries == 1:  # what onnxruntime leaves fp32 by itself (the log line names them)
                float_ops = q.float_ops
            if q.quantised_nodes == 0:
                why = f"onnxruntime quantises none of its operators ({', '.join(float_ops)})"
                return _fp32(dst, t0, why, reference, float_ops, attempt)
            say(f"int8: checking each task against fp32 on the validation set (try {attempt})")
            try:
                metrics = evaluate_onnx(dst, dict(specs), val)
            except Exception as exc:  # onnxruntime refusing the quantised graph: the model stays fp32
                why = f"onnxruntime could not run the int8 model: {_first_line(exc)}"
                return _fp32(dst, t0, why, reference, float_ops, attempt)
            changes = {t: round(100 * c, 2) for t, c in task_changes(metrics, reference, kinds).items()}
            failing = {t: c for t, c in changes.items() if not c >= -options.threshold}
            if not failing:
                return Outcome(
                    "int8",
                    dst,
                    metrics,
                    reference,
                    changes,
                    list(excluded),
                    float_ops,
                    dst.stat().st_size,
                    time.perf_counter() - t0,
                    attempt,
                    describe(changes, excluded)
                    + ("" if calibration == CALIBRATIONS[0] else f"; {calibration.name} activation ranges"),
                )
            if ranked is None:
                say("int8: measuring each layer's quantisation error")
                try:
                    ranked = sensitivity(
                        work / "pre.onnx", work / "int8.onnx", images[: options.probe_images]
                    )
                except Exception as exc:  # the layer-by-layer run failed: no mixed precision then
                    logger.info("int8: could not measure each layer's error (%s)", _first_line(exc))
                    ranked = []
                graph = onnx.shape_inference.infer_shapes(onnx.load(str(work / "pre.onnx"))).graph
            more = _next_fp32(graph, failing, ranked, excluded, options.step)
            if not more or len(excluded) + len(more) > options.max_excluded:
                break
            excluded += more
        why = (
            f"int8 lost more than {options.threshold:g} point against fp32 "
            f"({_worst(changes, options.threshold)}) with {len(excluded)} nodes kept fp32"
        )
        out = _fp32(dst, t0, why, reference, float_ops, tries_before + tries)
        out.changes, out.excluded_nodes = changes, excluded
        return out


def _next_fp32(
    graph: onnx.GraphProto, failing: Iterable[str], ranked: list[str], excluded: list[str], step: int
) -> list[str]:
    """The nodes to keep fp32 next. A failing task's last weighted layer first, alone: its output is
    quantised to 256 levels over the whole range of the task's prediction (normals: -6 points; that
    layer alone in fp32: -0.4), while its int8 inputs cost little. A tailored seg+depth+normals model
    (macs 0.5): that layer alone Δm -2.27 % at 1.51x the speed of the full model in int8, with the layer
    feeding it too -2.25 % at 1.37x. Then the producers of its inputs, then the layers the layer-by-layer
    measurement ranks worst, each with the producers of its inputs."""
    tails = _last_layers(graph, failing)
    alone = [n for n in tails if n not in excluded]
    if alone:
        return alone[:step]
    fed = [m for n in tails for m in _with_inputs(graph, n) if m not in excluded]
    layers = [] if fed else [n for n in ranked if n not in excluded][:step]
    return list(
        dict.fromkeys(fed or [m for n in layers for m in _with_inputs(graph, n) if m not in excluded])
    )


def _worst(changes: Mapping[str, float], threshold: float) -> str:
    """The tasks that failed the check, with their change in points."""
    return ", ".join(f"{t} {c:+.2f}" for t, c in sorted(changes.items()) if not c >= -threshold)


def _fp32(dst: Path, t0: float, note: str, reference: Metrics, float_ops: list[str], tries: int) -> Outcome:
    logger.info("int8 not kept, the model stays fp32: %s", note)
    dst.unlink(missing_ok=True)
    return Outcome("fp32", None, {}, reference, {}, [], float_ops, 0, time.perf_counter() - t0, tries, note)


def describe(changes: Mapping[str, float], excluded: Iterable[str]) -> str:
    """One line for people: each task's change against fp32 and how many nodes stayed fp32."""
    tasks = ", ".join(f"{t} {c:+.2f}" for t, c in sorted(changes.items()))
    kept = len(list(excluded))
    mixed = f"; {kept} nodes kept fp32 (mixed precision)" if kept else ""
    return f"int8 vs fp32: {tasks} points{mixed}"
