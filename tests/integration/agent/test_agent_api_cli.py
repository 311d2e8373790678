"""The local API (gRPC on loopback and on a unix socket) and the `edgecut agent ...` commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecut.agent import cli
from edgecut.agent.errors import AgentUnavailable, BadInput, NoModelError
from edgecut.agent.serve import AgentClient
from edgecut.agent.tasks import TaskStore
from tests.support.agent_helpers import put
from tests.support.onnx_models import build_model

pytestmark = pytest.mark.integration


def _with_model(agent, tasks: list[str]) -> str:
    aid = put(agent.store, build_model(tasks, seed=21))
    assert agent.runtime.install(aid).ok
    return aid


def test_api_on_a_unix_socket_and_its_error_codes(make_agent, tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    agent = make_agent(listen=f"unix:{sock}", tasks=["seg"])
    assert agent.api_address == f"unix:{sock}" and sock.exists()
    with AgentClient(agent.api_address) as client:
        with pytest.raises(NoModelError, match="no model"):
            client.infer(np.zeros((1, 3, 64, 64), np.float32))
        aid = _with_model(agent, ["seg", "count"])
        resp = client.infer(np.zeros((2, 3, 64, 64), np.float32))
        assert resp.artifact_id == aid and list(resp.outputs["count"].shape) == [2, 3]
        with pytest.raises(BadInput, match="does not match"):
            client.infer(np.zeros((1, 3, 32, 32), np.float32))
        with pytest.raises(BadInput):
            client.set_tasks(["bad/name"])
        st = client.status()
        assert st.inference_count == 1 and st.model_tasks == ["seg", "count"]


def test_local_api_refuses_a_non_loopback_address(make_agent) -> None:
    from edgecut.errors import ConfigError

    with pytest.raises(ConfigError, match="loopback"):
        make_agent(listen="0.0.0.0:0")


def test_cli_infer_prints_outputs_and_saves_pngs(make_agent, tmp_path: Path, capsys) -> None:
    agent = make_agent(tasks=["seg", "depth", "count"])
    aid = _with_model(agent, ["seg", "depth", "count"])
    img = tmp_path / "scene.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["agent", "infer", str(img), "--address", agent.api_address, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert aid[:16] in text and "count: class" in text and "seg: " in text and "depth: depth" in text
    seg = Image.open(out / "scene.seg.png")
    depth = Image.open(out / "scene.depth.png")
    assert seg.size == (64, 64) and seg.mode == "RGB"
    assert depth.mode == "L" and np.asarray(depth).max() == 255 and np.asarray(depth).min() == 0
    assert cli.main(["agent", "status", "--address", agent.api_address]) == 0
    assert "inferences  1" in capsys.readouterr().out


def test_cli_tasks_set_live_and_offline(make_agent, tmp_path: Path, capsys) -> None:
    agent = make_agent(tasks=["seg"])
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"device_id: {agent.device_id}\nstate_dir: {agent.settings.state_dir}\n")
    # the running agent wrote its bound address into the state dir; the CLI finds it via the config
    assert cli.main(["agent", "tasks", "set", "seg,depth", "--config", str(cfg)]) == 0
    assert agent.tasks.tasks == ["seg", "depth"]
    assert cli.main(["agent", "tasks", "show", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.strip().endswith("seg,depth")
    agent.stop()
    assert cli.main(["agent", "tasks", "set", "count", "--config", str(cfg)]) == 0
    assert "agent not running" in capsys.readouterr().out
    assert TaskStore(agent.settings.state_dir).tasks == ["count"]
    assert cli.main(["agent", "rollback", "--address", "127.0.0.1:1"]) == AgentUnavailable.exit_code
