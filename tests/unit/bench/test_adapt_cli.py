"""`edgecut bench adapt` refuses bad settings and unreadable rows in one sentence, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.cli import main
from edgecut_bench import saved_rows


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--shifts", "fog"], "--shifts: unknown shift 'fog': choose from dark, noise"),
        (["--val-scenes", "0"], "--val-scenes must be positive, got 0"),
        (["--adapt-steps", "-1"], "--adapt-steps must be 0 or more, got -1"),
        (["--seeds", "0,0"], "--seeds must be distinct integers >= 0"),
        (["--budgets", "2"], "--budgets must be MACs fractions in (0, 1]"),
        (["--task-sets", ";"], "--task-sets must be task names"),
    ],
)
def test_a_bad_setting_is_one_sentence_and_exit_2(
    args: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "adapt", "--data-dir", str(tmp_path), *args, "--out", ""]) == 2
    err = capsys.readouterr().err
    assert said in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "bench").exists()  # refused before any work


def test_rows_that_are_not_bench_adapts_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.pkl"
    saved_rows.save({"rows": []}, other)
    for path, said in ((other, "does not hold bench adapt rows"), (tmp_path / "none.pkl", "cannot read")):
        assert main(["bench", "adapt", "--render-from", str(path), "--out", ""]) == 2
        assert said in " ".join(capsys.readouterr().err.split())
