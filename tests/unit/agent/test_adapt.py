"""The agent's statistics path (issue 31) without a broker: settings, the CPU governor, the summaries'
cadence and sequence, the offline rule (the latest summary only), and the proxy check's verdicts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecut.agent.adapt import Adapter, Governor, drift
from edgecut.agent.proxy import ProxyResult, compare
from edgecut.agent.settings import AgentSettings, load_settings
from edgecut.errors import ConfigError
from edgecut.model_meta import InputSpec, ModelMeta, OutputSpec
from edgecut.norm_stats import from_proto
from edgecut.v1 import fleet_pb2
from tests.support.waiting import wait_until


def test_adapt_is_off_by_default_and_set_by_yaml_env_or_flag(tmp_path: Path) -> None:
    assert load_settings(None, {}, device_id="d").adapt is False
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("device_id: d\nadapt: on\nadapt_images: 64\n")
    s = load_settings(cfg, {})
    assert s.adapt is True and s.adapt_images == 64 and s.adapt_batch == 16 and s.adapt_cpu_share == 0.05
    assert load_settings(None, {"EDGECUT_ADAPT": "on"}, device_id="d").adapt is True
    assert load_settings(cfg, {"EDGECUT_ADAPT": "off"}).adapt is False
    cfg.write_text("device_id: d\nadapt: sometimes\n")
    with pytest.raises(ConfigError, match="adapt = 'sometimes'"):
        load_settings(cfg, {})
    cfg.write_text("device_id: d\nadapt_cpu_share: 2\n")
    with pytest.raises(ConfigError, match="adapt_cpu_share"):
        load_settings(cfg, {})


def test_the_governor_keeps_the_cpu_share_however_fast_batches_come() -> None:
    now = [0.0]
    gov = Governor(0.05, clock=lambda: now[0])
    ran = 0
    for _ in range(10_000):  # a batch every 10 ms for 100 s, each costing 20 ms of CPU
        now[0] += 0.01
        if gov.allow():
            gov.spend(0.02)
            ran += 1
    assert gov.used_share() <= 0.05
    assert ran >= 0.9 * 0.05 * 100 / 0.02  # and it does use its share


def test_a_run_dearer_than_the_bucket_holds_still_runs_within_its_share() -> None:
    """On a slow device one statistics run (1 s) costs more than the bucket may bank (5 % x 10 s): it waits
    for a full bucket and runs, instead of never running again."""
    now = [0.0]
    gov = Governor(0.05, clock=lambda: now[0])
    ran = 0
    for _ in range(6000):  # a batch every 100 ms for 600 s
        now[0] += 0.1
        if gov.allow():
            gov.spend(1.0)
            ran += 1
    assert ran >= 20  # about one run per 20 s
    assert gov.used_share() <= 0.05 + 1.0 / 600  # within its share, give or take the last run


class FakeStats:
    """A statistics companion's outputs for one 'conv' layer and the input, computed in numpy."""

    file_id = "c" * 64
    layers = ("input", "conv")

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        m, v = batch.mean(axis=(0, 2, 3)), batch.var(axis=(0, 2, 3))
        return {"input.mean": m, "input.var": v, "conv.mean": 2 * m, "conv.var": 4 * v}


clock_ms = [1000]  # the wall clock the summaries' sequence may not fall below


def _adapter(tmp_path: Path, sent: list[fleet_pb2.StatsSummary], online: list[bool], **kw: Any) -> Adapter:
    fields: dict[str, Any] = dict(
        device_id="dev",
        state_dir=tmp_path,
        adapt=True,
        adapt_batch=4,
        adapt_every=4,
        adapt_images=16,
        adapt_cpu_share=1.0,
    )
    fields.update(kw)

    def publish(msg: fleet_pb2.StatsSummary) -> bool:
        if online[0]:
            sent.append(msg)
        return online[0]

    adapter = Adapter(AgentSettings(**fields), publish, lambda: clock_ms[0])
    adapter.start()
    return adapter


def _feed(adapter: Adapter, artifact: str, n: int, scale: float = 1.0) -> None:
    rng = np.random.default_rng(n)
    for _ in range(n // adapter.batch_size):
        before = adapter.measured
        adapter.observe(artifact, rng.uniform(0, scale, (adapter.batch_size, 3, 8, 8)).astype(np.float32))
        wait_until(lambda before=before: adapter.measured > before)  # one batch at a time: none skipped


def test_a_summary_every_n_measured_inputs_with_a_sequence_that_survives_a_restart(tmp_path: Path) -> None:
    sent: list[fleet_pb2.StatsSummary] = []
    adapter = _adapter(tmp_path, sent, [True])
    adapter.switch("a" * 64, FakeStats())  # type: ignore[arg-type]
    _feed(adapter, "a" * 64, 12)
    assert sent == []
    _feed(adapter, "a" * 64, 4)
    wait_until(lambda: len(sent) == 1)
    layers = from_proto(sent[0])
    assert set(layers) == {"input", "conv"} and sent[0].images == 16 and sent[0].sequence == 1000
    assert sent[0].artifact_id == "a" * 64 and sent[0].device_id == "dev"
    np.testing.assert_allclose(layers["conv"][0], 2 * layers["input"][0], rtol=1e-2)
    assert 0.3 < float(layers["input"][0].mean()) < 0.7  # uniform [0, 1) inputs
    adapter.stop()
    again = _adapter(tmp_path, sent, [True])
    again.switch("a" * 64, FakeStats())  # type: ignore[arg-type]
    _feed(again, "a" * 64, 16)
    wait_until(lambda: len(sent) == 2)
    assert sent[1].sequence == 1001
    again.stop()
    (tmp_path / "adapt.json").unlink()  # a wiped state dir: the clock keeps the sequence growing
    clock_ms[0] = 5000
    wiped = _adapter(tmp_path, sent, [True])
    wiped.switch("a" * 64, FakeStats())  # type: ignore[arg-type]
    _feed(wiped, "a" * 64, 16)
    wait_until(lambda: len(sent) == 3)
    assert sent[2].sequence == 5000
    wiped.stop()
    clock_ms[0] = 1000


def test_inputs_of_another_model_are_not_measured_and_a_swap_starts_anew(tmp_path: Path) -> None:
    sent: list[fleet_pb2.StatsSummary] = []
    adapter = _adapter(tmp_path, sent, [True])
    adapter.switch("a" * 64, FakeStats())  # type: ignore[arg-type]
    adapter.observe("b" * 64, np.zeros((4, 3, 8, 8), np.float32))  # served by another model
    assert adapter.measured == 0 and len(adapter.recent()) == 4  # held for the proxy all the same
    _feed(adapter, "a" * 64, 12)
    adapter.switch("b" * 64, FakeStats())  # type: ignore[arg-type]
    _feed(adapter, "b" * 64, 12)
    assert sent == [] and adapter.measured == 12  # 12 + 12 over two models: no summary of 16
    adapter.stop()


def test_offline_only_the_latest_summary_is_kept_and_sent_on_reconnect(tmp_path: Path) -> None:
    sent: list[fleet_pb2.StatsSummary] = []
    online = [False]
    adapter = _adapter(tmp_path, sent, online)
    adapter.switch("a" * 64, FakeStats())  # type: ignore[arg-type]
    _feed(adapter, "a" * 64, 16)
    _feed(adapter, "a" * 64, 16, scale=0.2)  # night came
    wait_until(lambda: adapter.status()["sequence"] == 1001)
    assert sent == [] and adapter.status()["pending"]
    online[0] = True
    adapter.flush()  # what the agent does on reconnect
    assert [m.sequence for m in sent] == [1001] and not adapter.status()["pending"]
    assert adapter.status()["drift"] > 0.5  # the dimmer inputs moved every channel's mean
    adapter.flush()
    assert len(sent) == 1
    adapter.stop()


class Recorder(FakeStats):
    """FakeStats that keeps every batch it was given."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(batch.copy())
        return super().run(batch)


def test_a_statistics_run_measures_a_sample_spread_over_a_time_ordered_stream(tmp_path: Path) -> None:
    """Frames come in time order (here: frame k is uniformly k / 256 bright): a run measures a uniform
    sample of the `adapt_every` frames since the last run, not the last `adapt_batch` consecutive ones."""
    sent: list[fleet_pb2.StatsSummary] = []
    adapter = _adapter(tmp_path, sent, [True], adapt_batch=16, adapt_every=256, adapt_images=16)
    stats = Recorder()
    adapter.switch("a" * 64, stats)  # type: ignore[arg-type]
    for k in range(256):
        adapter.observe("a" * 64, np.full((1, 3, 4, 4), k / 256, np.float32))
    wait_until(lambda: adapter.measured == 16)
    [batch] = stats.batches
    seen = sorted(round(float(x[0, 0, 0]) * 256) for x in batch)
    assert len(set(seen)) == 16  # each frame at most once
    # spread over the whole stream (both halves; the last 16 frames alone would be 240..255)
    assert seen[0] < 128 <= seen[-1] and seen[0] < 240
    assert len(adapter.recent()) == 16
    adapter.stop()


def test_the_window_stays_recent_while_nothing_is_measured(tmp_path: Path) -> None:
    """Without a companion nothing is measured, but the proxy check still needs recent inputs: the
    sampling restarts every `adapt_every` inputs all the same, so old ones do not linger."""
    sent: list[fleet_pb2.StatsSummary] = []
    adapter = _adapter(tmp_path, sent, [True], adapt_batch=16, adapt_every=64)
    adapter.switch("a" * 64, None, "no companion")
    for _ in range(1000):
        adapter.observe("a" * 64, np.zeros((1, 3, 4, 4), np.float32))
    for _ in range(64):
        adapter.observe("a" * 64, np.ones((1, 3, 4, 4), np.float32))
    held = adapter.recent()
    assert len(held) == 16 and bool((held == 1.0).all()) and adapter.measured == 0
    adapter.stop()


def test_a_summary_above_the_broker_limit_is_not_counted_as_sent(tmp_path: Path) -> None:
    class Wide(FakeStats):
        def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            wide = np.linspace(0, 1, 8000, dtype=np.float32)  # 8000 channels: ~32 KB in float16
            return {**super().run(batch), "conv.mean": wide, "conv.var": wide + 1}

    sent: list[fleet_pb2.StatsSummary] = []
    adapter = _adapter(tmp_path, sent, [True])
    adapter.switch("a" * 64, Wide())  # type: ignore[arg-type]
    _feed(adapter, "a" * 64, 16)
    wait_until(lambda: adapter.status()["refused"] == 1)
    st = adapter.status()
    assert sent == [] and st["summaries"] == 0 and st["last_bytes"] == 0 and not st["pending"]
    adapter.stop()


def test_a_summary_flushed_by_a_reconnect_and_a_measurement_at_once_is_sent_once(tmp_path: Path) -> None:
    sent: list[fleet_pb2.StatsSummary] = []
    online = [False]
    adapter = _adapter(tmp_path, sent, online)
    adapter.switch("a" * 64, FakeStats())  # type: ignore[arg-type]
    _feed(adapter, "a" * 64, 16)
    wait_until(lambda: adapter.status()["pending"])
    handing, release = threading.Event(), threading.Event()

    def slow_publish(msg: fleet_pb2.StatsSummary) -> bool:  # the broker takes its time to take it
        handing.set()
        release.wait(10)
        sent.append(msg)
        return True

    adapter.publish = slow_publish
    first = threading.Thread(target=adapter.flush)
    first.start()
    assert handing.wait(10)
    handing.clear()
    second = threading.Thread(target=adapter.flush)  # e.g. the reconnect while the first is handed over
    second.start()
    second.join(0.5)
    release.set()
    first.join(10)
    second.join(10)
    assert len(sent) == 1 and adapter.status()["summaries"] == 1
    adapter.stop()


def test_with_adapt_off_nothing_is_held_or_measured(tmp_path: Path) -> None:
    sent: list[fleet_pb2.StatsSummary] = []
    adapter = _adapter(tmp_path, sent, [True], adapt=False)
    adapter.switch("a" * 64, FakeStats())  # type: ignore[arg-type]
    for _ in range(8):
        adapter.observe("a" * 64, np.zeros((4, 3, 8, 8), np.float32))
    assert len(adapter.recent()) == 0 and adapter.measured == 0 and sent == []
    assert not (tmp_path / "adapt.json").exists()


def test_drift_is_zero_for_the_same_statistics() -> None:
    layers = {"x": (np.ones(3), np.ones(3))}
    assert drift(layers, layers) == 0.0
    assert drift({"x": (np.full(3, 3.0), np.ones(3))}, layers) == pytest.approx(2.0, rel=1e-3)


class Model:
    """A loaded model's stand-in: seg logits from the image times `gain`, plus a depth output."""

    def __init__(self, gain: float, tasks: tuple[str, ...] = ("seg", "depth")) -> None:
        self.gain = gain
        self.meta = ModelMeta(
            base_model="t",
            tasks=list(tasks),
            input=InputSpec(shape=[None, 3, 8, 8], mean=[0.0] * 3, std=[1.0] * 3),
            outputs={
                "seg": OutputSpec(name="seg", kind="segmentation", shape=[None, 3, 8, 8]),
                "depth": OutputSpec(name="depth", kind="depth", shape=[None, 1, 8, 8]),
            },
            params=1,
            macs=1,
            full_params=1,
            full_macs=1,
        )

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return {"seg": image * self.gain, "depth": image[:, :1] * 2}


def test_the_proxy_says_a_model_that_lost_its_confidence_is_clearly_worse() -> None:
    images = np.random.default_rng(0).normal(0, 1, (8, 3, 8, 8)).astype(np.float32)
    same = compare(Model(20.0), Model(20.0), images)
    assert same.agreement == 1.0 and same.worse(0.5, 0.15) == ""
    flat = compare(Model(0.01), Model(20.0), images)  # near-uniform logits: the same arg-max, unsure
    assert flat.entropy_new > 0.9 > 0.2 > flat.entropy_old
    assert "entropy" in flat.worse(0.5, 0.15)
    flipped = compare(Model(-20.0), Model(20.0), images)  # confident, but of the opposite opinion
    assert flipped.agreement < 0.6 and "agrees" in flipped.worse(0.7, 0.15)
    few = compare(Model(0.01), Model(20.0), images[:2])
    assert few.note and few.worse(0.5, 0.15) == ""  # two inputs say nothing: no rollback on them


def test_agent_status_prints_one_adapt_line_with_what_it_measures_or_why_not() -> None:
    import json

    from edgecut.agent.cli import _adapt_text

    off = _adapt_text(
        json.dumps({"statistics": "", "note": "the model's signed manifest carries no companion"})
    )
    assert off == "on, not measuring: the model's signed manifest carries no companion"
    st = {
        "statistics": "c" * 64,
        "measured": 48,
        "skipped": 16,
        "summaries": 1,
        "sequence": 7,
        "cpu_share": 0.0123,
        "proxy": {"images": 16, "agreement": 0.93, "entropy_old": 0.4, "entropy_new": 0.45, "note": ""},
    }
    line = _adapt_text(json.dumps(st))
    assert "48 inputs measured, 16 skipped, 1 summaries sent (sequence 7), CPU share 1.2 %" in line
    assert "agreement 93%, entropy 0.40 -> 0.45 on 16 inputs" in line


def test_a_refusal_for_too_little_agreement_never_reads_as_meeting_the_bar() -> None:
    # seen in a loaded demo: "agrees ... on 50% ... (at least 50% needed)" for 49.x %
    said = ProxyResult(images=16, agreement=0.4969).worse(min_agreement=0.5, max_entropy_rise=0.5)
    assert "on 49.7% of 16 recent inputs' predictions (at least 50% needed)" in said
