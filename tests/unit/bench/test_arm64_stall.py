"""bench arm64's root build: a step that stops making progress ends the run with its last lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.errors import ConfigError
from edgecut_bench.arm64 import _run_watched


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "step.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return [str(path)]


def test_a_step_that_goes_silent_is_stopped_naming_its_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "root.pip.log"
    command = _script(
        tmp_path, f"echo '== pip install'\necho 'Collecting onnxruntime' > {log}\nexec sleep 600\n"
    )
    with pytest.raises(ConfigError) as caught:
        _run_watched(command, [log], stall_s=2)
    message = str(caught.value)
    assert message.startswith("step.sh made no progress for 2 s (--stall-s) and was stopped")
    assert "== pip install" in message and "Collecting onnxruntime" in message


def test_a_failed_step_says_so_and_a_good_one_returns_its_output(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"step.sh failed \(3\): debootstrap failed"):
        _run_watched(_script(tmp_path, "echo 'debootstrap failed' >&2\nexit 3\n"), [], stall_s=60)
    assert (
        _run_watched(_script(tmp_path, "echo 'pip install took 5 s'\n"), [], stall_s=60)
        == "pip install took 5 s"
    )
