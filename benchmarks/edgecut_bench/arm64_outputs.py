"""bench arm64's output check: the served model in fp32 and in static INT8, run in the aarch64 root and
on this host on the same rendered scenes, must give the same answers.

One script (OUTPUTS_SCRIPT) runs both files with onnxruntime's CPU provider, one thread, on both sides.
Two measures per precision and task:
- max |arm64 - x86| over every output element, and the largest fp32 output, for the record;
- the task's metrics (the project's own TaskMeter on the scenes' labels) on arm64 against x86, as a
  change in points of the task's Δm share: it must stay within TASK_TOLERANCE_POINTS, the INT8 per-task
  check's default threshold (issue 30), for fp32 and INT8 alike.
Element-wise, fp32 must also stay within FP32_TOLERANCE, the exporter's torch-vs-onnxruntime check. INT8
cannot: onnxruntime's x86 (AVX2/AVX-512) and Arm (NEON) integer kernels round their requantisation
differently, so single elements differ by a step or two of the output's quantisation scale; the answers
(classes, depths) are what must agree, hence the task-level tolerance.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecut.errors import ConfigError
from edgecut.model_meta import ModelMeta

if TYPE_CHECKING:
    import torch

    from edgecut.server.mtl.tasks import TaskSpec

FP32_TOLERANCE = 1e-4  # |torch - onnxruntime| the exporter accepts (edgecut/server/cut/export.py's check)
TASK_TOLERANCE_POINTS = 0.5  # the INT8 per-task check's default threshold, in points of a task's change
CALIBRATION_SCENES = 64
CHECK_SCENES = 32
WORK = "tmp/edgecut-outputs"  # inside the root

# Run in the root by its Python and here by ours: argv = images.npy out.npz model.onnx...
OUTPUTS_SCRIPT = """\
import sys
import numpy as np
import onnxruntime as ort

images = np.load(sys.argv[1])
out = {}
for i, path in enumerate(sys.argv[3:]):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for name, value in zip(names, session.run(names, {"image": images})):
        out[f"{i}/{name}"] = value
np.savez(sys.argv[2], **out)
"""

# (root, command...) -> its stdout: the chroot under qemu in the bench, the host in its tests
RunInRoot = Callable[..., str]


@dataclass(frozen=True)
class OutputMatch:
    precision: str  # fp32 | int8
    model_bytes: int
    max_abs: dict[str, float]  # task -> max |arm64 - x86| over the check scenes' outputs
    scale: dict[str, float]  # task -> max |x86 output|, for reading max_abs
    task_points: dict[str, float]  # task -> arm64's change against x86, in points (negative = worse)

    def failures(self) -> list[str]:
        bad = [
            f"{self.precision} {t}: {p:+.3f} points (tolerance {TASK_TOLERANCE_POINTS})"
            for t, p in self.task_points.items()
            if abs(p) > TASK_TOLERANCE_POINTS
        ]
        if self.precision == "fp32":
            bad += [
                f"fp32 {t}: max |arm64 - x86| {d:.2g} (tolerance {FP32_TOLERANCE:g})"
                for t, d in self.max_abs.items()
                if d > FP32_TOLERANCE
            ]
        return bad


def quantise_static(src: Path, dst: Path, images: np.ndarray) -> None:
    """Static INT8 as the issue's user would make it: quant_pre_process, QDQ, per-channel weights,
    activations calibrated on `images`. onnxruntime's own API, called directly: the engine's
    cut/quantise.py (branch quant) was not merged when this bench was written."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Scenes(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{"image": images[i : i + 1]} for i in range(len(images))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(dst), Scenes(), quant_format=QuantFormat.QDQ, per_channel=True)
    except Exception as exc:  # onnxruntime's quantiser raises many types
        raise ConfigError(f"static INT8 quantisation of {src.name} failed: {exc}") from exc
    finally:
        pre.unlink(missing_ok=True)


def check(root: Path, model: Path, tasks: list[str], run_in_root: RunInRoot) -> list[OutputMatch]:
    """Quantise `model` (a file inside `root`), run both precisions on both sides, compare; raises
    ConfigError naming every task out of tolerance."""
    import torch

    from edgecut.server.mtl.data import synthetic_scenes
    from edgecut.server.mtl.tasks import SCENE_TASKS, by_name

    from .arm64 import _say

    meta = _meta(model)
    size = int(meta.input.shape[2] or 64)
    work = root / WORK
    work.mkdir(parents=True, exist_ok=True)
    calib = synthetic_scenes(CALIBRATION_SCENES, seed=1, size=size, show_progress=False)
    scenes = synthetic_scenes(CHECK_SCENES, seed=2, size=size, show_progress=False)
    files = {"fp32": work / "model.fp32.onnx", "int8": work / "model.int8.onnx"}
    files["fp32"].write_bytes(model.read_bytes())
    _say("quantising the served model to static INT8 (QDQ, per-channel) on the host")
    quantise_static(files["fp32"], files["int8"], _images(calib.tensors["image"], meta))
    np.save(work / "images.npy", _images(scenes.tensors["image"], meta))
    (work / "outputs.py").write_text(OUTPUTS_SCRIPT)
    inside = [f"/{WORK}/{name}" for name in ("outputs.py", "images.npy", "arm64.npz")]
    _say(f"running fp32 and INT8 on {CHECK_SCENES} scenes in the arm64 root and on this host")
    run_in_root(root, "python", *inside, *(f"/{WORK}/{f.name}" for f in files.values()))
    subprocess.run(
        [sys.executable, str(work / "outputs.py"), str(work / "images.npy"), str(work / "x86.npz")]
        + [str(f) for f in files.values()],
        check=True,
        capture_output=True,
    )
    arm, x86 = np.load(work / "arm64.npz"), np.load(work / "x86.npz")
    specs = by_name(SCENE_TASKS)
    matches = []
    for i, (precision, path) in enumerate(files.items()):
        outs = {
            side: {t: torch.from_numpy(d[f"{i}/{t}"]) for t in tasks}
            for side, d in (("arm", arm), ("x86", x86))
        }
        matches.append(
            OutputMatch(
                precision,
                path.stat().st_size,
                {t: float((outs["arm"][t] - outs["x86"][t]).abs().max()) for t in tasks},
                {t: float(outs["x86"][t].abs().max()) for t in tasks},
                {t: _points(specs[t], outs["arm"][t], outs["x86"][t], scenes.tensors[t]) for t in tasks},
            )
        )
    bad = [line for m in matches for line in m.failures()]
    if bad:
        raise ConfigError("the arm64 outputs do not match this host's: " + "; ".join(bad))
    return matches


def _points(spec: TaskSpec, arm: torch.Tensor, x86: torch.Tensor, target: torch.Tensor) -> float:
    """arm64's change against x86 in points of the task's Δm share (the metrics Δm uses, averaged)."""
    from edgecut.server.mtl.metric_names import DELTA_M_METRICS, task_change
    from edgecut.server.mtl.metrics import TaskMeter

    results = []
    for pred in (arm, x86):
        meter = TaskMeter(spec)
        meter.update(pred, target)
        results.append(meter.result())
    change = task_change(results[0], results[1], DELTA_M_METRICS[spec.kind])
    return 100.0 * (change or 0.0)


def _images(uint8: torch.Tensor, meta: ModelMeta) -> np.ndarray:
    """Rendered scenes as the model takes them: float32 in its input's value range."""
    lo, hi = meta.input.value_range
    return (lo + uint8.numpy().astype(np.float32) / 255.0 * (hi - lo)).astype(np.float32)


def _meta(model: Path) -> ModelMeta:
    import onnx

    from edgecut.model_meta import ONNX_METADATA_KEY

    for entry in onnx.load(str(model), load_external_data=False).metadata_props:
        if entry.key == ONNX_METADATA_KEY:
            return ModelMeta.from_json(entry.value)
    raise ConfigError(f"{model} has no {ONNX_METADATA_KEY!r} metadata: not a model the fleet served")
