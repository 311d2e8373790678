"""`edgecut bench arm64`'s agent stage, with the agent on the host instead of the aarch64 root.

The same code path as the bench (config from the provisioning helper, broker + fleet server, the wait
for a served model, the inferences), so its faults are tested without qemu: a device provisioned with
the wrong fleet key must end the bench within a minute naming the refusal, not wait out --timeout.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import yaml

from edgecut.agent.watch import REFUSAL_GRACE_S, AgentStalled, AgentWatch
from edgecut_bench import arm64
from tests.support.keys import other_key
from tests.support.onnx_engine import OnnxTestEngine

pytestmark = [pytest.mark.integration, pytest.mark.broker]


def _result() -> arm64.Arm64Result:
    return arm64.Arm64Result(qemu_cpu="host", tasks=["seg", "depth"], device_class="rpi4")


def test_bench_agent_gets_the_fleet_key_and_serves(tmp_path: Path) -> None:
    root, result = tmp_path / "root", _result()
    arm64.run_agent(root, result, OnnxTestEngine(tmp_path / "engine"), 300, 120, arm64.Launcher.host(root))
    config = yaml.safe_load((root / "etc" / "edgecut" / "agent.yaml").read_text())
    assert len(config["fleet_keys"]) == 1 and config["fleet_keys"][0].startswith("ed25519:")
    assert result.artifact_id and result.model_bytes > 0 and len(result.infer_ms) == 12
    assert all(ms > 0 for ms in result.infer_ms) and result.rss_mb > 0


GRACE_S = 2.0


def test_bench_whose_agent_refuses_offers_fails_within_a_minute_naming_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refusal ends the run once it lasted the watch's grace (REFUSAL_GRACE_S, tests/unit/agent/
    # test_watch.py): a shorter one here, so the run is not 18 s of waiting; the minute is checked for
    # the default grace below.
    monkeypatch.setattr(arm64, "AgentWatch", functools.partial(AgentWatch, refusal_grace_s=GRACE_S))
    root = tmp_path / "root"
    t0 = time.monotonic()
    with pytest.raises(AgentStalled) as caught:
        arm64.run_agent(
            root,
            _result(),
            OnnxTestEngine(tmp_path / "engine"),
            timeout=1800,  # the old default: the refusal must end the run long before
            stall_s=300,
            launcher=arm64.Launcher.host(root),
            fleet_key=other_key().public_text,  # a device provisioned for another fleet
        )
    assert time.monotonic() - t0 - GRACE_S + REFUSAL_GRACE_S < 60  # with the default grace: within a minute
    message = str(caught.value)
    first = message.splitlines()[0]
    assert (
        first.startswith("the agent refused the model offered to it: signed by key")
        and "not trusted here" in first
    )
    # the agent's own log lines follow the sentence, so the reader sees where it stopped
    assert "last log lines" in first and "WARNING" in message.split("\n", 1)[1]
