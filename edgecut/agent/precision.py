"""The device decides by its own clock (issue 30): time a model's precisions, serve the faster one.

An offer's signed manifest may list the fp32 model's other precisions (`Manifest.variants`). The
agent loads each beside the serving model, times them on its own CPU and serves the fastest whose
quality the manifest vouches for; otherwise the fp32 model. INT8 gains differ by CPU (x86 with VNNI,
a Cortex-A72 without dot-product, an A76 with it), so only the device can tell.

- **Vouched**: every task of the model has a signed change against the fp32 twin (in points of the
  task's change against the full model) no worse than `max_loss` points. A task the manifest gives no
  figure for is not vouched for.
- **Timing**: batch 1, one fixed input, in rounds; each round runs every model `runs` times, starting
  with a different model each round (interleaved, so a frequency step or a busy neighbour falls on
  all of them), for at most `rounds` rounds and, after the third, no longer than `budget_s`. The
  median of each model's runs is its time.
- **Faster**: a variant serves only when its median beats the fp32 model's by `min_speedup`
  (default 5 %): a tie is noise, and the fp32 model is the one every figure was measured on.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from edgecut.model_meta import ModelMeta
from edgecut.v1 import fleet_pb2

from .errors import FetchError, ModelRejected

logger = logging.getLogger(__name__)

FP32 = "fp32"
DEFAULT_MAX_LOSS = 1.0  # points of a task's change against the full model
DEFAULT_MIN_SPEEDUP = 1.05
ROUNDS, RUNS = 7, 5  # 35 runs per model when there is time: the server learns from >= 20


class Runnable(Protocol):
    def run(self, image: np.ndarray) -> Any: ...


class Loaded(Protocol):
    """What this module needs of a loaded model (runtime.LoadedModel)."""

    @property
    def artifact_id(self) -> str: ...

    @property
    def meta(self) -> ModelMeta: ...

    def run(self, image: np.ndarray) -> Any: ...


M = TypeVar("M", bound=Loaded)


@dataclass
class Timing:
    """What the device measured for one precision (PrecisionTiming on the wire)."""

    precision: str
    artifact_id: str  # the file timed
    median_ms: float = 0.0  # 0 = not timed
    runs: int = 0
    note: str = ""  # why it was dropped or may not serve ("" = eligible)

    def to_proto(self) -> fleet_pb2.PrecisionTiming:
        return fleet_pb2.PrecisionTiming(**asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        return cls(
            str(d.get("precision", "")),
            str(d.get("artifact_id", "")),
            float(d.get("median_ms", 0.0)),
            int(d.get("runs", 0)),
            str(d.get("note", "")),
        )


def unvouched(variant: fleet_pb2.ModelVariant, tasks: Sequence[str], max_loss: float) -> str:
    """Why the manifest does not vouch for `variant`'s quality on `tasks` ("" = it does)."""
    for task in tasks:
        if task not in variant.task_changes:
            return f"quality not vouched for: the manifest gives no {variant.precision} change for {task!r}"
        change = variant.task_changes[task]
        if not change >= -max_loss:  # also refuses NaN
            return (
                f"{task!r} loses {-change:.2f} points against fp32 in {variant.precision} "
                f"(at most {max_loss:g} allowed)"
            )
    return ""


def time_models(
    models: Sequence[Runnable],
    image: np.ndarray,
    rounds: int = ROUNDS,
    runs: int = RUNS,
    budget_s: float = 3.0,
) -> list[tuple[float, int]]:
    """(median ms, runs) per model, timed interleaved on `image` (see the module docstring)."""
    for m in models:  # the first run of a session allocates: not a sample
        m.run(image)
    samples: list[list[float]] = [[] for _ in models]
    deadline = time.monotonic() + budget_s
    for r in range(rounds):
        for k in range(len(models)):
            i = (k + r) % len(models)
            for _ in range(runs):
                t0 = time.perf_counter()
                models[i].run(image)
                samples[i].append((time.perf_counter() - t0) * 1e3)
        if r >= 2 and time.monotonic() > deadline:
            break
    return [(statistics.median(s), len(s)) for s in samples]


def choose(timings: Sequence[Timing], min_speedup: float = DEFAULT_MIN_SPEEDUP) -> int:
    """The index of the timing to serve: the fastest eligible variant that beats fp32 by
    `min_speedup`, else the fp32 model (index 0, which must be the fp32 model's)."""
    base = timings[0].median_ms
    best = 0
    for i, t in enumerate(timings[1:], 1):
        if t.note or t.median_ms <= 0:
            continue
        if t.median_ms * min_speedup <= base and t.median_ms < timings[best].median_ms:
            best = i
    return best


# --- the runtime's side: load the variants beside the fp32 model, time them, pick one ----------------

# (artifact id, variant id, file) -> None, or raises Untrusted: the variant is in the signed manifest
VariantVerifier = Callable[[str, str, Path], None]


@dataclass(frozen=True)
class VariantFile:
    """A downloaded precision variant of the model being installed."""

    file_id: str  # its artifact id (sha256 of its bytes)
    precision: str
    path: Path
    note: str = ""  # why it may not serve though it is timed (its quality is not vouched for)


@dataclass(frozen=True)
class TimingPolicy:
    """How the runtime times a model's precisions and which one it lets serve."""

    budget_s: float = 3.0
    min_speedup: float = DEFAULT_MIN_SPEEDUP


def compatible(a: ModelMeta, b: ModelMeta) -> str:
    """Why variant `b` cannot stand in for model `a` ("" = it can: same tasks, input and outputs)."""
    if a.tasks != b.tasks:
        return f"it serves tasks {b.tasks}, the model {a.tasks}"
    if a.input != b.input:
        return "its input differs from the fp32 model's"
    if {t: (o.name, o.shape) for t, o in a.outputs.items()} != {
        t: (o.name, o.shape) for t, o in b.outputs.items()
    }:
        return "its outputs differ from the fp32 model's"
    return ""


def fastest(
    model: M,
    variants: Sequence[VariantFile],
    load: Callable[[M, VariantFile], M],
    discard: Callable[[str], None],
    policy: TimingPolicy,
) -> tuple[M, list[Timing]]:
    """Time `model` (fp32) and each variant that loads; the one to serve and every timing."""
    candidates = [model]
    timings = [Timing(FP32, model.artifact_id)]
    for v in variants:
        try:
            candidates.append(load(model, v))
            timings.append(Timing(v.precision, v.file_id, note=v.note))
        except ModelRejected as exc:  # a variant is an offer, not a duty: fp32 serves on
            logger.warning(
                "%s variant %s of %s dropped: %s", v.precision, v.file_id[:12], model.artifact_id[:12], exc
            )
            discard(v.file_id)
            timings.append(Timing(v.precision, v.file_id, note=f"dropped: {str(exc)[:200]}"))
    if len(candidates) == 1:
        return model, timings
    shape = [1 if d is None else d for d in model.meta.input.shape]
    lo, hi = model.meta.input.value_range
    image = np.random.default_rng(1).uniform(lo, hi, size=shape).astype(np.float32)
    timed = [t for t in timings if not t.note.startswith("dropped")]
    for t, (ms, runs) in zip(timed, time_models(candidates, image, budget_s=policy.budget_s), strict=True):
        t.median_ms, t.runs = ms, runs
    pick = choose(timings, policy.min_speedup)
    logger.info(
        "%s timed on this device: %s; serving %s",
        model.artifact_id[:12],
        ", ".join(
            f"{t.precision} {t.median_ms:.2f} ms" + (f" ({t.note})" if t.note else "") for t in timings
        ),
        timings[pick].precision,
    )
    return candidates[next(i for i, t in enumerate(timed) if t is timings[pick])], timings


def kept(
    model: M,
    file_id: str,
    served: dict[str, Any],
    path: Path,
    load: Callable[[M, VariantFile], M],
) -> tuple[M, list[Timing]]:
    """`model` served by the variant that served it before (a restart, a rollback), with the timings
    measured then; the fp32 model when that variant no longer loads."""
    timings = [Timing.from_dict(t) for t in served.get("timings") or [] if isinstance(t, dict)]
    v = VariantFile(file_id, str(served.get("precision", "")), path)
    try:
        return load(model, v), timings
    except (ModelRejected, FetchError) as exc:
        logger.warning(
            "%s variant %s of %s no longer loads (%s): serving its fp32 model",
            v.precision,
            file_id[:12],
            model.artifact_id[:12],
            exc,
        )
        return model, timings
