"""A user's model and data, end to end, with no change to edgecut (issue 16's "done when").

From a temporary folder outside the repository: the worked example of docs/models.md saved as the
user's own `mymodels.py`, a labelled folder with tasks declared in tasks.json (per-pixel classes, a
dense regression where 0 is a value, two image-level class tasks), then exactly

    edgecut train  --model mymodels:TinyMTL --data FOLDER
    edgecut prune  --model mymodels:TinyMTL --checkpoint ... --tasks A,B --budget macs=0.5 --val-data FOLDER
    edgecut server --model mymodels:TinyMTL ...   (a device asks over gRPC, the agent's runtime loads it)

Budgets: train + prune took 25 s on the shared 2-core machine, a server build 15 s; the limits leave
several times that.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgecut.agent.runtime import load_model
from edgecut.broker import free_port
from edgecut.v1 import fleet_pb2 as pb
from edgecut_bench.scene_folder import write_scene_folder
from tests.support.fleet_server import download, stub

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"
STEP_TIMEOUT_S = 300
MODEL = "mymodels:TinyMTL"
TASKS = ("seg", "slant", "count", "largest")


def _edgecut() -> list[str]:
    script = Path(sys.executable).parent / "edgecut"  # the installed console script, as a user runs it
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgecut.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "OMP_NUM_THREADS": "1", "EDGECUT_DATA_DIR": "state"}


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*_edgecut(), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=STEP_TIMEOUT_S
    )
    assert done.returncode == 0, f"edgecut {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


@contextmanager
def serving(cwd: Path, *args: str) -> Iterator[tuple[Any, list[str]]]:
    """`edgecut server ARGS` (no broker) in `cwd`: yields its gRPC stub and a list that holds the
    server's stderr once it stopped; the server must exit cleanly on SIGTERM."""
    port = free_port()
    server = subprocess.Popen(
        [*_edgecut(), "server", *args, "--broker", "", "--grpc", f"127.0.0.1:{port}"],
        cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    logs: list[str] = []
    try:
        channel, fleet = stub(f"127.0.0.1:{port}")
        with channel:
            grpc.channel_ready_future(channel).result(timeout=STEP_TIMEOUT_S)
            yield fleet, logs
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=60)
        logs.append(err)
    assert server.returncode == 0, err


def request_model(fleet: Any, tasks: list[str]) -> list[pb.JobProgress]:
    """The whole RequestModel stream for device cam-1 (an x86 device) asking for `tasks`."""
    request = pb.ModelRequest(device_id="cam-1", tasks=tasks, resources=pb.Resources(device_class="x86"))
    return list(fleet.RequestModel(request, timeout=STEP_TIMEOUT_S))


def worked_example() -> str:
    text = DOCS.read_text()
    section = text[text.index("## A complete worked example") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/models.md lost its worked example"
    return match.group(1)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("user")
    (home / "mymodels.py").write_text(worked_example())
    write_scene_folder(home / "data" / "train", 64, 1, 32, TASKS)
    write_scene_folder(home / "data" / "val", 24, 2, 32, TASKS)
    return home


def test_train_then_prune_a_model_outside_the_package_on_folder_data(user_dir: Path) -> None:
    _run(user_dir, "train", "--model", MODEL, "--data", "data", "--image-size", "32", "--epochs", "2",
         "--out", "tiny.pt")  # fmt: skip
    assert (user_dir / "tiny.pt").exists()
    trained = json.loads((user_dir / "tiny.metrics.json").read_text())
    assert set(trained["metrics"]) == set(TASKS)  # tasks and kinds came from the folder's tasks.json
    assert set(trained["metrics"]["slant"]) == {"abs_err", "rmse"}

    done = _run(user_dir, "prune", "--model", MODEL, "--checkpoint", "tiny.pt", "--tasks", "seg,count",
                "--budget", "macs=0.5", "--val-data", "data",
                "--recover-steps", "10", "--out", "out/seg-count.onnx")  # fmt: skip
    meta = json.loads((user_dir / "out" / "seg-count.json").read_text())
    assert meta["tasks"] == ["count", "seg"] and meta["macs"] < meta["full_macs"]
    assert meta["onnx_max_abs_diff"] < 1e-4
    assert set(meta["metrics"]) == {"count", "seg"} and "Δm vs original" in done.stdout
    assert load_model(user_dir / "out" / "seg-count.onnx", "seg-count").meta.tasks == ["count", "seg"]

    # image-level tasks only: the decoder no head of theirs reads is gone, not just pruned
    _run(user_dir, "prune", "--checkpoint", "tiny.pt", "--tasks", "count,largest", "--budget", "macs=0.5",
         "--val-data", "data", "--recover-steps", "0", "--out", "out/cls.onnx")  # fmt: skip
    cls = json.loads((user_dir / "out" / "cls.json").read_text())
    assert cls["macs"] < 0.5 * meta["macs"]


def test_the_server_tailors_the_user_model_for_a_device(user_dir: Path) -> None:
    if not (user_dir / "tiny.pt").exists():
        _run(user_dir, "train", "--model", MODEL, "--data", "data", "--image-size", "32", "--epochs", "1",
             "--out", "tiny.pt")  # fmt: skip
    with serving(user_dir, "--model", MODEL, "--checkpoint", "tiny.pt", "--val-data", "data",
                 "--state-dir", "server") as (fleet, logs):  # fmt: skip
        stream = request_model(fleet, ["largest", "slant"])
        assert stream[-1].stage == pb.JobProgress.READY, stream[-1]
        ready = stream[-1].ready
        path = user_dir / "device.onnx"
        path.write_bytes(download(fleet, ready.artifact_id))
    model = load_model(path, ready.artifact_id)  # the device's own checks: warm-up, shapes, finite
    assert model.meta.tasks == ["largest", "slant"] and model.meta.outputs["slant"].kind == "regression"
    assert set(model.meta.metrics) == {"largest", "slant"}
    [err] = logs
    assert "Traceback" not in err
