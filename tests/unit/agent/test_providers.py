"""Execution providers: the config's list resolved against this onnxruntime build, and the CPU fallback
when a provider fails, on the real runtime loading real ONNX models (only the CPU provider runs here)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgecut.agent import providers
from edgecut.agent.agent import Agent
from edgecut.agent.artifacts import ModelStore
from edgecut.agent.runtime import Runtime, SessionFactory
from edgecut.agent.settings import load_settings
from edgecut.errors import ConfigError
from tests.support.agent_helpers import put
from tests.support.onnx_models import build_model

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
IMG = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)


def failing_on(bad: str, at: str = "create") -> SessionFactory:
    """onnxruntime's own sessions, except that `bad` fails at session creation or at its first run."""

    class WarmUpFails(ort.InferenceSession):
        def run(self, *args: object, **kwargs: object) -> list[np.ndarray]:
            raise RuntimeError(f"{bad}: CUDA failure 2: out of memory")

    def factory(path: str, opts: ort.SessionOptions, wanted: list[str]) -> ort.InferenceSession:
        if wanted[0] != bad:
            return ort.InferenceSession(path, opts, providers=wanted)
        if at == "create":
            raise RuntimeError(f"Failed to create {bad}: libcudnn.so.9: cannot open shared object file")
        return WarmUpFails(path, opts, providers=[CPU])

    return factory


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_auto_takes_this_builds_local_providers_and_ends_with_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert providers.resolve("auto") == [CPU]  # this build also has Azure's: remote, never chosen
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])  # a Jetson build
    assert providers.resolve("auto") == [TRT, CUDA, CPU]
    assert providers.resolve([CUDA]) == [CUDA, CPU]  # CPU is always the last resort
    assert providers.fallbacks([TRT, CUDA, CPU]) == [[TRT, CUDA, CPU], [CUDA, CPU], [CPU]]


def test_a_provider_missing_from_this_build_is_skipped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert providers.resolve([TRT, CPU]) == [CPU]
    (line,) = _warnings(caplog)
    assert TRT in line and "not in this onnxruntime build" in line


def test_settings_take_short_names_and_refuse_unknown_ones() -> None:
    cfg = load_settings(None, environ={"EDGECUT_PROVIDERS": "tensorrt, cuda,cpu"}, device_id="d")
    assert cfg.providers == [TRT, CUDA, CPU]
    assert load_settings(None, environ={}, device_id="d").providers == "auto"
    with pytest.raises(ConfigError, match=r"providers = 'gpu': .*no onnxruntime execution provider"):
        load_settings(None, environ={}, device_id="d", providers="gpu")
    with pytest.raises(ConfigError, match="at least one provider"):
        load_settings(None, environ={}, device_id="d", providers=[])


@pytest.mark.parametrize("at", ["create", "warm-up"])
def test_a_failing_provider_falls_back_to_cpu_with_one_log_line(
    store: ModelStore, caplog: pytest.LogCaptureFixture, at: str
) -> None:
    rt = Runtime(store, threads=1, providers=[CUDA, CPU], session_factory=failing_on(CUDA, at))
    aid = put(store, build_model(["seg", "depth"]))
    with caplog.at_level(logging.WARNING):
        result = rt.install(aid)
    assert result.ok, result.reason
    model, outs, _ = rt.infer(IMG)
    assert model.providers == (CPU,) and np.isfinite(outs["seg"]).all()
    assert model.provider_note.startswith(f"{CUDA} failed (")
    (line,) = _warnings(caplog)
    assert CUDA in line and "it runs on CPUExecutionProvider" in line
    assert rt.providers_in_use() == [CPU]


def test_only_the_failing_provider_is_dropped(store: ModelStore, caplog: pytest.LogCaptureFixture) -> None:
    """TensorRT fails; the next list (CUDA, CPU) is asked for, and onnxruntime here enables only CPU."""
    rt = Runtime(store, threads=1, providers=[TRT, CUDA, CPU], session_factory=failing_on(TRT))
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match=f"{CUDA}' is not in available"):
        assert rt.install(put(store, build_model(["seg"]))).ok
    note = rt.slot.current.provider_note if rt.slot.current else ""
    assert note.startswith(f"{TRT} failed") and f"did not enable {CUDA}" in note
    assert len(_warnings(caplog)) == 1


def test_a_provider_onnxruntime_silently_leaves_out_is_reported(
    store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A GPU build without its CUDA libraries creates the session on the CPU without raising."""
    rt = Runtime(store, threads=1, providers=[CUDA, CPU])  # onnxruntime's own sessions
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match=f"{CUDA}' is not in available"):
        assert rt.install(put(store, build_model(["seg"]))).ok
    model = rt.slot.current
    assert model is not None and model.providers == (CPU,)
    assert model.provider_note == f"onnxruntime did not enable {CUDA} (its log says why)"
    assert len(_warnings(caplog)) == 1


def test_a_model_that_fails_on_cpu_too_is_refused_for_its_own_fault(
    store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    rt = Runtime(store, threads=1, providers=[CUDA, CPU], session_factory=failing_on(CUDA))
    good = put(store, build_model(["seg"]))
    assert rt.install(good).ok
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = rt.install(put(store, build_model(["seg"], fault="nan", seed=3)))
    assert not result.ok and "not finite" in result.reason  # the CPU's verdict, not the provider's
    assert rt.slot.current is not None and rt.slot.current.artifact_id == good
    assert not any("it runs on" in line for line in _warnings(caplog))


def test_needs_and_status_carry_the_providers_actually_used(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"device_id: pi-9\nstate_dir: {tmp_path}\ntasks: [seg]\nproviders: [cuda, cpu]\n")
    agent = Agent(load_settings(cfg, environ={}))
    # not the build's list (Azure, CPU): what the device will run its model on
    assert list(agent.needs().resources.ort_providers) == [CPU]
    st = agent.status()
    assert list(st.providers) == [] and st.provider_note == ""  # no model yet
