"""Running `edgecut bench ...` as a user does, for the smoke tests (tests/e2e/test_bench_*smoke.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE_ENV = "EDGECUT_BENCH_SMOKE"  # set by `make test-bench`: the smoke runs are skipped otherwise
# the bench smoke runs' mark: skipped unless `make test-bench` runs them
SMOKE = pytest.mark.skipif(
    not os.environ.get(SMOKE_ENV), reason=f"a bench smoke run: `make test-bench` ({SMOKE_ENV}=1)"
)
REPO = Path(__file__).resolve().parents[2]
OTHER = "# Benchmarks\n\n## Another bench\n\nkept\n"  # a section each run must leave alone


def section(doc: str, title: str) -> str:
    start = doc.index(f"## {title}\n")
    end = doc.find("\n## ", start + 1)
    return doc[start : end if end != -1 else len(doc)]


def run_bench(bench: str, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """`edgecut bench BENCH ARGS`; fails the test on a non-zero exit or when it runs past `timeout_s`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "edgecut.cli", "bench", bench, *args],
            cwd=REPO,  # `bench swap` builds its default models with tests/support
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"`edgecut bench {bench}` hung for {timeout_s:g} s; its last output: {tail[-2000:]}")
    assert run.returncode == 0, f"`edgecut bench {bench}` failed:\n{run.stderr[-3000:]}"
    return run
