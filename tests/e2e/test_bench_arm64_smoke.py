"""`edgecut bench arm64` end to end at its smallest build: the agent in an aarch64 root under qemu-user.

Needs root, debootstrap and qemu-user-static (.ci/run installs them); runs in `make test-bench`. The
root is cached in $EDGECUT_ARM64_ROOT (default /var/tmp/edgecut-arm64/root, the bench's own default):
the first run builds it (debootstrap + pip, a few minutes), later runs reuse it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.support.bench_smoke import OTHER, SMOKE, run_bench, section

ROOT = Path(os.environ.get("EDGECUT_ARM64_ROOT", "/var/tmp/edgecut-arm64/root"))
RUN_S = 2400.0  # a cold root on a loaded 2-core machine: debootstrap + pip + the run

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.bench,
    pytest.mark.broker,
    SMOKE,
    pytest.mark.skipif(os.geteuid() != 0, reason="bench arm64 needs root (debootstrap, chroot)"),
    pytest.mark.skipif(
        not (shutil.which("debootstrap") and shutil.which("qemu-aarch64-static")),
        reason="bench arm64 needs debootstrap and qemu-user-static (apt-get install them)",
    ),
]


@pytest.mark.timeout(RUN_S + 60)
def test_bench_arm64_serves_a_model_on_the_emulated_agent(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    out.write_text(OTHER)
    args = f"--root {ROOT} --recovery-steps 0 --stall-s 180 --timeout 900 --out {out}"
    run_bench("arm64", args.split(), RUN_S)
    doc = out.read_text()
    assert OTHER in doc
    body = section(doc, "Agent on arm64")
    assert "| emulated machine | aarch64 " in body and "no compiler in the root: yes" in body
    assert re.search(r"^\| inference on the emulated agent .* \| \d+\.\d ms \|$", body, re.M)
    assert re.search(r"^model [0-9a-f]{16} ", body, re.M)  # `edgecut agent infer` answered in the root
    # the served model and its static INT8 twin ran in the root and matched the host's (else the bench fails)
    for precision in ("fp32", "static INT8 (QDQ, per-channel weights)"):
        assert re.search(
            rf"^\| {re.escape(precision)} outputs, arm64 against x86 .* metrics [+-]0\.\d\d points",
            body,
            re.M,
        )
