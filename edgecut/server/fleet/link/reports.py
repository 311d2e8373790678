"""What devices report over MQTT besides their needs: telemetry, swaps, command acks and retained state.

Each report is checked (requests.py), recorded in the registry and emitted as a fleet event. Telemetry
also feeds the device class's latency model: a device that stays past its latency budget is
re-tailored (`Link.reask`). A swap a device refused has its artifact re-hashed off paho's thread; a
corrupt one is quarantined and rebuilt (jobs/scrub.py).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from google.protobuf import json_format
from google.protobuf.message import Message

from edgecut.server.errors import ServerError
from edgecut.server.fleet import error_map
from edgecut.server.fleet.link import requests, wire
from edgecut.server.fleet.policy.budget import BudgetPolicy
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store
from edgecut.v1 import fleet_pb2 as pb

logger = logging.getLogger(__name__)


class Link(Protocol):
    """What the reports need of the MQTT bridge."""

    def parse(
        self, cls: type[Message], device_id: str, payload: bytes, answer: bool = True, about: str = ""
    ) -> Any: ...

    def publish_error(self, err: pb.Error) -> None: ...

    def emit(self, kind: str, device: str, **data: Any) -> None: ...

    def reask(self, dev: dict[str, Any], why: str) -> bool: ...


def slowdown_of(dev: dict[str, Any]) -> float:
    return max(1.0, float(dev.get("latency_slowdown") or 0.0))


class DeviceReports:
    def __init__(
        self,
        link: Link,
        registry: Registry,
        policy: BudgetPolicy,
        store: Store,
        recheck: Callable[[str], bool],
    ) -> None:
        """`recheck(artifact_id)`: hash it now, True when it was corrupt and is being rebuilt."""
        self.link, self.registry, self.policy, self.store = link, registry, policy, store
        self.recheck_artifact = recheck
        # re-hashing an artifact a device found corrupt must not block paho's network thread
        self._rechecks = ThreadPoolExecutor(1, thread_name_prefix="edgecut-recheck")
        self._rechecking: set[str] = set()
        self._macs: dict[str, int] = {}  # artifact id -> its MACs (latency observations)
        self._guard = threading.Lock()  # _macs and _rechecking: the bridge's lanes run devices concurrently

    def stop(self) -> None:
        self._rechecks.shutdown(wait=False, cancel_futures=True)

    def on_telemetry(self, device_id: str, payload: bytes) -> None:
        t: pb.Telemetry | None = self.link.parse(pb.Telemetry, device_id, payload, about="telemetry")
        if t is None:
            return
        try:
            requests.check_telemetry(t)
        except ServerError as exc:  # nothing of it is stored: one bad figure discredits the sample
            logger.warning("telemetry of %s refused: %s", device_id, exc)
            err = error_map.to_error(exc, device_id, 0)
            err.about = "telemetry"  # answers no needs: the device keeps asking for its model
            self.link.publish_error(err)
            return
        t.device_id = device_id  # the topic names the device, whatever the payload claims
        telemetry = wire.to_dict(t)
        self.registry.devices.record_telemetry(device_id, telemetry)
        self.link.emit("telemetry", device_id, **telemetry)
        self._watch_latency(device_id, t)

    def _watch_latency(self, device_id: str, t: pb.Telemetry) -> None:
        """Feed the class's cost model; re-tailor the device when it stays past its latency budget."""
        if not t.artifact_id or t.latency_p50_ms <= 0:
            return
        dev = self.registry.devices.get(device_id)
        macs = self._macs_of(t.artifact_id[:64])
        if dev is None or not macs:
            return
        resources = json_format.ParseDict(dev["resources"] or {}, pb.Resources(), ignore_unknown_fields=True)
        name, row = self.policy.row(resources)
        budget_ms = float((dev["needs_json"] or {}).get("max_latency_ms", 0.0) or 0.0)
        slowdown = self.policy.latency.observe(
            device_id,
            name,
            row.macs_per_ms,
            macs,
            t.latency_p50_ms,
            t.inference_count,
            t.artifact_id[:64],
            budget_ms,
            t.precision or "fp32",
        )
        if slowdown is None:
            return
        slowdown = max(slowdown, slowdown_of(dev))
        logger.warning(
            "device %s: p50 %.1f ms stays above its %.1f ms budget; re-tailoring (%.2fx slower than its class)",
            device_id,
            t.latency_p50_ms,
            budget_ms,
            slowdown,
        )
        self.registry.devices.set_latency_slowdown(device_id, slowdown)
        self.link.emit("drift", device_id, p50_ms=t.latency_p50_ms, budget_ms=budget_ms, slowdown=slowdown)
        self.link.reask({**dev, "latency_slowdown": slowdown}, "latency drift")

    def _learn_precisions(self, device_id: str, s: pb.SwapReport) -> None:
        """Feed each precision's time the device measured when it chose into its class's latency model."""
        timings = requests.timings_of(s.timings) if s.ok else []
        macs = self._macs_of(s.artifact_id[:64]) if timings else 0
        dev = self.registry.devices.get(device_id) if macs else None
        if dev is None:
            return
        resources = json_format.ParseDict(dev["resources"] or {}, pb.Resources(), ignore_unknown_fields=True)
        name, row = self.policy.row(resources)
        for t in timings:  # one not timed (dropped: median 0) is skipped by learn()
            self.policy.latency.learn(
                device_id, name, row.macs_per_ms, macs, t["median_ms"], t["runs"], t["precision"]
            )

    def _macs_of(self, artifact_id: str) -> int:
        with self._guard:
            known = self._macs.get(artifact_id)
        if known is not None:
            return known
        try:
            macs = max(0, self.store.meta(artifact_id).macs)
        except Exception:  # not one of ours (or gone): no figure to learn from
            macs = 0
        with self._guard:
            self._macs[artifact_id] = macs
            while len(self._macs) > 4096:
                self._macs.pop(next(iter(self._macs)))
        return macs

    def on_swap(self, device_id: str, payload: bytes) -> None:
        s: pb.SwapReport | None = self.link.parse(pb.SwapReport, device_id, payload)
        if s is not None:
            self.registry.offers.record_swap(
                device_id,
                s.artifact_id[:64],
                s.ok,
                s.reason[:2000],
                s.previous_artifact_id[:64],
                s.load_ms if math.isfinite(s.load_ms) else 0.0,
                s.verified_key_id[:64],
                s.precision[:8],
                requests.timings_of(s.timings),
            )
            self._learn_precisions(device_id, s)
            if not s.ok and s.artifact_id:
                with self._guard:
                    fresh = s.artifact_id not in self._rechecking
                    self._rechecking.add(s.artifact_id)
                if fresh:
                    self._rechecks.submit(self._recheck, s.artifact_id)

            self.link.emit(
                "swap",
                device_id,
                artifact_id=s.artifact_id,
                previous_artifact_id=s.previous_artifact_id,
                ok=s.ok,
                reason=s.reason,
                load_ms=s.load_ms,
                precision=s.precision[:8],
                timings=requests.timings_of(s.timings),
            )

    def _recheck(self, artifact_id: str) -> None:
        try:
            if self.store.exists(artifact_id) and self.recheck_artifact(artifact_id):
                logger.error("a device refused %s and its stored bytes were corrupt: rebuilding", artifact_id)
        except Exception:
            logger.exception("recheck of %s failed", artifact_id)
        finally:
            with self._guard:
                self._rechecking.discard(artifact_id)

    def on_ack(self, device_id: str, payload: bytes) -> None:
        ack: pb.CommandAck | None = self.link.parse(pb.CommandAck, device_id, payload, answer=False)
        if ack is not None:
            logger.info(
                "device %s %s command %s (%s)%s",
                device_id,
                "did" if ack.ok else "refused",
                ack.command_id[:64],
                ack.action[:32],
                f": {ack.reason[:200]}" if ack.reason else "",
            )
            self.registry.devices.record_command_ack(device_id, wire.to_dict(ack))
            self.link.emit("ack", device_id, **wire.to_dict(ack))

    def on_state(self, device_id: str, payload: bytes) -> None:
        if not payload:  # a cleared retained message
            return
        # Every replica receives retained state, so only log a bad one instead of answering N times.
        st: pb.DeviceState | None = self.link.parse(pb.DeviceState, device_id, payload, answer=False)
        if st is not None:
            # an enum number this version does not know (open enums) is "unknown", not a crash
            names = {v.number: v.name for v in pb.DeviceState.Status.DESCRIPTOR.values}
            status = names.get(st.status, "unknown").lower().replace("status_", "")
            self.registry.devices.record_state(
                device_id,
                status[:16],
                st.artifact_id[:64],
                [t[:64] for t in st.tasks[:32]],
                st.agent_version[:64],
                st.pinned_artifact_id[:64],
            )
            self.link.emit(
                "state", device_id, status=status, artifact_id=st.artifact_id[:64], tasks=list(st.tasks[:32])
            )
