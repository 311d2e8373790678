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


AGENT_ONLY = (
    "import sys\n"
    "for name in ('torch', 'torch_pruning', 'onnx', 'sqlalchemy', 'matplotlib'):\n"
    "    sys.modules[name] = None  # what `pip install 'edgecut[agent]'` leaves out\n"
    "from edgecut.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _agent_only(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", AGENT_ONLY, *argv], capture_output=True, text=True, timeout=60
    )


def test_an_agent_only_install_offers_no_server_commands_and_names_the_extra() -> None:
    shown = _agent_only("--help")
    assert shown.returncode == 0
    listed = shown.stdout.split("options:")[0]
    assert "agent" in listed and not any(
        f"    {c} " in listed for c in ("train", "prune", "bench", "server", "demo")
    )
    assert "pip install 'edgecut[server]'" in " ".join(shown.stdout.split())
    for command in (["prune", "--tasks", "seg", "--budget", "macs=0.5"], ["train"], ["server", "--help"]):
        run = _agent_only(*command)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert run.stderr.strip() == (
            f"error: `edgecut {command[0]}` needs the server extra, which is not installed here "
            "(no torch module): pip install 'edgecut[server]'"
        )
    assert _agent_only("agent", "--help").returncode == 0  # the device's own commands still work
