"""`edgecut prune --precision` (issue 30): static INT8 checked per task replaces the dynamic `--int8`."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import onnx
import pytest

from edgecut.cli import main
from edgecut.server import engine
from tests.unit.cli.test_cli_errors import fails

# no distillation: what is checked is the precision paths, and each INT8 model is checked against the
# fp32 model of the same run (20 recovery steps cost a quarter of each prune and changed no assertion)
ARGS = ("--tasks", "seg,depth", "--budget", "macs=0.5", "--recover-steps", "0", "--min-delta-m", "off")


@pytest.fixture(autouse=True)
def fewer_scenes(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 calibration and 64 validation scenes (load_engine's n_calib / n_val, the demo's --quick sizes)
    instead of prune's 512 / 256: what is checked is which files each --precision writes and what it
    prints, not the figures. A prune took 11-12 s, now 5 s; the INT8 check still passes with room
    (int8 vs fp32: depth +0.06, seg +0.18 points of the 0.5 allowed; at 128 / 64, depth -0.47)."""
    monkeypatch.setattr(engine, "load_engine", functools.partial(engine.load_engine, n_calib=64, n_val=64))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")  # the rendered scenes are cached here across the tests


def _prune(data_dir: Path, out: Path, capsys: pytest.CaptureFixture[str], *more: str) -> str:
    assert main(["prune", *ARGS, "--data-dir", str(data_dir), "--out", str(out), *more]) == 0
    return " ".join(capsys.readouterr().out.split())  # rich wraps long lines


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_auto_writes_fp32_and_a_checked_int8_beside_it(data_dir, tmp_path, capsys) -> None:
    out = _prune(data_dir, tmp_path / "m.onnx", capsys)
    fp32, int8 = (
        json.loads((tmp_path / "m.json").read_text()),
        json.loads((tmp_path / "m.int8.json").read_text()),
    )
    assert fp32["precision"] == "fp32" and "QuantizeLinear" not in _ops(tmp_path / "m.onnx")
    assert (
        int8["precision"] == "int8"
        and int8["quantized"]
        and "QuantizeLinear" in _ops(tmp_path / "m.int8.onnx")
    )
    assert int8["size_bytes"] == (tmp_path / "m.int8.onnx").stat().st_size < fp32["size_bytes"]
    assert int8["build_key"] == fp32["build_key"] and int8["metrics"] != fp32["metrics"]
    # both printed with each task's change, ms timed here and size
    for name, precision in (("m.onnx", "fp32"), ("m.int8.onnx", "int8")):
        assert f"{tmp_path / name}: {precision} | Δm " in out
    assert out.count(" ms (batch 1, 1 thread, timed in turns here) | ") == 2 and out.count(" MB") >= 2
    assert "int8 vs fp32: depth " in out


def test_int8_writes_only_the_int8_model(data_dir, tmp_path, capsys) -> None:
    _prune(data_dir, tmp_path / "m.onnx", capsys, "--precision", "int8")
    assert json.loads((tmp_path / "m.json").read_text())["precision"] == "int8"
    assert "QuantizeLinear" in _ops(tmp_path / "m.onnx") and not (tmp_path / "m.int8.onnx").exists()


def test_fp32_does_not_quantise(data_dir, tmp_path, capsys) -> None:
    out = _prune(data_dir, tmp_path / "m.onnx", capsys, "--precision", "fp32")
    assert json.loads((tmp_path / "m.json").read_text())["precision"] == "fp32"
    assert not (tmp_path / "m.int8.onnx").exists() and "int8" not in out


def test_the_old_int8_flag_names_its_replacement(capsys) -> None:
    line = fails(capsys, "prune", *ARGS, "--int8")
    assert line.startswith("error: --int8 is gone") and "--precision int8" in line


def test_an_unknown_precision_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["prune", *ARGS, "--precision", "int4"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "invalid choice: 'int4'" in err and "Traceback" not in err
