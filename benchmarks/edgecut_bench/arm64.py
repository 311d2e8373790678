"""`edgecut bench arm64`: the agent installed and run on aarch64 Linux, emulated by qemu-user on this host.

1. deploy/arm64/build-root.sh builds (or reuses) a Debian arm64 root and `pip install`s this checkout's
   wheel with `[agent]`, wheels only (the root has no compiler);
2. a broker and a fleet server with the real engine start on the host;
3. `edgecut agent run` starts in the root (deploy/arm64/chroot-run.sh: QEMU_CPU, fake cpuinfo), asks for
   a model over MQTT, downloads it over gRPC from the host, loads and serves it;
4. the host calls the emulated agent's local API (inferences), `edgecut agent infer` runs in the root,
   and the agent's import time and RSS are measured: emulated, so for the record, not a device figure;
5. the served model, and its static INT8 twin, run in the root and on the host on the same scenes: their
   outputs must match (arm64_outputs.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil

from edgecut.agent.watch import AgentWatch
from edgecut.errors import ConfigError
from edgecut.server.spec import NO_FLOOR
from edgecut_bench.clone import REPO

if TYPE_CHECKING:
    from edgecut.server.spec import Engine

    from .arm64_outputs import OutputMatch

SECTION = "Agent on arm64"
ARM64 = REPO / "deploy" / "arm64"
DEVICE_ID = "pi4-emulated"
_IMPORT = "import time; t = time.perf_counter(); import edgecut.agent.agent; print(time.perf_counter() - t)"
_PROBE = (
    "import platform, sys, onnxruntime as o; "
    "print(platform.machine(), sys.version.split()[0], o.__version__, ','.join(o.get_available_providers()))"
)


@dataclass
class Arm64Result:
    qemu_cpu: str
    tasks: list[str]
    device_class: str
    machine: str = ""
    python: str = ""
    onnxruntime: str = ""
    providers: str = ""
    debootstrap_s: float | None = None  # None: an existing root was reused
    pip_s: float = 0.0
    installed: str = ""
    wheels: list[str] = field(default_factory=list)
    compiler_in_root: bool = False
    import_s: list[float] = field(default_factory=list)
    serving_s: float = 0.0
    artifact_id: str = ""
    model_bytes: int = 0
    infer_ms: list[float] = field(default_factory=list)
    infer_output: list[str] = field(default_factory=list)
    rss_mb: float = 0.0
    outputs: list[OutputMatch] = field(default_factory=list)  # fp32 and INT8, arm64 against x86


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(msg: str) -> None:
    print(f"[bench arm64] {msg}", file=sys.stderr, flush=True)


def _in_root(root: Path, qemu_cpu: str, *cmd: str, timeout: float = 600) -> str:
    out = subprocess.run(
        [str(ARM64 / "chroot-run.sh"), str(root), *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": qemu_cpu},
    )
    if out.returncode:
        raise ConfigError(f"`{' '.join(cmd)}` failed in the arm64 root: {out.stderr.strip()[-800:]}")
    return out.stdout


def build_root(root: Path, result: Arm64Result, stall_s: float) -> None:
    """Build the wheel, then the root (reused when present) with the agent installed in it."""
    if shutil.which("debootstrap") is None or shutil.which("qemu-aarch64-static") is None:
        raise ConfigError("bench arm64 needs debootstrap and qemu-user-static (apt-get install them)")
    with tempfile.TemporaryDirectory(prefix="edgecut-wheel-") as wheels:
        _say("building the edgecut wheel")
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, str(REPO)],
            check=True,
            capture_output=True,
        )
        (wheel,) = Path(wheels).glob("edgecut-*.whl")
        _say(
            f"building the arm64 root in {root} (debootstrap ~3 min the first time) and installing the agent"
        )
        root.parent.mkdir(parents=True, exist_ok=True)
        logs = [Path(f"{root}.debootstrap.log"), Path(f"{root}.pip.log")]  # build-root.sh writes them
        text = _run_watched([str(ARM64 / "build-root.sh"), str(root), str(wheel)], logs, stall_s)
    if m := re.search(r"debootstrap took (\d+) s", text):
        result.debootstrap_s = float(m.group(1))
    if m := re.search(r"pip install took (\d+) s", text):
        result.pip_s = float(m.group(1))
    if m := re.search(r"^Successfully installed (.+)$", text, re.M):
        result.installed = m.group(1)
    result.wheels = re.findall(r"^wheel (\S+)$", text, re.M)


def _run_watched(command: list[str], logs: list[Path], stall_s: float) -> str:
    """Run `command`, echoing its `== step` lines; end it when neither its output nor `logs` grew for
    `stall_s` (one sentence and its last lines instead of a silent wait). Returns its output."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("== "):
                _say(line[3:].strip())

    reader = threading.Thread(target=read, name="build-root-output", daemon=True)
    reader.start()
    seen: tuple[int, ...] = ()
    moved = time.monotonic()
    while proc.poll() is None:
        sizes = (len(lines), *(p.stat().st_size if p.exists() else -1 for p in logs))
        if sizes != seen:
            seen, moved = sizes, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            os.killpg(proc.pid, signal.SIGKILL)  # the script and what it started (debootstrap, pip)
            proc.wait()
            tail = "\n".join(lines[-10:])
            grown = max(logs, key=lambda p: p.stat().st_mtime if p.exists() else 0, default=None)
            more = f"\n{grown}:\n{_tail(grown)}" if grown and grown.exists() else ""
            raise ConfigError(
                f"{Path(command[0]).name} made no progress for {stall_s:g} s (--stall-s) and was "
                f"stopped; its last lines:\n{tail}{more}"
            )
        time.sleep(1.0)
    reader.join(10)
    text = "\n".join(lines)
    if proc.returncode:
        raise ConfigError(f"{Path(command[0]).name} failed ({proc.returncode}): {text.strip()[-1500:]}")
    return text


def _tail(path: Path, lines: int = 10) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def probe_root(root: Path, result: Arm64Result) -> None:
    result.machine, result.python, result.onnxruntime, result.providers = _in_root(
        root, result.qemu_cpu, "python", "-c", _PROBE
    ).split()
    result.compiler_in_root = bool(
        _in_root(root, result.qemu_cpu, "/bin/sh", "-c", "command -v cc gcc || true").strip()
    )
    for _ in range(3):  # the first one reads the files from disk; the median is the figure
        result.import_s.append(float(_in_root(root, result.qemu_cpu, "python", "-c", _IMPORT).strip()))


def _scene_png(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    from edgecut.server.mtl.scenes import render

    path.parent.mkdir(parents=True, exist_ok=True)

    img = render(7, 0, size).image  # 3 x H x W uint8
    Image.fromarray(np.transpose(img, (1, 2, 0))).save(path)
    return img


@dataclass(frozen=True)
class Launcher:
    """How the agent starts: in the aarch64 root under qemu (the bench), or on the host (its tests).

    Either way its config is `root/etc/edgecut/agent.yaml` and its state `root/var/lib/edgecut`;
    `inside` is the path of `root` as the agent sees it ("/" in the chroot).
    """

    command: tuple[str, ...]
    inside: str
    env: tuple[tuple[str, str], ...] = ()  # () = this process's, without EDGECUT_* variables

    @classmethod
    def chroot(cls, root: Path, qemu_cpu: str) -> Launcher:
        path = ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        return cls((str(ARM64 / "chroot-run.sh"), str(root), "edgecut"), "/", (path, ("QEMU_CPU", qemu_cpu)))

    @classmethod
    def host(cls, root: Path) -> Launcher:
        return cls((sys.executable, "-m", "edgecut.agent"), str(root) + "/")


def run_agent(
    root: Path,
    result: Arm64Result,
    engine: Engine,
    timeout: float,
    stall_s: float,
    launcher: Launcher | None = None,
    fleet_key: str | None = None,
) -> None:
    """Broker + server on the host, the agent in the root; measures until it serves and answers.

    `fleet_key` overrides the server's public key in the agent's config (a test's wrongly provisioned
    device); `launcher` defaults to the aarch64 root.
    """
    from edgecut.agent.provision import write_agent_config
    from edgecut.broker import EmbeddedBroker
    from edgecut.server.fleet.app import FleetServer
    from edgecut.server.fleet.settings import ServerSettings

    launcher = launcher or Launcher.chroot(root, result.qemu_cpu)
    state = root / "var" / "lib" / "edgecut"
    shutil.rmtree(state, ignore_errors=True)
    api_port = _free_port()
    with tempfile.TemporaryDirectory(prefix="edgecut-arm64-server-") as work, EmbeddedBroker() as broker:
        _say(f"broker {broker.kind} on {broker.url}")
        # the bench proves the serving path, not quality: its engine has no Δm floor either, and a
        # model with `--recovery-steps 0` would otherwise be held below the quick model's floor
        settings = ServerSettings(
            state_dir=Path(work), broker=broker.url, grpc="127.0.0.1:0", workers=1, quick_min_delta_m=NO_FLOOR
        )
        server = FleetServer(settings, engine).start()
        try:
            if not server.wait_ready(30):
                raise ConfigError("the fleet server's MQTT bridge did not subscribe within 30 s")
            assert server.signer is not None
            write_agent_config(
                root / "etc" / "edgecut" / "agent.yaml",
                server.signer.key.public_text if fleet_key is None else fleet_key,
                device_id=DEVICE_ID,
                broker_url=broker.url,
                state_dir=launcher.inside + "var/lib/edgecut",
                listen=f"127.0.0.1:{api_port}",
                tasks=result.tasks,
                device_class=result.device_class,
                ort_threads=2,
                download_retry_max_s=5.0,
            )
            _say(f"starting `edgecut agent run` ({' '.join(launcher.command[:1])}...)")
            log = root / "var" / "log" / "edgecut-agent.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            with log.open("wb") as log_file:
                agent = subprocess.Popen(
                    [
                        *launcher.command,
                        "agent",
                        "run",
                        "--config",
                        launcher.inside + "etc/edgecut/agent.yaml",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                    env=dict(launcher.env)
                    or {k: v for k, v in os.environ.items() if not k.startswith("EDGECUT_")},
                )
            name = "the emulated agent" if launcher.inside == "/" else "the agent"
            watch = AgentWatch(
                name, agent, log, stall_s, busy=lambda: bool(server.jobs and server.jobs.active())
            )
            try:
                _serve_and_measure(agent, watch, result, f"127.0.0.1:{api_port}", t0, timeout, root, launcher)
            finally:
                agent.terminate()
                try:
                    agent.wait(60)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait(10)
        finally:
            server.stop()


def _serve_and_measure(
    agent: subprocess.Popen[bytes],
    watch: AgentWatch,
    result: Arm64Result,
    address: str,
    t0: float,
    timeout: float,
    root: Path,
    launcher: Launcher,
) -> None:
    from edgecut.agent.errors import AgentError
    from edgecut.agent.serve import AgentClient
    from edgecut.model_meta import ModelMeta

    deadline = t0 + timeout
    with AgentClient(address, timeout_s=120.0) as client:
        while True:
            try:
                st = client.status()
            except AgentError:  # not listening yet
                st = None
            if st is not None and st.artifact_id and st.model_meta_json:
                break
            watch.check(st)
            if time.monotonic() > deadline:
                raise ConfigError(f"the emulated agent served no model within {timeout:g} s (--timeout)")
            time.sleep(1.0)
        result.serving_s = time.monotonic() - t0
        result.artifact_id = st.artifact_id
        model = root / "var" / "lib" / "edgecut" / "models" / f"{st.artifact_id}.onnx"
        result.model_bytes = model.stat().st_size if model.exists() else 0
        _say(f"serving {st.artifact_id[:12]} after {result.serving_s:.0f} s; timing inferences")
        meta = ModelMeta.from_json(st.model_meta_json)
        size = int(meta.input.shape[2] or 64)
        img = _scene_png(root / "tmp" / "scene.png", size)
        lo, hi = meta.input.value_range
        x = (lo + img[None].astype(np.float32) / 255.0 * (hi - lo)).astype(np.float32)
        for _ in range(12):
            result.infer_ms.append(float(client.infer(x).latency_ms))
    if launcher.inside == "/":
        out = _in_root(
            root,
            result.qemu_cpu,
            "edgecut",
            "agent",
            "infer",
            "/tmp/scene.png",
            "--address",
            address,
            "--out",
            "/tmp",
        )
        result.infer_output = [line.rstrip() for line in out.splitlines() if line.strip()]
    proc = psutil.Process(agent.pid)
    result.rss_mb = max(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def check_outputs(root: Path, result: Arm64Result) -> None:
    """The served model in fp32 and static INT8, in the root and on the host: outputs must match."""
    from .arm64_outputs import check

    model = root / "var" / "lib" / "edgecut" / "models" / f"{result.artifact_id}.onnx"
    result.outputs = check(root, model, result.tasks, lambda r, *cmd: _in_root(r, result.qemu_cpu, *cmd))


def _output_rows(r: Arm64Result) -> list[tuple[str, str]]:
    from .arm64_outputs import CHECK_SCENES

    names = {"fp32": "fp32", "int8": "static INT8 (QDQ, per-channel weights)"}
    return [
        (
            f"{names[m.precision]} outputs, arm64 against x86 ({CHECK_SCENES} rendered scenes, "
            f"{m.model_bytes / 1e3:.0f} kB)",
            "; ".join(
                f"{t}: max abs diff {m.max_abs[t]:.2g} (outputs up to {m.scale[t]:.3g}), metrics "
                f"{m.task_points[t]:+.2f} points"
                for t in m.max_abs
            ),
        )
        for m in r.outputs
    ]


def table(r: Arm64Result, command: str) -> str:
    imp = statistics.median(r.import_s) if r.import_s else 0.0
    lat = statistics.median(r.infer_ms[2:] or r.infer_ms) if r.infer_ms else 0.0
    rows = [
        (
            "emulated machine",
            f"{r.machine} (qemu-user 7.2, QEMU_CPU={r.qemu_cpu}), Debian bookworm, Python {r.python}",
        ),
        ("onnxruntime", f"{r.onnxruntime} ({r.providers})"),
        (
            "debootstrap (minbase + python3)",
            "reused an existing root" if r.debootstrap_s is None else f"{r.debootstrap_s:.0f} s",
        ),
        (
            "`pip install --only-binary=:all: 'edgecut[agent]'`",
            f"{r.pip_s:.0f} s"
            + (" (reused root: missing packages and edgecut only)" if r.debootstrap_s is None else "")
            + ", no compiler in the root: "
            + ("**no, one was found**" if r.compiler_in_root else "yes"),
        ),
        ("aarch64 wheels installed", ", ".join(w for w in r.wheels if "aarch64" in w) or "-"),
        ("agent import time (median of 3, emulated)", f"{imp:.2f} s"),
        ("agent start → serving its tailored model (includes the build on the host)", f"{r.serving_s:.0f} s"),
        (
            "model",
            f"{r.artifact_id[:12]}, tasks {','.join(r.tasks)}, class {r.device_class}, {r.model_bytes / 1e3:.0f} kB",
        ),
        ("inference on the emulated agent (median of 10 after 2 warm-up)", f"{lat:.1f} ms"),
        ("agent RSS while serving (emulated; includes qemu's code cache)", f"{r.rss_mb:.0f} MiB"),
        *_output_rows(r),
    ]
    lines = [
        "The device side on 64-bit Arm, proven here without Arm hardware: an aarch64 Debian root built with "
        "debootstrap and run under qemu-user (deploy/arm64/). The agent installs from wheels alone, "
        "connects to the broker and the fleet server on the host, downloads and serves a model tailored "
        "for its class. Times and memory are **emulated**: they show that it works, not how fast a Pi is. "
        f"Host: x86_64, 2 cores (shared). Rerun (as root): `{command}`. The root is kept (`--root`, "
        "default /var/tmp/edgecut-arm64/root) and reused: a rerun skips debootstrap and installs only "
        "edgecut and missing packages. `make test-bench` runs this bench at `--recovery-steps 0` as its "
        "smoke test; a stage that stops making progress ends the run after `--stall-s` with the reason "
        "and the last log lines (a refused model offer: within 20 s).",
        "",
        "The served model is then quantised to static INT8 on the host (onnxruntime's quant_pre_process "
        "and quantize_static: QDQ, per-channel weights, 64 rendered scenes for calibration) and both "
        "files run in the root and on the host, one thread, on the same 32 rendered scenes. Checked: "
        "every task's metrics on arm64 against x86 within 0.5 point of its Δm share (the INT8 per-task "
        "check's default threshold), in fp32 and INT8 alike; fp32 also element by element within 1e-4 "
        "(the exporter's torch-vs-onnxruntime check). INT8 cannot match that closely: onnxruntime's x86 "
        "and Arm integer kernels round requantisation differently, so single outputs differ by a step "
        "or two of their quantisation scale while the answers agree. Emulated timings say nothing "
        "about INT8 against fp32 on a real Cortex-A72: the agent times both on the device itself.",
        "",
        "| what | measured |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        f"`pip` said: Successfully installed {r.installed}",
        "",
        "`edgecut agent infer /tmp/scene.png` run inside the root, against the emulated agent:",
        "",
        "```",
        *r.infer_output,
        "```",
    ]
    return "\n".join(lines)
