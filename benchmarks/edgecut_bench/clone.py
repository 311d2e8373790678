"""The edgecut clone this package is installed from (`pip install -e ./benchmarks`).

The benches that run the tests' doubles (`bench fleet`'s fast ONNX engine, `bench swap`'s default test
models) borrow them from the clone's tests/support: the doubles ship in no wheel, not even this one.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from edgecut.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]  # benchmarks/edgecut_bench/clone.py -> the clone


def support(module: str, what: str) -> ModuleType:
    """`tests.support.<module>` from the clone; a ConfigError saying what needs it when there is none."""
    if not (REPO / "tests" / "support" / f"{module}.py").is_file():
        raise ConfigError(
            f"{what} needs tests/support/{module}.py from an edgecut clone, and this edgecut_bench was not "
            f"installed from one ({REPO}): pip install -e ./benchmarks in a clone"
        )
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    return importlib.import_module(f"tests.support.{module}")
