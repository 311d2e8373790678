"""Every mistake a user can make ends in one sentence on stderr and a non-zero exit code, no traceback:
a bad model, a bad folder, an impossible budget, a shape mismatch, labels a method needs, a bug in the
user's own code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecut.cli import main
from edgecut.server.mtl import build_model, checkpoint
from edgecut.server.mtl.tasks import TaskSpec
from edgecut_bench.scene_folder import write_scene_folder

USER = """
import torch
import torch.nn.functional as F
from torch import nn
from edgecut.server.mtl.contract import MultiTaskModel


class Head(nn.Module):
    def __init__(self, spec, stride):
        super().__init__()
        self.out = nn.Conv2d(8, spec.channels, 1, stride=stride)
        self.dense = spec.dense

    def forward(self, feats):
        y = self.out(feats[0])
        return y if self.dense else y.mean(dim=(2, 3))


class Net(MultiTaskModel):
    def __init__(self, tasks, input_size=16, stride=1, fail_in_training=False):
        super().__init__(tasks, input_size)
        self.stride, self.fail_in_training = stride, fail_in_training
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.heads = nn.ModuleDict({t.name: Head(t, stride) for t in tasks})

    def forward(self, x):
        if self.training and self.fail_in_training:
            raise RuntimeError("the user's own bug")
        return super().forward(x)

    def config(self):
        return {"input_size": self.input_size, "stride": self.stride, "fail_in_training": self.fail_in_training}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "errmodels.py").write_text(USER)
    write_scene_folder(tmp_path / "data", 12, 1, 16, ("seg", "slant", "count"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop("errmodels", None)


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run `edgecut argv`; it must exit non-zero with exactly one line on stderr, no traceback."""
    code = main([*argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and " WARNING " not in line]
    assert code != 0, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _checkpoint(home: Path, **config: object) -> Path:
    tasks = [
        TaskSpec("seg", "segmentation", 6),
        TaskSpec("slant", "regression", 1),
        TaskSpec("count", "classification", 5),
    ]
    path = home / "m.pt"
    checkpoint.save(path, build_model("errmodels:Net", tasks=tasks, **config))
    return path


def test_a_model_that_cannot_be_imported(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, "train", "--model", "nosuchmodels:Net", "--data", "data", "--image-size", "16")
    assert "cannot import model module 'nosuchmodels'" in line
    ckpt = _checkpoint(home)
    line = fails(capsys, "prune", "--model", "errmodels:Nett", "--checkpoint", str(ckpt), "--tasks", "seg",
                 "--budget", "macs=0.5", "--calib-data", "data")  # fmt: skip
    assert "module 'errmodels' has no 'Nett'" in line


def test_a_bad_folder_and_a_bad_image(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no dataset folder at" in fails(capsys, "train", "--model", "errmodels:Net", "--data", "nowhere")
    np.save(home / "data" / "images" / "00003.npy", np.full((16, 16, 3), 200.0, np.float32))
    (home / "data" / "images" / "00003.png").unlink()
    line = fails(capsys, "train", "--model", "errmodels:Net", "--data", "data", "--image-size", "16")
    assert "00003.npy holds values from 200 to 200, outside [0, 1]" in line and "--image-scale" in line


def test_a_head_of_the_wrong_size(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, "train", "--model", "errmodels:Net", "--model-config", '{"stride": 2}', "--data", "data",
                 "--image-size", "16")  # fmt: skip
    assert "head 'seg' (segmentation, 6 channels) returns [2, 6, 8, 8]" in line
    assert "must return [2, 6, 16, 16]" in line


def test_an_impossible_budget_names_the_layer_and_the_reachable_size(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(home)
    line = fails(capsys, "prune", "--checkpoint", str(ckpt), "--tasks", "seg,count", "--budget", "max_macs=10",
                 "--calib-data", "data", "--recover-steps", "0")  # fmt: skip
    assert "budget max_macs=10 cannot be met for tasks count, seg: the smallest model keeps" in line
    assert "its largest layer, " in line and "ask for at least macs=" in line


def test_a_model_with_no_known_data_is_not_calibrated_on_synthetic_scenes(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 27: without --calib-data a user's model was calibrated on synthetic scenes (Δm -63 ... -88 %)."""
    ckpt = _checkpoint(home)
    sentence = (
        "error: m.pt does not record which images its model was trained on: pass --calib-data FOLDER with "
        "images like them (or --calib-data synthetic to calibrate on edgecut's synthetic scenes)"
    )
    assert (
        fails(capsys, "prune", "--checkpoint", str(ckpt), "--tasks", "seg", "--budget", "macs=0.5")
        == sentence
    )
    line = fails(
        capsys, "bench", "prune", "--checkpoint", str(ckpt), "--tasks", "seg", "--quick", "--out", ""
    )
    assert line == sentence


def test_labels_a_method_needs_and_a_bug_in_the_users_code(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(home)
    line = fails(
        capsys,
        "prune",
        "--checkpoint",
        str(ckpt),
        "--tasks",
        "slant,count",
        "--budget",
        "macs=0.5",
        "--method",
        "snip-union",
        "--recover-steps",
        "0",
        "--calib-data",
        "synthetic",
    )  # fmt: skip  (synthetic calibration: no slant)
    assert "scoring with labelled losses needs labels for slant" in line
    line = fails(capsys, "train", "--model", "errmodels:Net", "--model-config", '{"fail_in_training": true}',
                 "--data", "data", "--image-size", "16", "--epochs", "1")  # fmt: skip
    assert line == "error: unexpected RuntimeError: the user's own bug (rerun with -v for the traceback)"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--budgets", "0.5,2"), "--budgets must be in (0, 1]"),
        (("--budgets", "half"), "--budgets must be numbers"),
        (("--task-sets", "seg;;depth"), "--task-sets must be task lists"),
        (("--refine-steps", "100,x"), "--refine-steps must be integers or 'engine'"),
        (("--scratch-epochs", "0"), "--scratch-epochs must be positive"),
    ],
)
def test_bench_quality_options_are_checked_before_any_work(
    home: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    line = fails(capsys, "bench", "quality", "--out", "", "--plot", "", *argv)
    assert says in line


def test_train_with_a_task_the_data_lacks_or_a_negative_patience(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = fails(capsys, "train", "--model", "errmodels:Net", "--data", "data", "--tasks", "seg,sky")
    assert "the training data has no task sky (it has: seg, slant, count)" in line
    line = fails(capsys, "train", "--model", "errmodels:Net", "--data", "data", "--patience", "-1")
    assert "--patience must be 0" in line
