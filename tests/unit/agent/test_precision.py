"""The device decides by its own clock (issue 30): the real agent runtime times a model's precisions
on real ONNX files and serves the faster one its signed manifest vouches for, else the fp32 model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from edgecut.agent.agent import Agent
from edgecut.agent.cli import _timings_text
from edgecut.agent.precision import FP32, Timing, TimingPolicy, VariantFile, choose, unvouched
from edgecut.agent.settings import AgentSettings
from edgecut.server.spec import Budget, BuildSpec
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import signed_offer
from tests.support.keys import fleet_key
from tests.support.onnx_models import artifact_id
from tests.support.variant_engine import VariantEngine

IMG = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)


@dataclass
class Offered:
    aid: str
    variant: VariantFile
    manifest_variant: fleet_pb2.ModelVariant


def agent_at(tmp_path: Path) -> Agent:
    """An agent that is never started: its runtime, store and trust, wired as in a running agent."""
    agent = Agent(
        AgentSettings(
            device_id="dev",
            state_dir=tmp_path / "agent",
            ort_threads=1,
            fleet_keys=[fleet_key().public_text],
        )
    )
    agent.runtime.timing = TimingPolicy(budget_s=0.5)
    return agent


def offer(
    agent: Agent,
    tmp_path: Path,
    int8: Literal["faster", "slower"],
    change: float = -0.3,
    tasks: tuple[str, ...] = ("seg", "depth"),
    sha: str = "",
) -> Offered:
    """A build with an int8 variant, downloaded into the agent's store with its signed offer, as
    the agent's download would leave it; `sha`: the variant's sha256 in the manifest (default: its own)."""
    engine = VariantEngine(tmp_path / f"engine-{int8}-{len(tasks)}", int8=int8, int8_change=change)
    built = engine.build(BuildSpec(tasks, Budget(macs_fraction=0.5)), lambda *a: None)
    data, vdata = built.onnx_path.read_bytes(), built.variants[0].onnx_path.read_bytes()
    aid, vid = artifact_id(data), artifact_id(vdata)
    twin_fp32 = built.meta.task_changes
    mv = fleet_pb2.ModelVariant(
        artifact_id=vid, sha256=sha or vid, size_bytes=len(vdata), precision="int8", macs=built.meta.macs
    )
    for t, c in built.variants[0].meta.task_changes.items():
        mv.task_changes[t] = c - twin_fp32[t]
    store = agent.store
    store.path(aid).write_bytes(data)
    store.offer_path(aid).write_bytes(
        signed_offer(data, "dev", tasks=list(tasks), variants=[mv]).SerializeToString()
    )
    store.path(vid).write_bytes(vdata)
    note = unvouched(mv, tasks, agent.settings.variant_max_loss)
    return Offered(aid, VariantFile(vid, "int8", store.path(vid), note), mv)


def test_a_faster_int8_variant_serves(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    o = offer(agent, tmp_path, "faster")
    result = agent.runtime.install(o.aid, [o.variant])
    assert result.ok and result.precision == "int8"
    fp32, int8 = result.timings
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert 0 < int8.median_ms < fp32.median_ms and fp32.runs >= 15 and int8.runs == fp32.runs
    model, outs, _ = agent.runtime.infer(IMG)
    assert (
        model.artifact_id == o.aid and model.file_id == o.variant.file_id and model.meta.precision == "int8"
    )
    assert set(outs) == {"seg", "depth"} and all(np.isfinite(v).all() for v in outs.values())
    st = agent.status()  # what `edgecut agent status` shows
    assert st.artifact_id == o.aid and st.precision == "int8" and st.serving_file_id == o.variant.file_id
    printed = _timings_text(st.timings_json)  # `edgecut agent status`: precision  int8  (timed here: ...)
    assert printed.startswith("  (timed here: fp32 ") and ", int8 " in printed
    t = agent.telemetry()
    assert t.precision == "int8" and [x.precision for x in t.timings] == ["fp32", "int8"]


def test_a_device_whose_int8_variant_is_slower_keeps_fp32(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    o = offer(agent, tmp_path, "slower")
    result = agent.runtime.install(o.aid, [o.variant])
    assert result.ok and result.precision == "fp32"
    fp32, int8 = result.timings
    assert 0 < fp32.median_ms < int8.median_ms and not int8.note  # timed and eligible, only slower
    model, _, _ = agent.runtime.infer(IMG)
    assert model.meta.precision == "fp32" and model.file_id in ("", o.aid)
    assert not agent.store.has(o.variant.file_id)  # the swap's pruning drops the variant nobody serves


def test_a_faster_variant_whose_quality_is_not_vouched_for_keeps_fp32(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    o = offer(agent, tmp_path, "faster", change=-1.5)  # beyond the default 1 point
    assert "loses 1.50 points" in o.variant.note
    result = agent.runtime.install(o.aid, [o.variant])
    fp32, int8 = result.timings
    assert result.precision == "fp32" and int8.median_ms < fp32.median_ms and "loses" in int8.note


@pytest.mark.parametrize("fault", ["wrong sha", "not in the manifest", "tampered on disk"])
def test_an_unsigned_or_mismatching_variant_is_refused_and_fp32_serves(tmp_path: Path, fault: str) -> None:
    agent = agent_at(tmp_path)
    o = offer(agent, tmp_path, "faster", sha="0" * 64 if fault == "wrong sha" else "")
    v = o.variant
    if fault == "not in the manifest":  # another genuine model's file, handed over as a variant
        other = offer(agent, tmp_path, "slower", tasks=("seg",))
        v = other.variant
    if fault == "tampered on disk":
        data = bytearray(v.path.read_bytes())
        data[-1] ^= 1
        v.path.write_bytes(bytes(data))
    result = agent.runtime.install(o.aid, [v])
    assert result.ok and result.precision == "fp32"
    dropped = result.timings[1]
    assert dropped.median_ms == 0 and dropped.note.startswith("dropped")
    assert (
        ("not a variant" in dropped.note) if fault == "not in the manifest" else ("tampered" in dropped.note)
    )
    assert not v.path.exists()  # never loaded, not kept


def test_a_restart_and_a_rollback_serve_the_precision_that_served(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    a = offer(agent, tmp_path, "faster")
    assert agent.runtime.install(a.aid, [a.variant]).precision == "int8"
    b = offer(agent, tmp_path, "slower", tasks=("seg",))
    assert agent.runtime.install(b.aid, [b.variant]).precision == "fp32"

    back = agent.runtime.rollback()  # to a: in int8, as it served
    assert back.ok and back.artifact_id == a.aid and back.precision == "int8"
    assert [t.precision for t in back.timings] == ["fp32", "int8"]  # the timings measured at its swap

    again = agent_at(tmp_path)  # a restart: the recorded model in its recorded precision
    restored = again.runtime.restore()
    assert restored is not None and restored.artifact_id == a.aid and restored.precision == "int8"
    assert again.status().precision == "int8"


def test_a_restart_whose_variant_file_is_damaged_serves_fp32(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    a = offer(agent, tmp_path, "faster")
    assert agent.runtime.install(a.aid, [a.variant]).precision == "int8"
    a.variant.path.write_bytes(b"not an onnx model")
    again = agent_at(tmp_path)
    restored = again.runtime.restore()
    assert restored is not None and restored.ok and restored.artifact_id == a.aid
    assert restored.precision == "fp32" and again.store.served(a.aid)["file"] == ""  # not tried again


def test_unvouched_names_the_task_and_the_loss() -> None:
    v = fleet_pb2.ModelVariant(precision="int8")
    v.task_changes["seg"] = -0.4
    assert unvouched(v, ["seg"], 1.0) == ""
    assert "no int8 change for 'depth'" in unvouched(v, ["seg", "depth"], 1.0)
    v.task_changes["depth"] = float("nan")
    assert "'depth' loses" in unvouched(v, ["seg", "depth"], 1.0)


def test_choose_needs_a_clear_gain_and_an_eligible_variant() -> None:
    def t(p: str, ms: float, note: str = "") -> Timing:
        return Timing(p, p, ms, 35, note)

    assert choose([t(FP32, 2.0), t("int8", 1.0)]) == 1
    assert choose([t(FP32, 2.0), t("int8", 1.97)]) == 0  # within 5 %: noise, fp32 stays
    assert choose([t(FP32, 2.0), t("int8", 1.0, "loses 2 points")]) == 0
    assert choose([t(FP32, 2.0), t("int8", 0.0, "dropped: x")]) == 0
    assert choose([t(FP32, 2.0), t("int8", 1.5), t("fp16", 1.2)]) == 2
