"""The agent must never import torch and must import quickly (it starts on a Raspberry Pi)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import edgecut.agent

MODULES = sorted(
    f"edgecut.agent.{m.name}" for m in pkgutil.iter_modules(edgecut.agent.__path__) if m.name != "__main__"
)


def test_agent_modules_listed() -> None:
    for name in (
        "resources",
        "tasks",
        "link_mqtt",
        "fetch",
        "runtime",
        "serve",
        "cli",
        "agent",
    ):
        assert f"edgecut.agent.{name}" in MODULES


def test_no_torch_in_any_agent_module() -> None:
    code = (
        "import importlib, json, sys, time\n"
        "t = time.perf_counter()\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        "dt = time.perf_counter() - t\n"
        "torch = sorted(k for k in sys.modules if k.split('.')[0] == 'torch')\n"
        "print(json.dumps({'torch': torch, 's': dt}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(proc.stdout)
    assert result["torch"] == []
    # generous on a shared 2-core box; the measured figure is in docs/benchmarks.md
    assert result["s"] < 5.0
