"""The torch tailoring engine behind the fleet service: implements `spec.Engine`.

It holds the pre-trained base model, unlabelled calibration images (for scoring and distillation)
and labelled validation scenes (only to report each artifact's quality against the original).
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
from edgecut.server.cut.export import export_onnx, input_spec, output_specs
from edgecut.server.cut.prune import Size, measure, size_target, smallest
from edgecut.server.cut.recover import RecoveryOptions
from edgecut.server.cut.tailor import TailorOptions, tailor
from edgecut.server.errors import ImpossibleBudgetError, UnknownTaskError
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.contract import MultiTaskModel, check_contract
from edgecut.server.mtl.data import Batch, synthetic_scenes
from edgecut.server.mtl.evaluate import Metrics, evaluate
from edgecut.server.paths import scenes_cache
from edgecut.server.spec import PIPELINE_VERSION, BuildSpec, BuiltArtifact, ProgressFn

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
        self._smallest: dict[tuple[str, ...], tuple[Size, Size]] = {}
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

    def reference_metrics(self) -> Metrics:
        if self._reference is None and self.val is not None:
            self._reference = evaluate(self.base, self.base.task_specs, self.val)
        return self._reference or {}

    def validate(self, spec: BuildSpec) -> None:
        unknown = [t for t in spec.tasks if t not in self.tasks]
        if unknown:
            raise UnknownTaskError(f"unknown task {unknown[0]!r}: this model knows {', '.join(self.tasks)}")
        with self._probe_lock:
            if spec.tasks not in self._smallest:
                selected = self._probe.select(list(spec.tasks))
                self._smallest[spec.tasks] = (measure(selected, selected.input_size), smallest(selected))
        selected_size, least = self._smallest[spec.tasks]
        target = size_target(spec.budget.bucketed(), selected_size)
        if not target.met(least):
            raise ImpossibleBudgetError(
                f"budget {spec.budget.bucket()} is below what tasks {', '.join(spec.tasks)} can reach: the smallest "
                f"model keeps {least.macs / selected_size.macs:.2%} of the MACs and "
                f"{least.params / selected_size.params:.2%} of the params; ask for at least that"
            )

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
            metrics = evaluate(model, model.task_specs, self.val) if self.val is not None else {}
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
) -> TorchEngine:
    """The engine for a trained checkpoint; calibration images are synthetic scenes unless a folder is given."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = checkpoint.load(checkpoint_path)
    cache = scenes_cache(state_dir)
    if calib_data in (None, "", "synthetic"):
        calib: Dataset[Batch] = synthetic_scenes(
            n_calib, CALIB_SEED, base.input_size, cache, show_progress=False
        )
    else:
        from edgecut.server.mtl.folder import FolderDataset

        calib = FolderDataset(Path(calib_data), size=base.input_size)
    val = synthetic_scenes(n_val, VAL_SEED, base.input_size, cache, show_progress=False)
    recovery = DEFAULT_RECOVERY if recovery_steps is None else replace(DEFAULT_RECOVERY, steps=recovery_steps)
    return TorchEngine(
        base,
        checkpoint.file_id(checkpoint_path),
        calib,
        val,
        state_dir,
        TailorOptions(recovery=recovery if recovery.steps > 0 else None),
    )
