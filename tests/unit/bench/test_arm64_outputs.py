"""bench arm64's output check without qemu: the "root" side runs on this host too (the real check runs
in tests/e2e/test_bench_arm64_smoke.py). Equal outputs pass with zero differences; outputs that differ
beyond the tolerances (fp32 element-wise, any precision's task metrics) fail naming precision and task."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgecut.errors import ConfigError
from edgecut.server.cut.decompose import decompose
from edgecut.server.cut.export import export_onnx, plain_meta
from edgecut.server.mtl import checkpoint
from edgecut.server.paths import PACKAGED_REFERENCE
from edgecut_bench import arm64
from edgecut_bench.arm64_outputs import FP32_TOLERANCE, OutputMatch, check

TASKS = ["seg", "depth"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A root holding the served seg+depth reference, as the agent stored it."""
    root = tmp_path_factory.mktemp("root")
    model = decompose(checkpoint.load(PACKAGED_REFERENCE), TASKS).eval()
    path = root / "var" / "lib" / "edgecut" / "models" / "m.onnx"
    export_onnx(model, plain_meta(model, "reference"), path)
    return root, path


def on_host(tamper: Callable[[dict[str, np.ndarray]], None] | None = None) -> Callable[..., str]:
    """Run the root's command with this host's Python, its paths under `root`; then `tamper` its outputs."""

    def run(root: Path, program: str, *args: str) -> str:
        assert program == "python"
        files = [str(root) + a for a in args]
        subprocess.run([sys.executable, *files], check=True)
        if tamper is not None:
            with np.load(files[2]) as saved:
                outs = dict(saved)
            tamper(outs)
            np.savez(files[2], **outs)
        return ""

    return run


def test_equal_outputs_pass_and_fill_the_table(served: tuple[Path, Path]) -> None:
    root, model = served
    matches = check(root, model, TASKS, on_host())
    assert [m.precision for m in matches] == ["fp32", "int8"]
    for m in matches:
        assert m.max_abs == {"seg": 0.0, "depth": 0.0} and m.task_points == {"seg": 0.0, "depth": 0.0}
        assert m.scale["seg"] > 0
    assert matches[1].model_bytes < 0.5 * matches[0].model_bytes  # the INT8 file really is INT8
    result = arm64.Arm64Result(qemu_cpu="cortex-a72", tasks=TASKS, device_class="rpi4", outputs=matches)
    doc = arm64.table(result, "edgecut bench arm64")
    assert "| static INT8 (QDQ, per-channel weights) outputs, arm64 against x86 (32 rendered scenes" in doc
    assert "seg: max abs diff 0 (outputs up to" in doc and "metrics +0.00 points" in doc


def _swap_seg_classes(outs: dict[str, np.ndarray]) -> None:
    outs["1/seg"] = outs["1/seg"][:, ::-1].copy()  # INT8's seg answers other classes on "arm64"


def _nudge_fp32(outs: dict[str, np.ndarray]) -> None:
    outs["0/depth"] = outs["0/depth"] + 10 * FP32_TOLERANCE  # far below a metric change, above 1e-4


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_swap_seg_classes, r"int8 seg: -\d+\.\d+ points"),
        (_nudge_fp32, r"fp32 depth: max \|arm64 - x86\| 0\.001"),
    ],
    ids=["int8-answers-differ", "fp32-elements-differ"],
)
def test_outputs_out_of_tolerance_fail_naming_precision_and_task(
    served: tuple[Path, Path], tamper: Callable[[dict[str, np.ndarray]], None], reason: str
) -> None:
    root, model = served
    with pytest.raises(ConfigError, match="the arm64 outputs do not match this host's: .*" + reason):
        check(root, model, TASKS, on_host(tamper))


def test_only_fp32_is_held_to_the_element_wise_tolerance() -> None:
    kw = {"model_bytes": 1, "scale": {"seg": 20.0}, "task_points": {"seg": -0.1}}
    assert OutputMatch("int8", max_abs={"seg": 0.4}, **kw).failures() == []  # type: ignore[arg-type]
    assert OutputMatch("fp32", max_abs={"seg": 0.4}, **kw).failures()  # type: ignore[arg-type]
