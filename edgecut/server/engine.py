"""The torch tailoring engine behind the fleet service: implements `spec.Engine`.

It holds the pre-trained base model, unlabelled calibration images (for scoring and distillation),
labelled validation samples (to report each artifact's quality against the original and to judge
refinements) and, optionally, labelled training samples (mtl/sources.py).

With training samples, the last refinement of a build is a *from-scratch candidate*: the base
architecture uniformly narrowed to the parent's MACs and speed, trained on the labels alone
(cut/scratch.py).
It ships, like any refinement, only when it beats the model the key serves on the validation set beyond
the set's noise (cut/shipping.py: a paired bootstrap over the validation images): the
policy uses tailoring or training from scratch, whichever measures better for that task set and budget
(docs/benchmarks.md, *Quality at budget*, found cases of both). Its architecture differs from its
parent's, so the fleet's staged rollout judges it on canaries before the whole cohort gets it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
from torch.utils.data import Dataset

from edgecut.model_meta import SCRATCH_METHOD, ModelMeta, Precision
from edgecut.norm_stats import INPUT, MEAN, StatsError, layer_names
from edgecut.server.cut.adapt import AdaptOptions
from edgecut.server.cut.adapt import adapt as adapt_model
from edgecut.server.cut.balance import (
    DEFAULT_SHARE,
    leave_no_task_behind,
    left_behind,
    task_changes,
    trade_off,
)
from edgecut.server.cut.decompose import decompose, traced_trunk
from edgecut.server.cut.export import embed_meta, export_onnx, input_spec, output_specs
from edgecut.server.cut.fake_quant import quantisation_aware
from edgecut.server.cut.half import CHECK_IMAGES, to_fp16
from edgecut.server.cut.latency import export_for_timing
from edgecut.server.cut.prune import Size, Target, floor_model, impossible, measure, size_target
from edgecut.server.cut.quantise import QuantOptions, calibration_images, quantise_checked
from edgecut.server.cut.recover import RecoveryOptions, range_images, recover, recovery_extras
from edgecut.server.cut.refine import (
    QUICK_DEADLINE_S,
    QUICK_RECOVERY,
    REFINEMENTS,
    quality,
    restore_student,
    save_student,
    student_path,
)
from edgecut.server.cut.scratch import Narrow, ScratchOptions, narrow_to, narrowable, train_scratch
from edgecut.server.cut.shipping import CONFIDENCE, Verdict, judge
from edgecut.server.cut.statistics import export_statistics_model
from edgecut.server.cut.tailor import TailorOptions, TailorReport, tailor
from edgecut.server.errors import BuildError, ImpossibleBudgetError, ModelContractError, UnknownTaskError
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.calibration import calibration_source
from edgecut.server.mtl.contract import MultiTaskModel, check_contract, check_outputs
from edgecut.server.mtl.data import Batch, TensorSamples, batches
from edgecut.server.mtl.evaluate import Metrics, evaluate, evaluate_onnx
from edgecut.server.mtl.samples import SampleStats, sample_stats
from edgecut.server.mtl.sources import LabelledSource, engine_data, labelled_tasks, training_source
from edgecut.server.mtl.tasks import TaskSpec
from edgecut.server.ort_latency import interleaved_latency_ms
from edgecut.server.paths import scenes_cache
from edgecut.server.spec import (
    MIN_DELTA_M,
    PIPELINE_VERSION,
    AdaptRequest,
    BuildSpec,
    BuiltArtifact,
    ProgressFn,
    Refinement,
    Variant,
)

logger = logging.getLogger(__name__)

DEFAULT_RECOVERY = QUICK_RECOVERY
FINE_STEP = 8  # the width step a build falls back to when steps of ROUND_TO cost a task too much
# ... that is, when the build is below the Δm floor or one task lost at least half of its metric: steps
# of 16 took a 32-wide edges head to 16 at once and the demo's count+edges+seg shipped edges at -100 %,
# its Δm held up by the other tasks
TASK_COLLAPSE = 0.5
CALIB_SEED, VAL_SEED = 7, 1000
TRAIN_SEED, N_TRAIN = 0, 6000  # the reference's own training scenes (mtl/train.TrainConfig)
SPEED_TRIES = 4  # narrowings tried for one as fast as its parent


class TorchEngine:
    def __init__(
        self,
        base: MultiTaskModel,
        base_id: str,
        calib: Dataset[Batch],
        val: Dataset[Batch] | None,
        work_dir: Path,
        options: TailorOptions | None = None,
        refine_schedules: tuple[RecoveryOptions, ...] = REFINEMENTS,
        ship_confidence: float = CONFIDENCE,
        balance_share: float = DEFAULT_SHARE,
        train: LabelledSource | None = None,
        scratch: ScratchOptions | None = None,
        min_delta_m: float = MIN_DELTA_M,
        calibrated_on: str = "the given images",
        quant: QuantOptions | None = QuantOptions(),
    ) -> None:
        self.base = check_contract(base).eval()
        self._base_id = base_id
        self.calib = calib
        self.val = val
        self.work_dir = work_dir
        self.options = options or TailorOptions(recovery=DEFAULT_RECOVERY, deadline_s=QUICK_DEADLINE_S)
        self.refine_schedules = refine_schedules
        # a refinement ships when the one-sided lower bound of its Δm gain at this confidence is above 0
        self.ship_confidence = ship_confidence
        # benchmarks: return a candidate the rule would not ship too (its verdict in extras["shipped"])
        self.judge_only = False
        self.balance_share = balance_share  # a task this far below the full model triggers a rebalance
        self.train = train  # labelled training samples: from-scratch candidates are tried when set
        self.scratch = scratch or ScratchOptions()
        self.min_delta_m = min_delta_m  # a build whose Δm (%) falls below this fails (-inf: no floor)
        self.calibrated_on = calibrated_on  # said to the user: where the calibration images come from
        # every artifact is offered with a static INT8 variant when it passes the per-task check
        # (cut/quantise.py); None = fp32 only
        self.quant = quant
        # and with an FP16 variant (cut/half.py) for devices whose provider runs FP16 (CUDA, TensorRT):
        # off unless the fleet has such devices (on a CPU it gains nothing and costs a conversion per build)
        self.fp16 = False
        self._calib_images: dict[tuple[int, int], np.ndarray] = {}  # (count, seed) -> images
        self.full_size = measure(self.base, self.base.input_size)
        self._reference: Metrics | None = None
        self._val_tasks = labelled_tasks(val) if val is not None else set()
        self._floors: dict[tuple[str, ...], tuple[Size, MultiTaskModel, Size]] = {}
        self._lock = threading.Lock()  # torch modules are not shared safely across build threads
        # validate() runs on the MQTT and gRPC threads: it uses its own copy of the base under its own
        # lock, so a request never waits for a running build (that blocked the MQTT bridge's network
        # loop for a whole build: no keepalive, no messages, no clean stop)
        self._probe = copy.deepcopy(self.base)
        with contextlib.suppress(Exception):  # traced here, before any worker runs a forward pass
            traced_trunk(self.base.trunk)
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

    def ships(
        self,
        candidate: MultiTaskModel,
        current: MultiTaskModel,
        tasks: Sequence[str],
        current_delta_m: float,
        int8: bool = False,
    ) -> Verdict:
        """The engine's shipping rule (cut/shipping.py) for replacing `current` by `candidate` on `tasks`,
        both measured on this engine's validation images (the benches judge other models by it); `int8`:
        both as they compute in int8, as the engine judges a quantisation-aware refinement."""
        reference = {t: v for t, v in self.reference_metrics().items() if t in tasks}
        return judge(
            self._samples(candidate, int8),
            self._samples(current, int8),
            reference,
            current_delta_m,
            self.ship_confidence,
        )

    def _samples(self, model: MultiTaskModel, int8: bool = False) -> dict[str, SampleStats]:
        """Per-image statistics of the tasks the validation data labels (for the shipping test); `int8`:
        as the model computes in int8 (its weights are left rounded)."""
        specs = {t: s for t, s in model.task_specs.items() if t in self._val_tasks}
        if self.val is None or not specs:
            return {}
        if not int8:
            return sample_stats(model, specs, self.val)
        with quantisation_aware(model.eval(), range_images(self.calib)):
            return sample_stats(model, specs, self.val)

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
                floor = floor_model(selected, round_to=1)  # the finest steps tailoring falls back to
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
        key = spec.build_key(self._base_id)
        with self._lock:
            t0 = time.perf_counter()
            reference = {t: v for t, v in self.reference_metrics().items() if t in spec.tasks}
            kinds = {t: self.base.task_specs[t].kind for t in spec.tasks}

            def attempt(weights: dict[str, float]) -> tuple[TailorReport, Metrics]:
                report = tailor(
                    self.base, list(spec.tasks), spec.budget.bucketed(), self.calib, opts, weights, progress
                )
                progress("exporting", 0.9, "evaluating on the validation set")
                return report, self._evaluate(report.model)

            # A rebalanced rebuild doubles the build; when refinements follow, the quick model ships at
            # once (its lag is mostly too little recovery, which the refinements give) and the trade-off
            # is judged on what they ship. Only a build that stays final is rebuilt.
            balanced = leave_no_task_behind(
                attempt,
                lambda built: task_changes(built[1], reference, kinds),
                dict(spec.priorities),
                self.balance_share,
                rebuild=not self.refinements(spec),
            )
            if balanced.rebuilt:
                logger.info("build %s: rebalanced the fusion to %s", key[:12], balanced.weights)
            report, metrics = balanced.build
            changes = balanced.changes
            collapsed = left_behind(changes, TASK_COLLAPSE)
            fallback = ""
            if opts.round_to > FINE_STEP and (collapsed or not self._above_floor(spec, metrics, reference)):
                # steps of 16 can take half of a narrow head at once (32 -> 16 channels): such a build is
                # pruned again in steps of 8 before it is refused or ships a task that barely works
                why = f"{', '.join(collapsed)} lost half or more" if collapsed else "below the quality floor"
                fallback = f"pruned again in steps of {FINE_STEP}: {why} in steps of {opts.round_to}"
                logger.info("build %s: %s", key[:12], fallback)
                opts = replace(opts, round_to=FINE_STEP)
                report, metrics = attempt(balanced.weights)
                changes = task_changes(metrics, reference, kinds)
            self._check_floor(spec, metrics, reference, changes)
            progress("exporting", 0.92, "exporting ONNX")
            if self.refinements(spec):
                save_student(student_path(self.work_dir, key, 0), report.model)
            meta = self._meta(spec, report.model, report.pruned, metrics, opts.method_name())
            meta.recovery_steps = report.recovery.steps if report.recovery else 0
            meta.task_changes = {t: round(100 * c, 2) for t, c in changes.items()}
            meta.fusion_weights = {t: balanced.weights.get(t, 1.0) for t in spec.tasks}
            # the shipped build's trade-off (after a fallback, not the dropped build's)
            meta.trade_off = trade_off(changes, self.balance_share)
            extras = {f"{k}_s": v for k, v in report.seconds.items()}
            notes = [fallback] if fallback else []  # why this model's widths come in finer steps
            if report.recovery is not None:
                extras.update(recovery_extras(report.recovery))
                notes.append(
                    report.recovery.describe("quick recovery" if self.refinements(spec) else "recovery")
                )
                if report.recovery.cut_short:
                    logger.warning("build %s: %s", key[:12], notes[-1])
            built = self._export(report.model, meta, extras, t0, balanced.rebuilt, progress)
            built.notes = notes + built.notes
            return built

    def _above_floor(self, spec: BuildSpec, metrics: Metrics, reference: Metrics) -> bool:
        return self._below_floor(spec, metrics, reference) is None

    def _below_floor(self, spec: BuildSpec, metrics: Metrics, reference: Metrics) -> float | None:
        """The build's Δm when it is below `min_delta_m`, else None."""
        dm = quality(metrics, reference, {t: self.base.task_specs[t] for t in spec.tasks})
        return None if dm is None or dm >= self.min_delta_m else dm

    def _check_floor(
        self, spec: BuildSpec, metrics: Metrics, reference: Metrics, changes: dict[str, float]
    ) -> None:
        """Refuse a build whose Δm on the validation set is below `min_delta_m`, with each task's change."""
        dm = self._below_floor(spec, metrics, reference)
        if dm is None:
            return
        tasks = ", ".join(f"{t} {100 * c:+.1f} %" for t, c in sorted(changes.items()))
        what = (
            f"the tailored model for {', '.join(spec.tasks)} at {spec.budget.bucket()} lost too much: Δm "
            f"{dm:+.1f} % ({tasks}) is below the floor of {self.min_delta_m:+.0f} %"
        )
        advice = "calibrate on images like the model's own, or give a larger budget"
        raise BuildError(
            f"{what}; it was calibrated on {self.calibrated_on}: {advice}",
            public=f"{what}: {advice}",  # devices are not told where the server's images lie
        )

    def refinements(self, spec: BuildSpec) -> int:
        """Refinements follow a recovered build whose tasks the validation data can judge: the
        distillation schedules, then a from-scratch candidate when the training samples label every
        task of the build."""
        judged = any(t in self._val_tasks for t in spec.tasks)
        if not (spec.recover and judged):
            return 0
        return len(self.refine_schedules) + int(self._trains_from_scratch(spec))

    def _trains_from_scratch(self, spec: BuildSpec) -> bool:
        return (
            self.train is not None
            and self.scratch.epochs > 0
            and set(spec.tasks) <= self.train.tasks
            and narrowable(self.base)
        )

    def refine(self, spec: BuildSpec, parent: Refinement, progress: ProgressFn) -> BuiltArtifact | None:
        """Distil `parent`'s architecture further; the artifact only when its Δm beats the parent's."""
        self.validate(spec)
        n = parent.number
        if not 1 <= n <= self.refinements(spec):
            return None
        key = spec.build_key(self._base_id)
        specs = {t: self.base.task_specs[t] for t in spec.tasks}
        before = quality(parent.parent_meta.metrics, parent.parent_meta.reference_metrics, specs)
        if before is None:
            return None
        if n > len(self.refine_schedules):
            return self._from_scratch(spec, parent, before, progress)
        t0 = time.perf_counter()
        progress("pruning", 0.01, f"refinement {n}: re-deriving the pruned architecture")
        weights, report = self._rederive(spec, parent)
        student = report.model
        resumed = restore_student(student_path(self.work_dir, key, parent.parent_meta.refinement), student)
        schedule = self.refine_schedules[n - 1]
        # a quantisation-aware refinement is for the INT8 variant: it and its parent are judged as they
        # compute in int8 (fake_quant.py), not in fp32, where its rounded weights may gain nothing
        int8 = schedule.quantise
        current = self._samples(student, int8) if resumed else None  # the parent's weights, before training
        steps = schedule.steps
        done = recover(
            student,
            report.teacher,
            self.calib,
            schedule,
            on_step=lambda i, loss: (
                progress(
                    "recovery", 0.05 + 0.85 * i / steps, f"refinement {n}: step {i}/{steps} loss {loss:.4f}"
                )
                if i % 2 == 0 or i == steps
                else None
            ),
        )
        judged = self._judge(
            spec, parent, before, current, student, parent.parent_meta.method, weights, progress, int8
        )
        if judged is None:
            return None
        meta, verdict = judged
        save_student(student_path(self.work_dir, key, n), student)
        prior = parent.parent_meta.recovery_steps if resumed else 0
        meta.recovery_steps = prior + done.steps
        extras = {"recovery_s": done.seconds, **recovery_extras(done), **verdict.extras()}
        built = self._export(student, meta, extras, t0, False, progress)
        built.notes = [
            done.describe(
                f"refinement {n} recovery" + (" (quantisation-aware)" if schedule.quantise else "")
            ),
            verdict.describe(f"refinement {n}" + (" (judged in int8)" if int8 else "")),
            *built.notes,
        ]
        return built

    def adapt(self, spec: BuildSpec, request: AdaptRequest, progress: ProgressFn) -> BuiltArtifact | None:
        """`request.parent` adapted to a device's statistics (issue 31, cut/adapt.py) and exported like a
        build (variants, statistics companion); None when there is nothing to ship: the summary shows no
        shift (cut/adapt.py's "none": the model is already right for that camera), or the adapted model
        loses more than `request.max_loss` points of Δm against the unadapted one on the validation scenes
        as the device's camera shows them (`device_view`: each image given the summary's input mean and
        spread). A model tuned to a dim camera loses on the unshifted scenes by design, so those figures
        go with the build (notes, extras) but do not decide; for an unshifted device the two views are
        the same scenes. The agent's proxy check then judges it on the device's own inputs.

        The parent is loaded as a refinement loads it: its architecture re-derived, its saved weights
        restored. One whose weights this server does not keep (a from-scratch candidate, another
        replica's work dir) cannot be adapted: BuildError says so."""
        self.validate(spec)
        parent, t0 = request.parent, time.perf_counter()
        key = spec.build_key(self._base_id)
        specs = {t: self.base.task_specs[t] for t in spec.tasks}
        reference = {t: v for t, v in self.reference_metrics().items() if t in spec.tasks}
        if parent.parent_meta.method == SCRATCH_METHOD:
            raise BuildError("a model trained from scratch cannot be adapted: its weights are not kept")
        if self.val is None or not any(t in self._val_tasks for t in spec.tasks):
            raise BuildError("the validation data labels none of the model's tasks: no adaptation is checked")
        progress("pruning", 0.01, "adaptation: loading the model it adapts")
        weights, report = self._rederive(spec, parent)
        student = report.model
        if not restore_student(student_path(self.work_dir, key, parent.parent_meta.refinement), student):
            raise BuildError(
                f"the weights of model {parent.parent_artifact_id[:12]} are not kept on this server: "
                "it cannot be adapted"
            )
        options = AdaptOptions() if request.method is None else AdaptOptions(method=request.method)  # type: ignore[arg-type]
        adapted = adapt_model(student, report.teacher, request.layers, self.calib, options, progress)
        if adapted.method == "none":
            logger.info("build %s: the device's statistics show no shift: nothing to adapt", key[:12])
            return None
        # adapt() works on a copy: `student` is still the unadapted model to compare with
        view = device_view(self.val, request.layers)
        val_specs = {t: s for t, s in specs.items() if t in self._val_tasks}
        before = quality(self._evaluate(student), reference, specs)
        seen_before = quality(evaluate(student, val_specs, view), reference, specs)
        progress("exporting", 0.9, "adaptation: evaluating on the validation set")
        metrics = self._evaluate(adapted.model)
        after = quality(metrics, reference, specs)
        seen_after = quality(evaluate(adapted.model, val_specs, view), reference, specs)
        if before is None or after is None or seen_before is None or seen_after is None:
            raise BuildError("the validation data labels none of the model's tasks: no adaptation is checked")
        verdict = (
            f"adapted ({adapted.method}) to the device's statistics: Δm {seen_after:+.2f} % against "
            f"{seen_before:+.2f} % unadapted on the validation set as the device's camera shows it; "
            f"{after:+.2f} % against {before:+.2f} % on the unshifted set"
        )
        logger.info("build %s: %s", key[:12], verdict)
        if seen_after < seen_before - request.max_loss:
            return None
        changes = task_changes(metrics, reference, {t: s.kind for t, s in specs.items()})
        size = measure(adapted.model, adapted.model.input_size)
        meta = self._meta(spec, adapted.model, size, metrics, parent.parent_meta.method)
        meta.refinement, meta.parent_artifact_id = parent.parent_meta.refinement, parent.parent_artifact_id
        meta.recovery_steps = parent.parent_meta.recovery_steps
        meta.task_changes = {t: round(100 * c, 2) for t, c in changes.items()}
        meta.fusion_weights = {t: weights.get(t, 1.0) for t in spec.tasks}
        meta.trade_off = trade_off(changes, self.balance_share)
        extras = {
            "delta_m_unadapted": before,
            "delta_m_adapted": after,
            "device_view_delta_m_unadapted": seen_before,
            "device_view_delta_m_adapted": seen_after,
        }
        built = self._export(adapted.model, meta, extras, t0, False, progress)
        built.notes = [verdict, *built.notes]
        return built

    def _judge(
        self,
        spec: BuildSpec,
        parent: Refinement,
        before: float,
        current: dict[str, SampleStats] | None,
        student: MultiTaskModel,
        method: str,
        weights: dict[str, float],
        progress: ProgressFn,
        int8: bool = False,
    ) -> tuple[ModelMeta, Verdict] | None:
        """The refinement's metadata and verdict when it beats the current model (Δm `before`, per-image
        statistics `current`, None when its weights are gone) beyond the validation set's noise
        (cut/shipping.py), else None (unless `judge_only`); `int8`: both as they compute in int8."""
        n = parent.number
        progress("exporting", 0.9, f"refinement {n}: evaluating on the validation set")
        metrics = self._evaluate(student)
        reference = {t: v for t, v in self.reference_metrics().items() if t in spec.tasks}
        specs = {t: self.base.task_specs[t] for t in spec.tasks}
        verdict = judge(self._samples(student, int8), current, reference, before, self.ship_confidence)
        what = f"refinement {n}" + (" (from scratch)" if method == SCRATCH_METHOD else "")
        what += " (judged in int8)" if int8 else ""
        logger.info(
            "%s of %s (%s): Δm %s vs parent %.2f; %s",
            what,
            spec.build_key(self._base_id)[:12],
            method,
            quality(metrics, reference, specs),
            before,
            verdict.describe(what),
        )
        if not (verdict.ship or self.judge_only):
            return None
        changes = task_changes(metrics, reference, {t: s.kind for t, s in specs.items()})
        meta = self._meta(spec, student, measure(student, student.input_size), metrics, method)
        meta.refinement = n
        meta.parent_artifact_id = parent.parent_artifact_id
        meta.task_changes = {t: round(100 * c, 2) for t, c in changes.items()}
        meta.fusion_weights = {t: weights.get(t, 1.0) for t in spec.tasks}
        meta.trade_off = trade_off(changes, self.balance_share)
        return meta, verdict

    def _rederive(self, spec: BuildSpec, parent: Refinement) -> tuple[dict[str, float], TailorReport]:
        """The parent's pruned architecture again (same seeds, fusion weights and channel steps), not recovered."""
        weights = dict(parent.parent_meta.fusion_weights) or dict(spec.priorities)
        opts = replace(self.options, recovery=None)

        def derive(options: TailorOptions) -> TailorReport:
            return tailor(self.base, list(spec.tasks), spec.budget.bucketed(), self.calib, options, weights)

        with self._lock:  # re-derivation reads the shared base; training afterwards does not
            report = derive(opts)
            size = (parent.parent_meta.params, parent.parent_meta.macs)
            if opts.round_to > FINE_STEP and (report.pruned.params, report.pruned.macs) != size:
                # the build fell back to steps of FINE_STEP (build()): its architecture is that one
                report = derive(replace(opts, round_to=FINE_STEP))
        return weights, report

    def _from_scratch(
        self, spec: BuildSpec, parent: Refinement, before: float, progress: ProgressFn
    ) -> BuiltArtifact | None:
        """The base architecture narrowed to at most the parent's MACs (and the budget's parameters),
        trained on labelled samples; the artifact only when its Δm beats the parent's beyond the noise."""
        assert self.train is not None
        n, key = parent.number, spec.build_key(self._base_id)
        t0 = time.perf_counter()
        progress("pruning", 0.01, f"refinement {n}: narrowing the architecture to the budget (from scratch)")
        with self._probe_lock:  # measured by validate() at the start of refine()
            selected = self._floors[spec.tasks][0]
        budget = size_target(spec.budget.bucketed(), selected)
        limit = Target(max_macs=parent.parent_meta.macs, max_params=budget.max_params)
        try:
            narrow = self._as_fast(spec, parent, limit, progress)
        except (ImpossibleBudgetError, ModelContractError) as exc:  # a user's class may refuse a width
            logger.info("refinement %d of %s: no from-scratch candidate (%s)", n, key[:12], exc)
            return None
        if narrow is None:
            logger.info("refinement %d of %s: no from-scratch candidate as fast as its parent", n, key[:12])
            return None
        progress("recovery", 0.03, f"refinement {n}: loading {self.train.describe}")
        data = self.train.data()
        # the fleet's time budget for a refined model: the schedule's steps, cut to what fits in
        # `scratch.seconds` on this machine (reported below when that cut it)
        schedule, steps = self.scratch.schedule(data), self.scratch.steps(narrow.model, data)
        run = train_scratch(
            narrow.model,
            data,
            self.scratch.recipe,
            steps,
            seconds=self.scratch.seconds * 1.5,  # steps were fitted to `seconds`: this only stops a stall
            on_step=lambda i, loss: (
                progress(
                    "recovery",
                    0.05 + 0.85 * i / steps,
                    f"refinement {n}: from scratch, step {i}/{steps} loss {loss:.4f}",
                )
                if i % 2 == 0 or i == steps
                else None
            ),
        )
        logger.info(
            "refinement %d of %s: from scratch, widths x%.3f, %d of %d steps in %.0f s",
            n,
            key[:12],
            narrow.scale,
            run.steps,
            schedule,
            run.seconds,
        )
        current = self._current_samples(spec, parent)
        judged = self._judge(spec, parent, before, current, narrow.model, SCRATCH_METHOD, {}, progress)
        if judged is None:
            return None
        meta, verdict = judged
        extras = {
            **verdict.extras(),
            "train_s": run.seconds,
            "train_steps": float(run.steps),
            "train_steps_asked": float(schedule),
            "width_scale": narrow.scale,
        }
        built = self._export(narrow.model, meta, extras, t0, False, progress)
        fitted = f" (fitted to {self.scratch.seconds:g} s on this machine)" if run.steps < schedule else ""
        built.notes = [
            f"refinement {n} from scratch: {run.steps} of {schedule} steps{fitted}",
            verdict.describe(f"refinement {n} (from scratch)"),
            *built.notes,
        ]
        return built

    def _current_samples(self, spec: BuildSpec, parent: Refinement) -> dict[str, SampleStats] | None:
        """Per-image statistics of the model the key serves (its architecture re-derived, its saved
        weights loaded); None when those weights are gone (the shipping test is unpaired then)."""
        model = self._rederive(spec, parent)[1].model
        path = student_path(self.work_dir, spec.build_key(self._base_id), parent.parent_meta.refinement)
        return self._samples(model) if restore_student(path, model) else None

    def _as_fast(
        self, spec: BuildSpec, parent: Refinement, limit: Target, progress: ProgressFn
    ) -> Narrow | None:
        """The widest narrowed base within `limit` that also runs no slower than the parent's pruned
        architecture (onnxruntime, 1 thread, timed in turns on this machine): at the same MACs a
        uniformly narrowed model can be a third slower (docs/benchmarks.md, *Quality at budget*), and a
        device's budget is its speed. None when a few tighter tries find none."""
        pruned = self._rederive(spec, parent)[1].model  # its weights do not matter for timing
        with tempfile.TemporaryDirectory(prefix="scratch-timing-", dir=self._tmp_dir()) as tmp:
            ref = export_for_timing(pruned, Path(tmp) / "parent.onnx")
            for i in range(SPEED_TRIES):
                progress("pruning", 0.02, f"refinement {parent.number}: timing narrowed model {i + 1}")
                narrow = narrow_to(self.base, spec.tasks, limit, seed=self.scratch.recipe.seed)
                mine = export_for_timing(narrow.model, Path(tmp) / "candidate.onnx")
                parent_ms, ms = interleaved_latency_ms([ref, mine], narrow.model.input_size)
                if ms <= parent_ms * self.scratch.max_slowdown:
                    return narrow
                # latency is about linear in MACs: aim below the parent's time (a fixed cost needs more)
                limit = replace(limit, max_macs=int(narrow.size.macs * parent_ms / ms * 0.97))
        return None

    def _meta(
        self, spec: BuildSpec, model: MultiTaskModel, size: Size, metrics: Metrics, method: str
    ) -> ModelMeta:
        return ModelMeta(
            base_model=self._base_id,
            tasks=list(spec.tasks),
            input=input_spec(model),
            outputs=output_specs(model),
            params=size.params,
            macs=size.macs,
            full_params=self.full_size.params,
            full_macs=self.full_size.macs,
            metrics=metrics,
            reference_metrics={t: v for t, v in self.reference_metrics().items() if t in spec.tasks},
            build_key=spec.build_key(self._base_id),
            method=method,
            pipeline_version=PIPELINE_VERSION,
            created_unix=time.time(),
        )

    def _export(
        self,
        model: MultiTaskModel,
        meta: ModelMeta,
        extras: dict[str, float],
        t0: float,
        rebuilt: bool,
        progress: ProgressFn,
    ) -> BuiltArtifact:
        out_dir = Path(tempfile.mkdtemp(prefix="build-", dir=self._tmp_dir()))
        path = out_dir / "model.onnx"
        meta.onnx_max_abs_diff = export_onnx(model, meta, path)
        built = BuiltArtifact(
            path,
            meta,
            {"rebalanced": float(rebuilt), **extras},
            scratch=out_dir,
            parent_artifact_id=meta.parent_artifact_id,
            refinement=meta.refinement,
        )
        self._add_int8(built, progress)
        self._add_fp16(built, progress)
        self._add_statistics(built, model, progress)
        built.extras["seconds"] = time.perf_counter() - t0
        return built

    def _add_int8(self, built: BuiltArtifact, progress: ProgressFn) -> None:
        """Quantise the exported model (static INT8, checked per task against it on the validation set)
        and offer it as a variant when it passes; else the fp32 artifact's `precision_note` says why."""
        if self.quant is None:
            return
        meta = built.meta
        specs = {t: self.base.task_specs[t] for t in meta.tasks if t in self._val_tasks}
        progress("exporting", 0.95, "int8: calibrating and checking a static INT8 variant")
        outcome = quantise_checked(
            built.onnx_path,
            built.onnx_path.with_name("model.int8.onnx"),
            self._calib_draw(self.quant.calib_images, self.quant.seed),
            specs,
            self.val,
            self.quant,
            progress=lambda text: progress("exporting", 0.96, text),
        )
        built.extras["quantise_s"] = outcome.seconds
        if outcome.path is None:
            meta.precision_note = f"no int8 variant: {outcome.note}"
            embed_meta(built.onnx_path, meta)
            built.notes.append(f"{meta.precision_note} ({outcome.seconds:.1f} s)")
            return
        int8 = _variant_meta(meta, "int8", outcome.metrics, specs)
        int8.quantized = True
        int8.excluded_nodes, int8.precision_note = outcome.excluded_nodes, outcome.note
        embed_meta(outcome.path, int8)
        built.variants.append(Variant(outcome.path, int8))
        size = outcome.size_bytes / 1e6
        built.notes.append(f"int8 variant ({size:.2f} MB, {outcome.seconds:.1f} s): {outcome.note}")

    def _add_fp16(self, built: BuiltArtifact, progress: ProgressFn) -> None:
        """With `self.fp16`: the FP16 twin (cut/half.py), its metrics measured on the validation set, offered
        as a variant to the devices whose provider runs FP16; a twin off the fp32 outputs is left out."""
        if not self.fp16:
            return
        progress("exporting", 0.97, "fp16: converting and checking an FP16 variant")
        t0 = time.perf_counter()
        dst = built.onnx_path.with_name("model.fp16.onnx")
        try:
            to_fp16(built.onnx_path, dst, self._calib_draw(CHECK_IMAGES, 0))
        except BuildError as exc:
            built.notes.append(f"no fp16 variant: {exc}")
            return
        specs = {t: self.base.task_specs[t] for t in built.meta.tasks if t in self._val_tasks}
        metrics = evaluate_onnx(dst, specs, self.val) if specs and self.val is not None else {}
        half = _variant_meta(built.meta, "fp16", metrics, specs)
        embed_meta(dst, half)
        built.variants.append(Variant(dst, half))
        built.extras["fp16_s"] = time.perf_counter() - t0
        built.notes.append(
            f"fp16 variant ({dst.stat().st_size / 1e6:.2f} MB, {built.extras['fp16_s']:.1f} s)"
        )

    def _add_statistics(self, built: BuiltArtifact, model: MultiTaskModel, progress: ProgressFn) -> None:
        """The statistics companion of the fp32 model (issue 31, cut/statistics.py): an export, no check
        to pass; a model without BatchNorm has none (there is nothing a device's statistics could set)."""
        progress("exporting", 0.98, "statistics: exporting the statistics companion")
        t0 = time.perf_counter()
        dst = built.onnx_path.with_name("model.stats.onnx")
        try:
            export_statistics_model(model, dst)
        except StatsError as exc:
            logger.info("build %s: no statistics companion: %s", built.meta.build_key[:12], exc)
            return
        meta = built.meta.model_copy(deep=True)
        meta.precision, meta.metrics, meta.task_changes = "stats", {}, {}
        meta.outputs, meta.onnx_max_abs_diff = {}, None
        meta.norm_layers = _norm_layers(dst)
        embed_meta(dst, meta)
        built.statistics = Variant(dst, meta)
        built.extras["statistics_s"] = time.perf_counter() - t0
        built.notes.append(
            f"statistics companion ({len(meta.norm_layers) - 1} BatchNorm layers, "
            f"{dst.stat().st_size / 1e6:.2f} MB, {built.extras['statistics_s']:.1f} s)"
        )

    def _calib_draw(self, n: int, seed: int) -> np.ndarray:
        """`n` of the build's calibration images (a seeded draw), drawn once per (n, seed) and kept."""
        if (n, seed) not in self._calib_images:
            self._calib_images[(n, seed)] = calibration_images(self.calib, n, seed)
        return self._calib_images[(n, seed)]

    def _tmp_dir(self) -> Path:
        d = self.work_dir / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d


def device_view(val: Dataset[Batch], layers: dict[str, tuple[np.ndarray, np.ndarray]]) -> TensorSamples:
    """`val` (labels kept) under the per-channel gain and offset that give its images the input
    statistics of `layers` (a device's summary): how a camera that differs in exposure, gain, contrast or
    colour cast would show the validation scenes (blur and noise do not show in these two moments)."""
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in batches(val, 64):
        for k, v in batch.items():
            parts.setdefault(k, []).append(v)
    data = {k: torch.cat(v) for k, v in parts.items()}
    if INPUT not in layers:
        return TensorSamples(data)
    x = data["image"].float()
    mean, var = (torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in layers[INPUT])
    m, v = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    gain = torch.sqrt((var + 1e-6) / (v + 1e-6))
    offset = mean - gain * m
    data["image"] = (x * gain.view(1, 3, 1, 1) + offset.view(1, 3, 1, 1)).clamp(0.0, 1.0)
    return TensorSamples(data)


def _norm_layers(path: Path) -> dict[str, int]:
    """Layer -> channels of an exported statistics model, in its output order (its outputs' static shapes)."""
    outputs = {o.name: o for o in onnx.load(str(path), load_external_data=False).graph.output}
    dims = {name: outputs[name + MEAN].type.tensor_type.shape.dim for name in layer_names(outputs)}
    if any(len(d) != 1 or d[0].dim_value <= 0 for d in dims.values()):
        raise BuildError("the statistics model's outputs are not one fixed-length vector per layer")
    return {name: int(d[0].dim_value) for name, d in dims.items()}


def _variant_meta(
    meta: ModelMeta, precision: Precision, metrics: Metrics, specs: dict[str, TaskSpec]
) -> ModelMeta:
    """The fp32 model's metadata for its `precision` twin: the twin's own metrics and task changes."""
    out = meta.model_copy(deep=True)
    out.precision, out.metrics = precision, metrics
    kinds = {t: s.kind for t, s in specs.items()}
    changes = task_changes(metrics, out.reference_metrics, kinds)
    out.task_changes = {t: round(100 * c, 2) for t, c in changes.items()}
    out.onnx_max_abs_diff = None  # measured against torch for the fp32 model only
    return out


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
    refine_steps: tuple[int, ...] | None = None,
    balance_share: float = DEFAULT_SHARE,
    train_data: str | None = None,
    scratch_seconds: float | None = None,
    min_delta_m: float = MIN_DELTA_M,
) -> TorchEngine:
    """The engine for a trained checkpoint (built as `model` when given, else as the class it records).

    Calibration images: `calib_data` (a folder or "synthetic"), else the data the checkpoint was trained
    on, else `val_data`'s images; a model with none is refused (mtl/calibration.py). Validation as in
    sources.engine_data. `refine_steps` sets the refinements' lengths (() = none, and no from-scratch
    candidate either); a kept task more than `balance_share` below the full model triggers one
    rebalanced rebuild. `train_data` labels the from-scratch candidate's training (sources.training_source:
    by default the reference's synthetic scenes when they label every task; "off" = no candidate), which
    trains for at most `scratch_seconds` (default ScratchOptions.seconds). A build whose Δm falls below
    `min_delta_m` (%) fails instead of shipping (-inf: no floor).
    """
    torch.set_num_threads(max(1, torch.get_num_threads()))
    doc = checkpoint.read(checkpoint_path)
    base = check_outputs(checkpoint.model_from(doc, model, source=str(checkpoint_path)))
    calibration = calibration_source(doc, checkpoint_path.name, calib_data, val_data)
    calib_data = calibration.source
    logger.info("calibrating on %s", calibration.why)
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
    # steps asked for explicitly are run in full; the default quick schedule also stops at its seconds
    recovery = (
        DEFAULT_RECOVERY
        if recovery_steps is None
        else replace(DEFAULT_RECOVERY, steps=recovery_steps, seconds=None)
    )
    return TorchEngine(
        base,
        checkpoint.file_id(checkpoint_path),
        calib,
        val,
        state_dir,
        TailorOptions(
            recovery=recovery if recovery.steps > 0 else None,
            deadline_s=QUICK_DEADLINE_S if recovery_steps is None else None,
        ),
        REFINEMENTS
        if refine_steps is None
        else tuple(
            replace(REFINEMENTS[min(i, len(REFINEMENTS) - 1)], steps=n) for i, n in enumerate(refine_steps)
        ),
        balance_share=balance_share,
        train=None
        if refine_steps == ()
        else training_source(
            list(base.task_specs.values()),
            base.input_size,
            train_data,
            calib_data,
            scenes_cache(state_dir),
            N_TRAIN,
            TRAIN_SEED,
            image_scale,
            val_data,
        ),
        scratch=ScratchOptions() if scratch_seconds is None else ScratchOptions(seconds=scratch_seconds),
        min_delta_m=min_delta_m,
        calibrated_on=calibration.why,
    )
