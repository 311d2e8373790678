"""`edgecut agent run` with `providers:` in agent.yaml: the process serves its model on the CPU when a
configured provider is missing or fails, logs it once, and `edgecut agent status` says what it runs on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecut.agent.artifacts import ModelStore
from edgecut.broker import free_port
from tests.support.agent_helpers import put
from tests.support.keys import fleet_key
from tests.support.onnx_models import build_model
from tests.support.processes import child_log, log_tail, stop
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# the agent's own entry point, with onnxruntime's sessions failing for the Azure provider (which this
# build really has): what a Jetson's TensorRT provider does when its engine cannot be built
AZURE_FAILS = """
import sys
import onnxruntime as ort

class Session(ort.InferenceSession):
    def __init__(self, path, opts=None, providers=None, **kw):
        if providers and providers[0] == "AzureExecutionProvider":
            raise RuntimeError("provider init failed: no endpoint configured")
        super().__init__(path, opts, providers=providers, **kw)

ort.InferenceSession = Session
from edgecut.agent.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("yaml", "args", "entry", "logged", "runs_on"),
    [
        (  # given on the command line
            "",
            ["--providers", "cuda,cpu"],
            ["-m", "edgecut.agent"],
            "CUDAExecutionProvider is not in this onnxruntime build",
            "runs on     CPUExecutionProvider\n",
        ),
        (  # given in agent.yaml
            "providers: [azure, cpu]\n",
            [],
            ["-c", AZURE_FAILS],
            "AzureExecutionProvider failed (onnxruntime cannot load it: provider init failed",
            "runs on     CPUExecutionProvider (AzureExecutionProvider failed (",
        ),
    ],
    ids=["missing-from-build", "fails-at-load"],
)
def test_agent_process_serves_on_cpu_and_says_so(
    tmp_path: Path, yaml: str, args: list[str], entry: list[str], logged: str, runs_on: str
) -> None:
    state = tmp_path / "state"
    store = ModelStore(state)
    aid = put(store, build_model(["seg"]))
    store.record_swap(aid)  # served before the restart: restored from disk at start
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(  # no broker listens there: the agent serves from disk and keeps retrying
        f"device_id: jetson-1\nbroker_url: mqtt://127.0.0.1:{free_port()}\nstate_dir: {state}\n"
        f"listen: 127.0.0.1:0\ntasks: [seg]\nort_threads: 1\nfleet_keys: ['{fleet_key().public_text}']\n"
        + yaml
    )
    log = child_log("agent")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, *entry, "agent", "run", "--config", str(cfg), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_until(lambda: (state / "api_address").exists() or proc.poll() is not None, 60)
        assert proc.poll() is None, log_tail(log)
        status = subprocess.run(
            [sys.executable, "-m", "edgecut.agent", "agent", "status", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert f"model       {aid[:16]}" in status.stdout
        assert runs_on in status.stdout
        lines = [line for line in log_tail(log, 100_000).splitlines() if "Provider" in line]
        assert len(lines) == 1 and logged in lines[0], lines
    finally:
        stop(proc)
        log.close()
