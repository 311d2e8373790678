"""docs/models.md's Python examples run as a user would run them: mymodels.py, then tailor.py beside it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "models.md"


def python_blocks() -> dict[str, str]:
    """Each ```python block of the page, by the file name its docstring starts with (`mymodels.py: ...`)."""
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    named = {}
    for code in blocks:
        name = re.match(r'"""(\w+\.py):', code)
        assert name, f"a python example in {DOC.name} does not start with its file name: {code[:60]!r}"
        named[name.group(1)] = code
    return named


def test_the_worked_example_and_the_python_api_example_run(tmp_path: Path) -> None:
    blocks = python_blocks()
    assert set(blocks) == {"mymodels.py", "tailor.py"}
    for name, code in blocks.items():
        (tmp_path / name).write_text(code)
    run = subprocess.run(
        [sys.executable, "tailor.py"], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr
    found = re.fullmatch(r"seg, count: ([\d.]+) -> ([\d.]+) MMACs", run.stdout.strip())
    assert found, run.stdout
    selected, pruned = map(float, found.groups())
    assert 0 < pruned <= 0.5 * selected + 0.01  # the budget is met (figures rounded to 0.01)
