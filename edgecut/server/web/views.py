"""What the dashboard shows, assembled from the registry, the store and the history: plain JSON-ready dicts.

The JSON API returns these dicts and the pages render the very same ones, so a page never shows
anything the API does not say.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy import func, select

from edgecut.errors import EdgecutError
from edgecut.model_meta import ModelMeta
from edgecut.norm_stats import StatsError
from edgecut.server.fleet.jobs.rollout import RolloutManager
from edgecut.server.fleet.jobs.rollout_policy import CANARY
from edgecut.server.fleet.policy import stat_buckets
from edgecut.server.fleet.state.adaptations import Adapted
from edgecut.server.fleet.state.history import FleetHistory
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import QUEUED, RUNNING, SwapRow
from edgecut.server.fleet.state.store import Store
from edgecut.server.mtl.metric_names import DELTA_M_METRICS, LOWER_IS_BETTER, PRIMARY, task_change
from edgecut.server.web.events import EventHub
from edgecut.v1 import fleet_pb2 as pb

STATUSES = ("online", "offline", "unknown")


def agent_state(t: dict[str, Any]) -> dict[str, Any]:
    """The agent's life-cycle state from its latest telemetry ('' from an agent older than the field)."""
    name = str(t.get("state", ""))  # the AgentState name, e.g. AGENT_STATE_SERVING (JSON of the proto)
    since_ms = int(t.get("state_since_unix_ms", 0))  # an int64: a string in the proto's JSON
    return {
        "agent_state": name.removeprefix("AGENT_STATE_").lower() if name != "AGENT_STATE_UNSPECIFIED" else "",
        "agent_state_since": since_ms / 1000 or None,
        "agent_state_reason": str(t.get("state_reason", "")),
    }


def served_precision(t: dict[str, Any], artifact_id: str) -> dict[str, Any]:
    """The precision the device serves and what it timed for each one offered (issue 30: the device's
    own choice); an agent older than the field serves fp32."""
    timed = [
        {"precision": str(x.get("precision", "")), "median_ms": float(x.get("median_ms", 0.0))}
        for x in t.get("timings", [])
        if isinstance(x, dict) and float(x.get("median_ms", 0.0)) > 0
    ]
    return {
        "precision": str(t.get("precision", "")) or ("fp32" if artifact_id else ""),
        "precision_timings": timed,
    }


@dataclass
class Views:
    registry: Registry
    store: Store
    history: FleetHistory
    hub: EventHub
    rollouts: RolloutManager | None = None
    _meta: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # artifacts are content-addressed, so their metadata never changes: cache it
        @lru_cache(maxsize=1024)
        def meta(artifact_id: str) -> ModelMeta | None:
            try:
                return self.store.meta(artifact_id)
            except EdgecutError:
                return None

        self._meta = meta

    def meta(self, artifact_id: str) -> ModelMeta | None:
        return self._meta(artifact_id) if artifact_id else None

    # -- fleet ---------------------------------------------------------------------------------

    def fleet(self, status: str = "", device_class: str = "", task: str = "") -> dict[str, Any]:
        devices = self.registry.devices.all()
        swapped = self._last_swaps()
        roles = self._rollout_roles()
        sent = self.registry.statistics.devices()
        adapted = self.registry.adaptations.all()
        rows = [
            self._summary(
                d,
                swapped.get(d["device_id"]),
                roles.get(d["device_id"]),
                sent.get(d["device_id"]),
                adapted.get(d["device_id"]),
            )
            for d in devices
        ]
        by_class: dict[str, dict[str, int]] = {}
        for r in rows:
            c = by_class.setdefault(r["device_class"] or "-", {"online": 0, "total": 0})
            c["total"] += 1
            c["online"] += r["status"] == "online"
        counts = {
            "total": len(rows),
            "online": sum(r["status"] == "online" for r in rows),
            "offline": sum(r["status"] == "offline" for r in rows),
            "by_class": dict(sorted(by_class.items())),
        }
        options = {
            "statuses": list(STATUSES),
            "classes": sorted({r["device_class"] for r in rows if r["device_class"]}),
            "tasks": sorted({t for r in rows for t in r["tasks"] + r["serving_tasks"]}),
        }
        shown = [
            r
            for r in rows
            if (not status or r["status"] == status)
            and (not device_class or r["device_class"] == device_class)
            and (not task or task in r["tasks"] or task in r["serving_tasks"])
        ]
        return {
            "counts": counts,
            "filters": {"status": status, "device_class": device_class, "task": task},
            "options": options,
            "shown": len(shown),
            "devices": shown,
        }

    def class_counts(self) -> dict[str, tuple[int, int]]:
        """device class -> (online, known), for the metrics."""
        out: dict[str, tuple[int, int]] = {}
        for d in self.registry.devices.all():
            online, known = out.get(d["device_class"] or "unknown", (0, 0))
            out[d["device_class"] or "unknown"] = (online + (d["status"] == "online"), known + 1)
        return out

    def _summary(
        self,
        d: dict[str, Any],
        swapped_at: float | None,
        role: dict[str, Any] | None,
        statistics: dict[str, Any] | None = None,
        adapted: Adapted | None = None,
    ) -> dict[str, Any]:
        """`statistics`: the device's statistics summaries taken (issue 31: last sequence, how many,
        when the latest), None when it never sent one (adaptation off on the device); `adapted`: its
        adaptation record (shown with `adaptation`)."""
        t = d.get("telemetry") or {}
        res = d.get("resources") or {}
        return {
            "device_id": d["device_id"],
            "status": d["status"],
            "device_class": d["device_class"],
            "budget": d["budget"],
            "agent_version": d["agent_version"],
            "resources": {
                "cpu_count": int(res.get("cpu_count", 0)),
                "cpu_freq_mhz": float(res.get("cpu_freq_mhz", 0.0)),
                "arch": res.get("arch", ""),
                "ram_total_bytes": int(res.get("ram_total_bytes", 0)),
                "os": res.get("os", ""),
                # what the agent's model runs on, first choice first (issue 30: a provider that failed
                # was dropped by the agent and is not listed)
                "ort_providers": [str(p) for p in res.get("ort_providers", [])],
            },
            "tasks": list(d["needs_tasks"]),
            "serving_tasks": list(d["serving_tasks"]),
            "artifact_id": d["artifact_id"],
            "model": self.model(d["artifact_id"]),
            "swapped_at": swapped_at,
            "latency_p50_ms": float(t.get("latency_p50_ms", 0.0)),
            "latency_p95_ms": float(t.get("latency_p95_ms", 0.0)),
            "rss_bytes": int(t.get("rss_bytes", 0)),
            "inference_count": int(t.get("inference_count", 0)),
            "failed_count": int(t.get("failed_count", 0)),
            "last_error": d["last_error"],
            "last_seen": d["last_seen"],
            "pinned_artifact_id": d.get("pinned_artifact_id", ""),
            "rollout": role,
            "statistics": statistics,
            "adapted": self.adaptation(adapted, d) if adapted is not None else None,
            **agent_state(t),
            **served_precision(t, d["artifact_id"]),
        }

    def adaptation(self, row: Adapted, d: dict[str, Any]) -> dict[str, Any]:
        """A device's adaptation (issue 31): the adapted model offered to it (and whether it serves it),
        the base model, the statistics bucket and summary that chose it, and its drift since: the
        distance of its latest summary's input statistics from that one's, in grid steps
        (policy/stat_buckets.py: 1.0 = one bucket's width)."""
        drift = None
        latest = self.registry.statistics.of_device(row.device_id)
        if latest and row.point:
            msg = pb.StatsSummary()
            try:
                msg.ParseFromString(latest[0].summary)
                drift = round(stat_buckets.drift(row.point, stat_buckets.point(msg)), 2)
            except (DecodeError, StatsError):  # stored after every check: only a bug gets here
                drift = None
        return {
            "artifact_id": row.artifact_id,
            "serving": bool(row.artifact_id) and d["artifact_id"] == row.artifact_id,
            "base_artifact_id": row.base_artifact_id,
            "bucket": row.bucket,
            "sequence": row.sequence,
            "drift": drift if drift is None or math.isfinite(drift) else None,
        }

    def model(self, artifact_id: str) -> dict[str, Any] | None:
        meta = self.meta(artifact_id)
        if meta is None:
            return None
        return {
            "artifact_id": artifact_id,
            "build_key": meta.build_key,
            "base_model": meta.base_model,
            "pipeline_version": meta.pipeline_version,
            "tasks": list(meta.tasks),
            "params": meta.params,
            "macs": meta.macs,
            "full_params": meta.full_params,
            "full_macs": meta.full_macs,
            "params_ratio": meta.params / meta.full_params if meta.full_params else None,
            "macs_ratio": meta.macs / meta.full_macs if meta.full_macs else None,
            "method": meta.method,
            "version": meta.version,
            "created_unix": meta.created_unix,
        }

    def _last_swaps(self) -> dict[str, float]:
        with self.registry.transaction() as s:
            q = (
                select(SwapRow.device_id, func.max(SwapRow.at))
                .where(SwapRow.ok.is_(True))
                .group_by(SwapRow.device_id)
            )
            return {device: float(at) for device, at in s.execute(q)}

    def _rollout_roles(self) -> dict[str, dict[str, Any]]:
        if self.rollouts is None:
            return {}
        roles: dict[str, dict[str, Any]] = {}
        for r in self.rollouts.rollouts(states=(CANARY,)):
            for device in r["cohort"]:
                role = "canary" if device in r["canaries"] else "held"
                roles[device] = {"id": r["id"], "role": role, "candidate": r["candidate_artifact"]}
        return roles

    # -- one device ----------------------------------------------------------------------------

    def device(self, device_id: str) -> dict[str, Any] | None:
        d = self.registry.devices.get(device_id)
        if d is None:
            return None
        swaps = self.registry.offers.swaps(device_id, limit=50)
        last_ok = next((s["at"] for s in swaps if s["ok"]), None)
        sent = self.registry.statistics.devices().get(device_id)
        adapted = self.registry.adaptations.get(device_id)
        out = self._summary(d, last_ok, self._rollout_roles().get(device_id), sent, adapted)
        meta = self.meta(d["artifact_id"])
        out["quality"] = quality_rows(meta) if meta else []
        out["trade_off"] = meta.trade_off if meta else ""
        out["swaps"] = [
            {**s, "tasks": (m.tasks if (m := self.meta(s["artifact_id"])) else [])} for s in swaps
        ]
        out["offers"] = self.history.offers(device_id, limit=20)
        out["needs"] = d.get("needs_json") or {}
        out["summaries"] = [  # the latest statistics summary taken per model (never the statistics)
            {
                "artifact_id": x.artifact_id,
                "sequence": x.sequence,
                "images": x.images,
                "digest": x.digest,
                "at": x.at,
            }
            for x in self.registry.statistics.of_device(device_id)
        ]
        return out

    def telemetry(self, device_id: str, since: float = 0.0, limit: int = 500) -> dict[str, Any]:
        return {"device_id": device_id, "samples": self.history.telemetry(device_id, since, limit)}

    # -- builds --------------------------------------------------------------------------------

    def builds(self, limit: int = 50) -> dict[str, Any]:
        now = time.time()
        active = []
        queued_keys = [j.build_key for j in self.registry.jobs.all((QUEUED,))]
        for j in self.registry.jobs.all((QUEUED, RUNNING)):
            live = self.hub.job_progress(j.build_key) or {}
            active.append(
                {
                    "build_key": j.build_key,
                    "state": j.state,
                    "tasks": list(j.spec.get("tasks", [])),
                    "budget": _budget_text(j.spec.get("budget", {})),
                    "stage": live.get("stage", j.stage),
                    "fraction": float(live.get("fraction", j.fraction)),
                    "detail": live.get("detail", ""),
                    "queue_position": queued_keys.index(j.build_key) + 1
                    if j.build_key in queued_keys
                    else None,
                    "attempts": j.attempts,
                    **_lineage(j.build_key, j.spec.get("refine", {}).get("total")),
                }
            )
        runs = self.history.build_runs(limit)
        artifacts = sorted({r.artifact_id for r in runs if r.artifact_id})
        latency = self.history.latency(artifacts)
        recent = []
        for r in runs:
            meta = self.meta(r.artifact_id)
            recent.append(
                {
                    "build_key": r.build_key,
                    "tasks": r.tasks,
                    "result": r.result or ("running" if r.started_at else "queued"),
                    "queued_at": r.queued_at,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "seconds": r.seconds
                    if r.seconds is not None
                    else (now - r.started_at if r.started_at else None),
                    "cache_hits": r.cache_hits,
                    "artifact_id": r.artifact_id,
                    "error": r.error,
                    "model": self.model(r.artifact_id),
                    "ort_latency_ms": latency.get(r.artifact_id),
                    "quality": quality_rows(meta) if meta else [],
                    "trade_off": meta.trade_off if meta else "",
                    **_lineage(r.build_key),
                }
            )
        done = [
            r.seconds
            for r in runs
            if r.result == "done"
            and r.seconds is not None
            and not _lineage(r.build_key)["refinement"]
            and not _lineage(r.build_key).get("adaptation")
        ]
        return {
            "active": active,
            "queued": len(queued_keys),
            "recent": recent,
            "cache_hits_total": sum(r.cache_hits for r in runs),
            "median_build_seconds": statistics.median(done) if done else None,
            "rollouts": self.rollout_list(),
        }

    def rollout_list(self) -> list[dict[str, Any]]:
        if self.rollouts is None:
            return []
        out = []
        for r in self.rollouts.rollouts(limit=50):
            out.append({**r, "progress": self.rollouts.progress(r["id"]) if r["state"] == CANARY else {}})
        return out


def _lineage(key: str, total: Any = None) -> dict[str, Any]:
    """A refinement's job key is `K~rN` (registry.refinement_key): its number and the build it refines;
    an adaptation's is `K~a...` (registry.adaptation_key): refinement 0, labelled as an adaptation."""
    of, sep, _ = key.rpartition("~a")
    if sep:
        return {"refinement": 0, "refines": of, "label": "adapted to a device", "adaptation": True}
    of, sep, number = key.rpartition("~r")
    if not sep or not number.isdigit():
        return {"refinement": 0, "refines": "", "label": ""}
    label = f"refinement {number}" + (f"/{total}" if isinstance(total, int) and total else "")
    return {"refinement": int(number), "refines": of, "label": label}


def quality_rows(meta: ModelMeta) -> list[dict[str, Any]]:
    """One row per task: primary metric of the tailored model next to the full model's, and the change."""
    rows = []
    for task in meta.tasks:
        kind = meta.outputs[task].kind if task in meta.outputs else ""
        values, ref = meta.metrics.get(task, {}), meta.reference_metrics.get(task, {})
        key = PRIMARY.get(kind, next(iter(values), ""))
        change = task_change(values, ref, DELTA_M_METRICS.get(kind)) if values and ref else None
        rows.append(
            {
                "task": task,
                "kind": kind,
                "metric": key,
                "lower_is_better": key in LOWER_IS_BETTER,
                "value": values.get(key),
                "full": ref.get(key),
                "change": change,
                "metrics": values,
                "reference": ref,
            }
        )
    return rows


def _budget_text(budget: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in budget.items() if isinstance(v, int | float)) or "none"
