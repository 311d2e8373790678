"""onnxruntime sessions with an atomic hot swap.

The swap contract: `ModelSlot.current` is the only shared reference to the serving model. A request
reads it once (a single attribute load, atomic under the GIL) and runs to completion on that object,
so a request in flight when the reference changes finishes on the old session, which is freed when
its last request drops it. A new model is loaded, warmed up and validated *beside* the serving one
and only then assigned; anything that fails before the assignment leaves the old model serving.
Swaps are serialised by a lock; readers never take it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from edgecut.model_meta import ONNX_METADATA_KEY, ModelMeta

from . import precision
from .artifacts import ModelStore, sha256_file
from .errors import AgentError, BadInput, ModelRejected, NoModelError, Untrusted
from .precision import Timing, TimingPolicy, VariantFile
from .providers import CPU, fallbacks

logger = logging.getLogger(__name__)

WARMUP_BATCH = 2  # >1 so a batch axis fixed to 1 in the graph is caught before serving


@dataclass(frozen=True)
class LoadedModel:
    artifact_id: str
    meta: ModelMeta
    session: ort.InferenceSession
    load_ms: float
    providers: tuple[str, ...] = ()  # what the session runs on: session.get_providers()
    provider_note: str = ""  # why that is less than the agent asked for ("" = all of it)
    file_id: str = ""  # the file serving `artifact_id`: a precision variant's id ("" = its own file)

    @property
    def output_names(self) -> list[str]:
        return [self.meta.outputs[t].name for t in self.meta.tasks]

    def check_input(self, image: np.ndarray) -> None:
        want = self.meta.input.shape
        if image.dtype != np.float32 or image.ndim != len(want):
            raise BadInput(f"expected float32 of rank {len(want)}, got {image.dtype} of rank {image.ndim}")
        for axis, (got, exp) in enumerate(zip(image.shape, want, strict=True)):
            if exp is not None and got != exp:
                raise BadInput(
                    f"input shape {list(image.shape)} does not match the model's {want} (axis {axis})"
                )
        if image.shape[0] == 0:
            raise BadInput("empty batch")

    def output_bytes(self, batch: int) -> int:
        """float32 bytes of every output for a batch of `batch` (dynamic axes other than 0 count as 1)."""
        total = 0
        for task in self.meta.tasks:
            total += batch * 4 * math.prod(d or 1 for d in self.meta.outputs[task].shape[1:])
        return total

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.meta.input.name: image})
        return dict(zip(self.meta.tasks, outs, strict=True))


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return opts


def _validate(model: LoadedModel) -> None:
    """Warm up on a batch of WARMUP_BATCH and check every output is finite and shaped per the metadata."""
    meta = model.meta
    inputs = model.session.get_inputs()
    if [i.name for i in inputs] != [meta.input.name]:
        raise ModelRejected(f"graph inputs {[i.name for i in inputs]} != metadata input {meta.input.name!r}")
    graph_outputs = {o.name for o in model.session.get_outputs()}
    missing = [t for t in meta.tasks if t not in meta.outputs or meta.outputs[t].name not in graph_outputs]
    if missing:
        raise ModelRejected(f"tasks {missing} have no output in the graph")
    shape = [WARMUP_BATCH if d is None else d for d in meta.input.shape]
    if any(d is None or d <= 0 for d in shape):
        raise ModelRejected(f"input shape {meta.input.shape} has a dynamic axis other than the batch")
    lo, hi = meta.input.value_range
    image = np.random.default_rng(0).uniform(lo, hi, size=shape).astype(np.float32)
    try:
        outs = model.run(image)
        model.run(image[:1])  # the serving path is usually batch 1: warm it too
    except Exception as exc:  # onnxruntime raises its own (pybind) exception types
        raise ModelRejected(f"warm-up inference failed: {exc}") from exc
    for task, arr in outs.items():
        want = [WARMUP_BATCH if i == 0 and d is None else d for i, d in enumerate(meta.outputs[task].shape)]
        if len(arr.shape) != len(want) or any(
            w is not None and w != g for w, g in zip(want, arr.shape, strict=True)
        ):
            raise ModelRejected(f"output {task!r} has shape {list(arr.shape)}, metadata says {want}")
        if not np.isfinite(arr).all():
            raise ModelRejected(f"output {task!r} is not finite (NaN or Inf) on a valid input")


# (model path, options, providers) -> a session: onnxruntime's, or a test's that fails on one provider
SessionFactory = Callable[[str, ort.SessionOptions, list[str]], ort.InferenceSession]


def ort_session(path: str, opts: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    return ort.InferenceSession(path, opts, providers=providers)


def _load_on(
    path: Path, artifact_id: str, threads: int, providers: list[str], factory: SessionFactory
) -> LoadedModel:
    try:
        session = factory(str(path), session_options(threads), providers)
    except Exception as exc:
        raise ModelRejected(f"onnxruntime cannot load it: {str(exc)[:300]}") from exc
    raw = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if raw is None:
        raise ModelRejected(f"no {ONNX_METADATA_KEY!r} metadata in the ONNX file")
    try:
        meta = ModelMeta.from_json(raw)
    except (ValidationError, ValueError) as exc:
        raise ModelRejected(f"its metadata is invalid: {str(exc)[:300]}") from exc
    model = LoadedModel(artifact_id, meta, session, 0.0, tuple(session.get_providers()))
    _validate(model)
    return model


def load_model(
    path: Path,
    artifact_id: str,
    threads: int = 0,
    providers: Sequence[str] = (CPU,),
    factory: SessionFactory = ort_session,
) -> LoadedModel:
    """Load, read metadata, warm up and validate; raises ModelRejected with the reason.

    A provider that fails to create the session or to warm it up is dropped and the rest tried, down
    to the CPU provider alone, with one warning; only when the CPU provider fails too is the model
    refused (then the model, not a provider, is at fault).
    """
    t0 = time.perf_counter()
    failed: list[str] = []
    why = ""
    for attempt in fallbacks(providers):
        try:
            model = _load_on(path, artifact_id, threads, attempt, factory)
            break
        except ModelRejected as exc:
            if attempt == [CPU]:
                raise
            failed.append(attempt[0])
            why = why or str(exc)
    # a GPU build without its libraries (CUDA, cuDNN) enables no GPU provider, says so on stderr only
    silent = [p for p in providers if p not in model.providers and p not in failed]
    notes = [f"{', '.join(failed)} failed ({why})"] if failed else []
    notes += [f"onnxruntime did not enable {', '.join(silent)} (its log says why)"] if silent else []
    note = "; ".join(notes)
    if note:
        logger.warning("model %s: %s: it runs on %s", artifact_id[:12], note, ", ".join(model.providers))
    load_ms = (time.perf_counter() - t0) * 1e3
    return replace(model, load_ms=load_ms, provider_note=note)


class ModelSlot:
    """The serving model: read `current` once per request; assign it only with a validated model."""

    def __init__(self) -> None:
        self.current: LoadedModel | None = None


@dataclass
class SwapResult:
    artifact_id: str
    previous_artifact_id: str
    ok: bool
    reason: str = ""
    load_ms: float = 0.0
    untrusted: bool = False  # refused by the provenance check, not by validation
    precision: str = "fp32"  # what serves after the swap
    timings: list[Timing] = field(default_factory=list)  # each precision timed for the choice


@dataclass
class Stats:
    inference_count: int = 0
    failed_count: int = 0
    swaps: int = 0
    failed_swaps: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def percentile(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, math.ceil(q * len(data)) - 1)] if data else 0.0


# (artifact id, file) -> None, or raises Untrusted: the agent's pre-load provenance check (trust.py)
Verifier = Callable[[str, Path], None]


class Runtime:
    def __init__(
        self,
        store: ModelStore,
        threads: int = 0,
        verifier: Verifier | None = None,
        providers: Sequence[str] = (CPU,),
        session_factory: SessionFactory = ort_session,
    ) -> None:
        self.store = store
        self.threads = threads
        self.verifier = verifier
        self.providers = list(providers)  # asked for, best first (providers.resolve)
        self.session_factory = session_factory
        self.slot = ModelSlot()
        self.stats = Stats()
        self.max_output_bytes = 60 << 20  # the reply must fit the local API's message limit
        self._swap_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.variant_verifier: precision.VariantVerifier | None = None
        self.timing = TimingPolicy()

    def infer(self, image: np.ndarray) -> tuple[LoadedModel, dict[str, np.ndarray], float]:
        model = self.slot.current  # the one read of the shared reference
        if model is None:
            raise NoModelError("no model loaded yet: select tasks and wait for the server's model")
        model.check_input(image)
        out_bytes = model.output_bytes(image.shape[0])
        if out_bytes > self.max_output_bytes:
            most = self.max_output_bytes // max(1, model.output_bytes(1))
            raise BadInput(
                f"a batch of {image.shape[0]} would make {out_bytes >> 20} MiB of outputs, above the "
                f"{self.max_output_bytes >> 20} MiB reply limit: send at most {most} images"
            )
        t0 = time.perf_counter()
        try:
            outs = model.run(image)
        except Exception as exc:
            with self._stats_lock:
                self.stats.failed_count += 1
            raise AgentError(f"inference failed: {exc}") from exc
        ms = (time.perf_counter() - t0) * 1e3
        with self._stats_lock:
            self.stats.inference_count += 1
            self.stats.latencies_ms.append(ms)
        return model, outs, ms

    def load(self, path: Path, artifact_id: str) -> LoadedModel:
        """load_model with this runtime's threads, providers and their CPU fallback."""
        return load_model(path, artifact_id, self.threads, self.providers, self.session_factory)

    def providers_in_use(self) -> list[str]:
        """What the serving model runs on; before any model, what the next one will be asked to."""
        model = self.slot.current
        return list(model.providers) if model is not None else list(self.providers)

    def _swap_in(
        self, artifact_id: str, path: Path, variants: Sequence[VariantFile] = (), kept: str = ""
    ) -> SwapResult:
        """Verify, load, validate and swap to `artifact_id`; with `variants`, the precision that
        precision.py chooses serves; with `kept` (a variant's id), that variant serves again."""
        old = self.slot.current
        prev_id = old.artifact_id if old else ""
        timings: list[Timing] = []
        try:
            if self.verifier is not None:
                self.verifier(artifact_id, path)  # the last check before onnxruntime reads the bytes
            new = self.load(path, artifact_id)
            if variants:
                new, timings = self._fastest(new, variants)
            elif kept:
                new, timings = self._kept(new, kept)
        except ModelRejected as exc:
            self.stats.failed_swaps += 1
            logger.warning(
                "model %s refused, %s keeps serving: %s", artifact_id[:12], prev_id[:12] or "none", exc
            )
            return SwapResult(artifact_id, prev_id, False, str(exc), untrusted=isinstance(exc, Untrusted))
        self.slot.current = new  # the swap: one reference assignment
        self.stats.swaps += 1
        with self._stats_lock:  # telemetry's p50/p95 then describe the serving model only (rollout gates)
            self.stats.latencies_ms.clear()
        logger.info(
            "now serving %s in %s (was %s), loaded in %.0f ms",
            artifact_id[:12],
            new.meta.precision,
            prev_id[:12],
            new.load_ms,
        )
        return SwapResult(artifact_id, prev_id, True, "", new.load_ms, False, new.meta.precision, timings)

    def install(self, artifact_id: str, variants: Sequence[VariantFile] = ()) -> SwapResult:
        """Swap to a verified artifact in the store (the fastest vouched precision of it when
        `variants` are given); a refused one is marked bad and never retried."""
        with self._swap_lock:
            result = self._swap_in(artifact_id, self.store.path(artifact_id), variants)
            if result.ok:
                self.store.record_swap(artifact_id, _served(self.slot.current, result))
            elif result.untrusted:
                self.store.discard(artifact_id)  # fetched again from the fleet, not marked bad
            else:
                self.store.mark_bad(artifact_id, result.reason)
            return result

    def rollback(self) -> SwapResult:
        """Serve the previous model again (it is re-validated first)."""
        with self._swap_lock:
            prev = self.store.previous
            current = self.slot.current.artifact_id if self.slot.current else ""
            if not prev or not self.store.has(prev):
                return SwapResult("", current, False, "no previous model to roll back to")
            result = self._swap_in(prev, self.store.path(prev), kept=self._kept_file(prev))
            if result.ok:
                self.store.record_rollback()
                self.store.set_served(prev, _served(self.slot.current, result))
            return result

    def restore(self) -> SwapResult | None:
        """At start-up: serve the recorded current model, else the previous one; verify bytes first."""
        with self._swap_lock:
            for artifact_id in (self.store.current, self.store.previous):
                if not artifact_id:
                    continue
                path = self.store.path(artifact_id)
                if not path.is_file() or sha256_file(path) != artifact_id:
                    logger.warning("model file %s is missing or damaged; forgetting it", artifact_id[:12])
                    self.store.forget(artifact_id)
                    continue
                result = self._swap_in(artifact_id, path, kept=self._kept_file(artifact_id))
                if result.ok:
                    if artifact_id != self.store.current:
                        self.store.record_rollback()
                    self.store.set_served(artifact_id, _served(self.slot.current, result))
                    return result
                self.store.forget(artifact_id)
            return None

    # --- precisions (issue 30; precision.py): the variants timed here, the faster one served --------
    def _load_variant(self, model: LoadedModel, v: VariantFile) -> LoadedModel:
        """The verified, loaded and validated variant, standing in for `model` (raises ModelRejected)."""
        if self.variant_verifier is not None:  # in the signed manifest, with these bytes
            self.variant_verifier(model.artifact_id, v.file_id, v.path)
        loaded = self.load(v.path, v.file_id)
        why = precision.compatible(model.meta, loaded.meta)
        if not why and loaded.meta.precision != v.precision:
            why = f"its metadata says {loaded.meta.precision}, the manifest {v.precision}"
        if why:
            raise ModelRejected(why)
        return replace(loaded, artifact_id=model.artifact_id, file_id=v.file_id)

    def _fastest(
        self, model: LoadedModel, variants: Sequence[VariantFile]
    ) -> tuple[LoadedModel, list[Timing]]:
        return precision.fastest(model, variants, self._load_variant, self.store.discard, self.timing)

    def _kept_file(self, artifact_id: str) -> str:
        """The variant that served `artifact_id` when it last served ("" = its own fp32 file)."""
        f = str(self.store.served(artifact_id).get("file") or "")
        return f if f and f != artifact_id else ""

    def _kept(self, model: LoadedModel, file_id: str) -> tuple[LoadedModel, list[Timing]]:
        served = self.store.served(model.artifact_id)
        return precision.kept(model, file_id, served, self.store.path(file_id), self._load_variant)


def _served(model: LoadedModel | None, result: SwapResult) -> dict[str, object]:
    """What the store keeps about how a model serves (ModelStore.serving)."""
    return {
        "file": model.file_id if model else "",
        "precision": result.precision,
        "timings": [asdict(t) for t in result.timings],
    }
