"""In CI (CI=true) a skipped deploy / TLS broker / PostgreSQL / browser test fails the run (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# needs systemd-analyze: with an empty PATH it is "not installed here", and the test skips
DEPLOY_TEST = "tests/integration/deploy/test_deploy_files.py::test_a_broken_unit_fails_verification"


def _run(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = "/nonexistent"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", DEPLOY_TEST],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_a_skipped_deploy_test_fails_in_ci_and_says_why() -> None:
    out = _run("true")
    assert out.returncode == 1, out.stdout
    assert "skipped in CI, where this must run: " in out.stdout and "systemd-analyze" in out.stdout


def test_outside_ci_it_skips() -> None:
    out = _run(None)
    assert out.returncode == 0 and "1 skipped" in out.stdout, out.stdout
