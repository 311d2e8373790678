"""`edgecut bench widths`: the verdict under the table names exactly the widths that ran slower than a
wider layer, and bad flags are one sentence."""

from __future__ import annotations

import pytest

from edgecut.errors import ConfigError
from edgecut_bench.widths import WidthRow, WidthsResult, markdown, slower_than_wider
from edgecut_bench.widths_cli import _widths


def _result(int8: dict[int, float]) -> WidthsResult:
    res = WidthsResult(32, 24, 7, 40, "x86_64, 2 cores")
    res.rows = [WidthRow(w, w / 10, w / 100, ms) for w, ms in int8.items()]
    return res


def test_widths_slower_than_a_wider_one_are_named() -> None:
    res = _result({8: 0.25, 12: 0.27, 16: 0.17, 24: 0.22, 32: 0.27})
    assert slower_than_wider(res, "int8") == [8, 12]  # both slower than 16; 24 is slower only than 16
    assert slower_than_wider(res, "fp32") == []  # fp32 here grows with the width
    text = markdown(res)
    assert "- INT8: widths 8, 12 ran slower than a wider layer" in text
    assert "- fp32: no width ran slower than a wider one." in text
    assert "| 16 | 1.60 | 0.160 | 0.170 | 106.2 |" in text


@pytest.mark.parametrize("text", ["", "a,b", "0,8", "-8"])
def test_bad_widths_are_one_sentence(text: str) -> None:
    with pytest.raises(ConfigError, match="--widths must be positive integers"):
        _widths(text)
