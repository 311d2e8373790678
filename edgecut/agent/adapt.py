"""Adapting to what this device sees (issue 31): the agent's statistics path, on only with `adapt: on`.

- **Inputs**: the local API hands every served input to `Adapter.observe`, which keeps a window of
  `adapt_batch` of them in memory (never on disk) for the statistics and for the proxy check after a
  swap (proxy.py): a uniform sample, by reservoir sampling, of the inputs served since the last
  statistics run. Each time `adapt_every` (64) new inputs have arrived, the window goes as one batch to
  a background thread and is dropped once measured, and the sampling starts over. A camera's frames
  come in time order: a batch of consecutive frames shows one moment of one scene, and the statistics
  model normalises each layer by its batch, so such a batch measures the deeper layers unlike the mix
  the server's re-estimation sees; a sample spread over `adapt_every` inputs is closer to it.
- **Statistics**: the serving model's signed statistics companion (`Manifest.statistics`, downloaded and
  checked like a precision variant by agent.py) runs over the batch on onnxruntime's CPU provider with
  one thread, and `norm_stats.Accumulator` merges its per-layer means and variances by the law of total
  variance (the variance over all the inputs measured; server-side re-estimation,
  `recalibrate_batchnorm`, averages per-batch variances instead, which the summary exceeds by the
  spread of the batch means). The companion never
  serves a request. Statistics belong to the serving artifact: a swap starts them anew.
- **CPU share**: a token bucket (`Governor`) earns `adapt_cpu_share` seconds of CPU per second of wall
  time (at most `BURST_S` seconds' worth banked) and pays each run's measured thread CPU time; a batch
  that arrives while the bucket holds less than the last run cost, or while the previous batch still
  runs, is skipped (counted
  in `skipped`), so the statistics never take more than their share however fast requests come.
- **Summaries**: every `adapt_images` measured inputs, a `StatsSummary` (to_proto) goes out on the
  `stats` topic (QoS 1, never retained) with a `sequence` that grows across restarts (`adapt.json` in
  the state dir, written before the summary leaves; never below the clock's milliseconds, so a wiped
  state dir does not start it again from 1). Offline, only the latest summary is kept and sent
  when the broker is back: a newer one replaces it, there is no queue of old ones. A summary counts as
  sent only once the link took it: one above the broker's size limit is never sent, and one summary is
  handed over once however many reconnects and measurements race to send it.
- **Drift**: the standardised shift of the layers' means between the artifact's last two summaries
  (mean over channels of |mean - previous mean| / previous standard deviation, averaged over layers).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgecut import topics
from edgecut.norm_stats import Accumulator, Layers, StatsError, layer_names, to_proto
from edgecut.v1 import fleet_pb2

from .errors import ModelRejected
from .providers import CPU
from .proxy import ProxyResult
from .settings import AgentSettings
from .statefile import read_json, write_json

logger = logging.getLogger(__name__)

STATE_FILE = "adapt.json"
BURST_S = 10.0  # wall seconds of CPU share the governor may bank while no batch comes


class Governor:
    """A token bucket of CPU seconds: `share` earned per wall second, each run's CPU time paid; a run
    starts only when the bucket holds what the last one cost, so the spending never runs ahead."""

    def __init__(self, share: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.share, self.clock = share, clock
        self._credit = self._cost = 0.0
        self._last = self.since = clock()
        self.spent_s = 0.0

    def allow(self) -> bool:
        now = self.clock()
        self._credit = min(self.share * BURST_S, self._credit + self.share * (now - self._last))
        self._last = now
        # a run that costs more than the bucket can bank (a slow CPU) waits for a full bucket instead of
        # never running again
        return self._credit >= min(self._cost, self.share * BURST_S)

    def spend(self, cpu_s: float) -> None:
        self._credit -= cpu_s
        self._cost = cpu_s
        self.spent_s += cpu_s

    def used_share(self) -> float:
        """CPU seconds spent per wall second since the governor started."""
        return self.spent_s / max(1e-9, self.clock() - self.since)


class StatisticsModel:
    """A statistics companion loaded in onnxruntime (CPU, one thread, so its time is the caller's)."""

    def __init__(self, path: Path, file_id: str, input_shape: Sequence[int | None]) -> None:
        self.file_id = file_id
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=[CPU])
        except Exception as exc:  # onnxruntime raises its own (pybind) exception types
            raise ModelRejected(f"onnxruntime cannot load it: {str(exc)[:300]}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelRejected(f"it takes {len(inputs)} inputs, a statistics model takes one image batch")
        self.input = inputs[0].name
        if [d if isinstance(d, int) else None for d in inputs[0].shape[1:]] != list(input_shape[1:]):
            raise ModelRejected(f"its input {inputs[0].shape} is not the serving model's {list(input_shape)}")
        self.outputs = [o.name for o in self.session.get_outputs()]
        try:
            self.layers = layer_names(dict.fromkeys(self.outputs))
        except StatsError as exc:
            raise ModelRejected(str(exc)) from exc

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, {self.input: batch}), strict=True))


def drift(now: Layers, before: Layers) -> float:
    """Mean over shared layers of the mean |shift of a channel's mean| in the earlier standard deviations."""
    shifts = [
        float(np.mean(np.abs(now[n][0] - m) / np.sqrt(v + 1e-5)))
        for n, (m, v) in before.items()
        if n in now and now[n][0].shape == m.shape
    ]
    return float(np.mean(shifts)) if shifts else 0.0


class Adapter:
    """The statistics of the serving model over recent real inputs, and the summaries they make."""

    def __init__(
        self,
        settings: AgentSettings,
        publish: Callable[[fleet_pb2.StatsSummary], bool],
        now_ms: Callable[[], int],
    ) -> None:
        self.on = settings.adapt
        self.device_id = settings.device_id
        self.batch_size, self.per_summary = settings.adapt_batch, settings.adapt_images
        self.every = max(settings.adapt_every, settings.adapt_batch)
        self.publish, self.now_ms = publish, now_ms  # publish: True when handed to the broker
        self._state_path = settings.state_dir / STATE_FILE
        doc = read_json(self._state_path)
        seq = doc.get("sequence", 0) if isinstance(doc, dict) else 0
        self.sequence = seq if isinstance(seq, int) and seq >= 0 else 0
        self.governor = Governor(settings.adapt_cpu_share)
        self._lock = threading.Condition()
        self._window: list[np.ndarray] = []  # a uniform sample of the inputs since the last batch
        self._fresh = 0  # inputs served since the last batch was taken (the reservoir's count)
        self._rng = random.Random()
        self._batch: tuple[int, np.ndarray] | None = None  # (generation, images) for the thread
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumped by every switch: work on an older artifact is dropped
        self._artifact = ""
        self._waiting = False
        self._stats: StatisticsModel | None = None
        self._acc = Accumulator()
        self._last_layers: Layers | None = None
        self._pending: fleet_pb2.StatsSummary | None = None
        self.note = "no model served yet"
        self.measured = self.skipped = self.summaries = self.last_bytes = 0
        self.refused = 0  # summaries never sent: above the broker's size limit
        self.drift = 0.0
        self.proxy = ProxyResult(note="no swap checked yet")

    @property
    def artifact(self) -> str:
        """The model whose statistics are measured ("" = none yet)."""
        return self._artifact

    # --- life -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.on and self._thread is None:
            self._thread = threading.Thread(target=self._work, name="adapt-stats", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def waiting_for_companion(self) -> bool:
        """The serving model's companion did not come for a network reason: the agent tries again."""
        return self._waiting

    def switch(
        self, artifact_id: str, stats: StatisticsModel | None, note: str = "", waiting: bool = False
    ) -> None:
        """Measure `artifact_id` from now on, with `stats` (None: nothing to measure, `note` says why;
        `waiting`: its companion's download is being retried)."""
        with self._lock:
            self._generation += 1
            self._artifact, self._stats, self.note = artifact_id, stats, note
            self._waiting = waiting
            self._acc.reset()
            self._last_layers, self.drift, self._fresh, self.measured = None, 0.0, 0, 0
        if stats is not None:
            logger.info(
                "measuring %s's statistics with its companion %s over %d layers",
                artifact_id[:12],
                stats.file_id[:12],
                len(stats.layers),
            )

    # --- inputs (API threads) ---------------------------------------------------------------------
    def observe(self, artifact_id: str, images: np.ndarray) -> None:
        """Inputs `artifact_id` just served: kept in memory, measured in batches within the CPU share."""
        if not self.on:
            return
        with self._lock:
            for x in images:
                self._sample(x)
            if self._fresh < self.every:
                return
            # the next sample starts (measured or not, so the window stays recent): it overwrites this
            # one slot by slot, then samples
            self._fresh = 0
            if self._stats is None or artifact_id != self._artifact:
                return
            if self._busy or self._batch is not None or not self.governor.allow():
                self.skipped += len(self._window)
                return
            self._batch = (self._generation, np.stack(self._window))
            self._lock.notify()

    def _sample(self, x: np.ndarray) -> None:
        """Reservoir sampling (algorithm R) of one input into the window (called under the lock): after
        k inputs since the last batch, each of them is in the window with probability batch_size / k."""
        slot = self._fresh if self._fresh < self.batch_size else self._rng.randrange(self._fresh + 1)
        self._fresh += 1
        if slot >= self.batch_size:
            return
        kept = np.array(x, dtype=np.float32, copy=True)
        if slot < len(self._window):
            self._window[slot] = kept
        else:
            self._window.append(kept)

    def recent(self) -> np.ndarray:
        """The recent inputs held (a copy; empty when none)."""
        with self._lock:
            return np.stack(self._window) if self._window else np.zeros((0,), np.float32)

    # --- the background thread --------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while self._batch is None and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                assert self._batch is not None
                (generation, batch), self._batch = self._batch, None
                stats, self._busy = self._stats, True
            try:
                if stats is not None:
                    self._measure(generation, stats, batch)
            except Exception:
                logger.exception("statistics run failed")
            finally:
                del batch  # the inputs are dropped once measured
                with self._lock:
                    self._busy = False

    def _measure(self, generation: int, stats: StatisticsModel, batch: np.ndarray) -> None:
        t0 = time.thread_time()
        try:
            outputs = stats.run(batch)
        except Exception as exc:  # onnxruntime's own types: a companion that cannot run these inputs
            with self._lock:
                self.governor.spend(time.thread_time() - t0)
                if generation == self._generation:
                    self._stats, self.note = None, f"statistics companion failed: {str(exc)[:200]}"
            logger.warning(
                "statistics of %s stopped: its companion failed on real inputs", self._artifact[:12]
            )
            return
        summary = None
        with self._lock:
            self.governor.spend(time.thread_time() - t0)
            if generation != self._generation:
                return  # a swap happened meanwhile: these inputs belong to the old model
            try:
                self._acc.add(outputs, len(batch))
            except StatsError as exc:
                self._stats, self.note = None, f"statistics companion output refused: {exc}"
                logger.warning("statistics of %s stopped: %s", self._artifact[:12], exc)
                return
            self.measured += len(batch)
            # the measuring is over: the next batch may come while the summary is handed over (a batch
            # that came between the count and the flush was skipped, and a caller waiting on the count
            # saw its next batch dropped)
            self._busy = False
            if self._acc.images >= self.per_summary:
                summary = self._summarise()
        if summary is not None:
            self.flush()

    def _summarise(self) -> fleet_pb2.StatsSummary:
        """The accumulated statistics as the next summary (called under the lock)."""
        layers, images = self._acc.layers(), self._acc.images
        self._acc.reset()
        if self._last_layers is not None:
            self.drift = drift(layers, self._last_layers)
        self._last_layers = layers
        # above the last one sent (kept in the state dir) and above the clock's milliseconds, so a device
        # whose state dir was wiped does not send numbers the server already took as replays
        self.sequence = max(self.sequence + 1, self.now_ms())
        write_json(self._state_path, {"sequence": self.sequence})  # before it leaves: never reused
        self._pending = to_proto(layers, self.device_id, self._artifact, images, self.sequence, self.now_ms())
        return self._pending

    def flush(self) -> None:
        """Send the latest summary when the broker is there (after a reconnect too); else keep it.

        The summary is taken out before it is handed over, so a reconnect and a new measurement
        flushing at once send it once; one the link did not take goes back, unless a newer came."""
        with self._lock:
            msg, self._pending = self._pending, None
        if msg is None:
            return
        size = msg.ByteSize()
        if size > topics.MAX_PAYLOAD:  # never fits: dropped, not counted, the next one is measured anew
            with self._lock:
                self.refused += 1
            logger.error(
                "statistics summary %d of %d bytes is above the broker limit: not sent", msg.sequence, size
            )
            return
        if not self.publish(msg):
            with self._lock:
                if self._pending is None:
                    self._pending = msg
            return
        with self._lock:
            self.summaries += 1
            self.last_bytes = msg.ByteSize()
        logger.info(
            "statistics summary %d of %s sent: %d inputs over %d layers in %d bytes",
            msg.sequence,
            msg.artifact_id[:12],
            msg.images,
            len(msg.layers),
            self.last_bytes,
        )

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "statistics": self._stats.file_id if self._stats else "",
                "note": self.note,
                "measured": self.measured,
                "skipped": self.skipped,
                "held": len(self._window),
                "summaries": self.summaries,
                "refused": self.refused,
                "sequence": self.sequence,
                "pending": self._pending is not None,
                "last_bytes": self.last_bytes,
                "cpu_share": round(self.governor.used_share(), 5),
                "drift": round(self.drift, 4),
                "proxy": self.proxy.as_dict(),
            }
