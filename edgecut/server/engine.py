"""The torch tailoring engine behind the fleet service: implements `spec.Engine`.

It holds the pre-trained base model, unlabelled calibration images (for scoring and distillation)
and labelled validation samples (only to report each artifact's quality against the original), each
synthetic scenes or a folder (mtl/sources.py).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from edgecut.model_meta import ModelMeta
from edgecut.server.cut.decompose import decompose
from edgecut.server.cut.export import export_onnx, input_spec, output_specs
from edgecut.server.cut.prune import Size, floor_model, impossible, measure, size_target
from edgecut.server.cut.recover import RecoveryOptions
from edgecut.server.cut.tailor import TailorOptions, tailor
from edgecut.server.errors import UnknownTaskError
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.contract import MultiTaskModel, check_contract, check_outputs
from edgecut.server.mtl.data import Batch
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.mtl.sources import engine_data, labelled_tasks
from edgecut.server.paths import scenes_cache
from edgecut.server.spec import PIPELINE_VERSION, BuildSpec, BuiltArtifact, ProgressFn, Refinement

logger = logging.getLogger(__name__)

DEFAULT_RECOVERY = RecoveryOptions(steps=200, seconds=60.0)
CALIB_SEED, VAL_SEED = 7, 1000


class TorchEngine:
    def __init__(
        self,
        base: MultiTaskModel,
        base_id: str,
        calib: Dataset[Batch],
        val: Dataset[Batch] | None,
        work_dir: Path,
        options: TailorOptions | None = None,
    ) -> None:
        self.base = check_contract(base).eval()
        self._base_id = base_id
        self.calib = calib
        self.val = val
        self.work_dir = work_dir
        self.options = options or TailorOptions(recovery=DEFAULT_RECOVERY)
        self.full_size = measure(self.base, self.base.input_size)
        self._reference: Metrics | None = None
        self._val_tasks = labelled_tasks(val) if val is not None else set()
        self._floors: dict[tuple[str, ...], tuple[Size, MultiTaskModel, Size]] = {}
        self._lock = threading.Lock()  # torch modules are not shared safely across build threads
        # validate() runs on the MQTT and gRPC threads: it uses its own copy of the base under its own
        # lock, so a request never waits for a running build (that blocked the MQTT bridge's network
        # loop for a whole build: no keepalive, no messages, no clean stop)
        self._probe = copy.deepcopy(self.base)
        self._probe_lock = threading.Lock()

    @property
    def base_model_id(self) -> str:
        return self._base_id

    @property
    def tasks(self) -> list[str]:
        return self.base.task_names

    def _evaluate(self, model: MultiTaskModel) -> Metrics:
        """Metrics of the tasks the validation data labels (none without validation data)."""
        specs = {t: s for t, s in model.task_specs.items() if t in self._val_tasks}
        return evaluate(model, specs, self.val) if self.val is not None and specs else {}

    def reference_metrics(self) -> Metrics:
        if self._reference is None:
            self._reference = self._evaluate(self.base)
        return self._reference

    def validate(self, spec: BuildSpec) -> None:
        unknown = [t for t in spec.tasks if t not in self.tasks]
        if unknown:
            raise UnknownTaskError(f"unknown task {unknown[0]!r}: this model knows {', '.join(self.tasks)}")
        with self._probe_lock:
            if spec.tasks not in self._floors:
                selected = decompose(self._probe, list(spec.tasks))
                floor = floor_model(selected)
                self._floors[spec.tasks] = (
                    measure(selected, selected.input_size),
                    floor,
                    measure(floor, floor.input_size),
                )
            selected_size, floor, least = self._floors[spec.tasks]
            target = size_target(spec.budget.bucketed(), selected_size)
            if not target.met(least):
                raise impossible(spec.budget.bucket(), selected_size, floor, target)

    def build(self, spec: BuildSpec, progress: ProgressFn) -> BuiltArtifact:
        self.validate(spec)
        opts = self.options if spec.recover else replace(self.options, recovery=None)
        with self._lock:
            t0 = time.perf_counter()
            report = tailor(
                self.base,
                list(spec.tasks),
                spec.budget.bucketed(),
                self.calib,
                opts,
                dict(spec.priorities),
                progress,
            )
            progress("exporting", 0.92, "evaluating and exporting ONNX")
            model = report.model
            metrics = self._evaluate(model)
            reference = {t: v for t, v in self.reference_metrics().items() if t in spec.tasks}
            meta = ModelMeta(
                base_model=self._base_id,
                tasks=list(spec.tasks),
                input=input_spec(model),
                outputs=output_specs(model),
                params=report.pruned.params,
                macs=report.pruned.macs,
                full_params=self.full_size.params,
                full_macs=self.full_size.macs,
                metrics=metrics,
                reference_metrics=reference,
                build_key=spec.build_key(self._base_id),
                method=f"{opts.criterion}+{opts.fusion}/{opts.target}",
                pipeline_version=PIPELINE_VERSION,
                created_unix=time.time(),
            )
            out_dir = Path(tempfile.mkdtemp(prefix="build-", dir=self._tmp_dir()))
            path = out_dir / "model.onnx"
            meta.onnx_max_abs_diff = export_onnx(model, meta, path)
            seconds = time.perf_counter() - t0
        return BuiltArtifact(
            path,
            meta,
            {"seconds": seconds, **{f"{k}_s": v for k, v in report.seconds.items()}},
            scratch=out_dir,
        )

    def refinements(self, spec: BuildSpec) -> int:
        return 0  # progressive refinement is not enabled for this engine yet (issue 20)

    def refine(self, spec: BuildSpec, parent: Refinement, progress: ProgressFn) -> BuiltArtifact | None:
        return None

    def _tmp_dir(self) -> Path:
        d = self.work_dir / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d


def load_engine(
    checkpoint_path: Path,
    state_dir: Path,
    calib_data: str | None = None,
    n_calib: int = 512,
    n_val: int = 256,
    recovery_steps: int | None = None,
    val_data: str | None = None,
    model: str | None = None,
    image_scale: float | None = None,
) -> TorchEngine:
    """The engine for a trained checkpoint (built as `model` when given, else as the class it records).

    Calibration images are synthetic scenes unless a folder is given; validation as in
    sources.engine_data.
    """
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = check_outputs(checkpoint.load(checkpoint_path, model))
    calib, val = engine_data(
        list(base.task_specs.values()),
        base.input_size,
        calib_data,
        val_data,
        scenes_cache(state_dir),
        n_calib,
        n_val,
        CALIB_SEED,
        VAL_SEED,
        image_scale,
    )
    recovery = DEFAULT_RECOVERY if recovery_steps is None else replace(DEFAULT_RECOVERY, steps=recovery_steps)
    return TorchEngine(
        base,
        checkpoint.file_id(checkpoint_path),
        calib,
        val,
        state_dir,
        TailorOptions(recovery=recovery if recovery.steps > 0 else None),
    )
