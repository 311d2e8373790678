"""A user's model is calibrated on its own data, never silently on edgecut's synthetic scenes (issue 27).

Real `edgecut` processes from a folder outside the repository: the worked example of docs/models.md
trained on a tiny folder in the layout docs/models.md shows (data/images/... with data/val/ inside),
then prune and server with no --calib-data (they use the folder the checkpoint records), the refusals
(a checkpoint that records no data, a training folder that is gone) and the Δm floor, on prune and on a
device's request to the server.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from edgecut.v1 import fleet_pb2 as pb
from edgecut_bench.scene_folder import write_scene_folder
from tests.e2e.test_byo_model import (
    STEP_TIMEOUT_S,
    TASKS,
    _edgecut,
    _env,
    _run,
    request_model,
    serving,
    worked_example,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _refused(cwd: Path, *args: str) -> str:
    """The one-sentence refusal of `edgecut ARGS` (exit 2, no traceback)."""
    done = subprocess.run(
        [*_edgecut(), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=STEP_TIMEOUT_S
    )
    assert done.returncode == 2, f"edgecut {args[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0].removeprefix("error: ")


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("own-data")
    (home / "mymodels.py").write_text(worked_example())
    write_scene_folder(home / "data", 48, 1, 32, TASKS)  # the documented layout: images/ at the top
    write_scene_folder(home / "data" / "val", 16, 2, 32, TASKS)  # and val/ inside
    _run(home, "train", "--model", "mymodels:TinyMTL", "--data", "data", "--image-size", "32",
         "--epochs", "2", "--out", "tiny.pt")  # fmt: skip
    return home


def test_prune_calibrates_on_the_folder_the_model_was_trained_on(user_dir: Path) -> None:
    done = _run(user_dir, "prune", "--checkpoint", "tiny.pt", "--tasks", "seg,count", "--budget", "macs=0.5",
                "--recover-steps", "5", "--out", "out/seg-count.onnx")  # fmt: skip
    data = (user_dir / "data").resolve()
    assert f"calibrating on {data}, the folder tiny.pt was trained on" in " ".join(done.stdout.split())
    assert "Δm vs original" in done.stdout  # validated on data/val, the folder's own split
    assert (user_dir / "out" / "seg-count.onnx").exists()


def test_a_model_with_no_known_data_or_a_gone_folder_is_refused(user_dir: Path) -> None:
    doc = torch.load(user_dir / "tiny.pt", weights_only=True)
    del doc["trained_on"], doc["train_config"]  # weights trained elsewhere, loaded into a checkpoint
    torch.save(doc, user_dir / "elsewhere.pt")
    prune = ("prune", "--tasks", "count", "--budget", "macs=0.5", "--recover-steps", "0")
    assert _refused(user_dir, *prune, "--checkpoint", "elsewhere.pt") == (
        "elsewhere.pt does not record which images its model was trained on: pass --calib-data FOLDER with "
        "images like them (or --calib-data synthetic to calibrate on edgecut's synthetic scenes)"
    )
    # named, the user's folder (or the scenes) are used
    _run(user_dir, *prune, "--checkpoint", "elsewhere.pt", "--calib-data", "data", "--out", "out/c.onnx")
    server = ("server", "--checkpoint", "elsewhere.pt", "--broker", "", "--grpc", "127.0.0.1:0")
    assert "does not record which images" in _refused(user_dir, *server, "--state-dir", "s1")

    moved = user_dir / "moved"
    (user_dir / "data").rename(moved)
    try:
        assert _refused(user_dir, *prune, "--checkpoint", "tiny.pt") == (
            f"{(user_dir / 'data').resolve()}, the folder tiny.pt was trained on, is gone: pass --calib-data "
            "FOLDER with images like the ones it was trained on (or --val-data FOLDER)"
        )
    finally:
        moved.rename(user_dir / "data")


def test_a_build_below_the_delta_m_floor_fails_with_its_figures(user_dir: Path) -> None:
    # a floor no model can reach, so the refusal does not depend on how well a tiny model trained
    sentence = _refused(user_dir, "prune", "--checkpoint", "tiny.pt", "--tasks", "seg,count",
                        "--budget", "macs=0.5", "--recover-steps", "2", "--min-delta-m", "1e6",
                        "--out", "out/floor.onnx")  # fmt: skip
    assert sentence.startswith("the tailored model for count, seg at macs=0.5 lost too much: Δm ")
    assert "count " in sentence and "seg " in sentence and "is below the floor of +1000000 %" in sentence
    assert f"calibrated on {(user_dir / 'data').resolve()}, the folder tiny.pt was trained on" in sentence
    assert not (user_dir / "out" / "floor.onnx").exists()  # not shipped


def test_the_server_tells_the_device_and_logs_a_build_below_the_floor(user_dir: Path) -> None:
    with serving(user_dir, "--checkpoint", "tiny.pt", "--state-dir", "floor-server",
                 "--min-delta-m", "1e6") as (fleet, logs):  # fmt: skip
        last = request_model(fleet, ["count", "seg"])[-1]
        assert last.stage == pb.JobProgress.FAILED and last.error.code == pb.Error.BUILD_FAILED
        assert "lost too much" in last.error.message and "below the floor of +1000000 %" in last.error.message
        assert str(user_dir) not in last.error.message  # the server's folders are not the device's business
    [err] = logs
    data = (user_dir / "data").resolve()
    assert f"calibrating on {data}, the folder tiny.pt was trained on" in err
    [logged] = [line for line in err.splitlines() if "failed (BUILD_FAILED)" in line]
    assert " WARNING " in logged and "lost too much" in logged


def test_synthetic_scenes_only_when_asked_for_by_name(user_dir: Path) -> None:
    done = _run(user_dir, "prune", "--checkpoint", "tiny.pt", "--tasks", "count", "--budget", "macs=0.5",
                "--recover-steps", "0", "--calib-data", "synthetic", "--val-data", "data",
                "--min-delta-m", "off", "--out", "out/synthetic.onnx")  # fmt: skip
    assert "calibrating on edgecut's synthetic scenes, given by --calib-data" in done.stdout
