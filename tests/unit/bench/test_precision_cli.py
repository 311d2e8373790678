"""`edgecut bench precision` refuses bad settings and unreadable rows in one sentence, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.cli import main
from edgecut_bench import saved_rows


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--threads", "0"], "--threads must be positive integers separated by ','"),
        (["--threads", "one"], "--threads must be positive integers separated by ','"),
        (["--calib-images", "0"], "--calib-images must be positive, got 0"),
        (["--large", "-1"], "--large must be 0 or more, got -1"),
        (["--seeds", "0,0"], "--seeds must be distinct integers >= 0"),
        (["--budgets", "2"], "--budgets must be in (0, 1]"),
    ],
)
def test_a_bad_setting_is_one_sentence_and_exit_2(
    args: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "precision", "--data-dir", str(tmp_path), *args, "--out", ""]) == 2
    err = capsys.readouterr().err
    assert said in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "bench").exists()  # refused before any work


def test_rows_that_are_not_bench_precisions_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.pkl"
    saved_rows.save({"rows": []}, other)
    for path, said in ((other, "does not hold bench precision rows"), (tmp_path / "none.pkl", "cannot read")):
        assert main(["bench", "precision", "--render-from", str(path), "--out", ""]) == 2
        assert said in " ".join(capsys.readouterr().err.split())
