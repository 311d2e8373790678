"""The documented load generator: N spinning processes that always stop when their block ends."""

from __future__ import annotations

import pytest

from edgecut_bench.load import busy, main


def test_the_busy_processes_run_inside_the_block_and_are_gone_after_it() -> None:
    with busy(2, seconds=60) as procs:
        assert len(procs) == 2 and all(p.is_alive() for p in procs)
    assert not any(p.is_alive() for p in procs)


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cores", "0"]) == 2
    assert "--cores must be at least 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cores must be >= 0"), busy(-1):
        pass
