"""Building the CLI must not import torch: the agent runs on devices without it."""

from __future__ import annotations

import subprocess
import sys


def test_every_command_registers_without_importing_torch() -> None:
    code = (
        "import sys; import edgecut.cli as c; p = c.build_parser(); "
        "p.parse_args(['agent', 'status']); assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
