"""`edgecut prune`: the recovery's steps decide; a time limit only when the user asks for one, and the
output says when it cut the steps short (issue 29: the same command gave Δm -6.44 % with 200 steps on
a quiet machine and -11.22 % with the 116 a loaded one fitted in the old default of 120 s)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgecut.cli import main
from edgecut_bench.scene_folder import write_scene_folder
from tests.unit.cli.test_cli_errors import USER, _checkpoint, fails


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a tiny user model (test_cli_errors's) and 12 labelled scenes."""
    (tmp_path / "errmodels.py").write_text(USER)
    write_scene_folder(tmp_path / "data", 12, 1, 16, ("seg", "slant", "count"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


ARGS = ("--tasks", "seg", "--budget", "macs=0.5", "--calib-data", "data", "--recover-steps", "4")


def test_without_a_time_limit_every_recovery_step_runs(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(home)
    assert main(["prune", "--checkpoint", str(ckpt), *ARGS, "--out", "m.onnx"]) == 0
    out = capsys.readouterr().out
    assert "recovery: 4 steps" in out and "time limit" not in out
    assert json.loads((home / "m.json").read_text())["recovery_steps"] == 4


def test_a_time_limit_that_cuts_recovery_short_is_said(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(home)
    argv = ["prune", "--checkpoint", str(ckpt), *ARGS, "--recover-seconds", "1e-9", "--out", "m.onnx"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich may wrap the line
    assert "recovery: 1 of 4 steps (1e-09 s time limit): stopped by --recover-seconds" in out


def test_a_time_limit_must_be_positive(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _checkpoint(home)
    line = fails(capsys, "prune", "--checkpoint", str(ckpt), *ARGS, "--recover-seconds", "0")
    assert line == "error: --recover-seconds must be positive (leave it out for no time limit)"
