"""`edgecut bench adapt-agent`: what the agent's statistics path (issue 31) costs a device.

The reference model with seg+depth serves dim synthetic scenes (x0.4, the "dim garage") at a fixed
request rate on one onnxruntime thread, through the agent's own `Adapter` (edgecut/agent/adapt.py) and
its statistics companion (`export_statistics_model`), as the agent's local API drives them. Measured:
the statistics thread's CPU time per wall second (what the governor accounts, goal <= 5 % of one
core at 5 requests/s), the process's whole CPU share with adapt on and off (an independent check),
inputs measured and skipped, and the bytes of a real summary of that model.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecut.server.paths import CHECKPOINT_HELP, DEFAULT_DATA_DIR
from edgecut_bench.machine import cpu_name

if TYPE_CHECKING:
    from edgecut.agent.adapt import StatisticsModel
    from edgecut.agent.runtime import LoadedModel
    from edgecut.v1 import fleet_pb2

SECTION = "Agent: statistics CPU share (issue 31)"
TASKS = ["seg", "depth"]
DIM = 0.4


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "adapt-agent",
        help="the agent's statistics path: CPU share at a request rate, summary size -> docs/benchmarks.md",
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--rate", type=float, default=5.0, help="requests per second (default %(default)s)")
    p.add_argument(
        "--stress-rate",
        type=float,
        default=50.0,
        help="a rate at which measuring every input would exceed the share: the governor skips (0 = none)",
    )
    p.add_argument("--seconds", type=float, default=120.0, help="wall seconds per run (default %(default)s)")
    p.add_argument(
        "--share", type=float, default=0.05, help="the agent's adapt_cpu_share (default %(default)s)"
    )
    p.add_argument(
        "--every",
        type=int,
        default=64,
        help="the agent's adapt_every: a run measures 16 of every this many inputs (default %(default)s)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update ('' = none)"
    )
    p.set_defaults(handler=run)


@dataclass
class Run:
    rate: float
    adapt: bool
    requests: int
    wall_s: float
    process_cpu_s: float
    stats_cpu_s: float = 0.0
    measured: int = 0
    skipped: int = 0
    summaries: int = 0


def _drive(
    serving: LoadedModel,
    stats: StatisticsModel,
    images: np.ndarray,
    args: argparse.Namespace,
    rate: float,
    adapt: bool,
    state: Path,
) -> Run:
    """`args.rate` single-image requests a second for `args.seconds`, each through the Adapter as
    agent.infer hands them."""
    from edgecut.agent.adapt import Adapter
    from edgecut.agent.settings import AgentSettings

    settings = AgentSettings.model_validate(
        {
            "device_id": "bench",
            "state_dir": state,
            "adapt": adapt,
            "adapt_cpu_share": args.share,
            "adapt_every": args.every,
        }
    )
    sent: list[int] = []

    def publish(msg: fleet_pb2.StatsSummary) -> bool:
        sent.append(msg.ByteSize())
        return True

    adapter = Adapter(settings, publish, lambda: 0)
    adapter.start()
    adapter.switch("a" * 64, stats if adapt else None)
    seconds = args.seconds
    t0, c0 = time.monotonic(), time.process_time()
    n = 0
    while time.monotonic() - t0 < seconds:
        image = images[n % len(images)][None]
        serving.run(image)
        adapter.observe("a" * 64, image)
        n += 1
        time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    adapter.stop()
    return Run(
        rate, adapt, n, wall, cpu, adapter.governor.spent_s, adapter.measured, adapter.skipped, len(sent)
    )


def run(args: argparse.Namespace) -> int:
    import onnxruntime as ort
    import torch

    from edgecut.agent.adapt import StatisticsModel
    from edgecut.agent.runtime import load_model
    from edgecut.errors import ConfigError
    from edgecut.norm_stats import Accumulator, to_proto
    from edgecut.server.cut.export import export_onnx, plain_meta
    from edgecut.server.cut.statistics import export_statistics_model
    from edgecut.server.mtl import checkpoint
    from edgecut.server.mtl.data import synthetic_scenes
    from edgecut.server.paths import reference_checkpoint, scenes_cache
    from edgecut_bench.cli import _command, _publish

    if args.rate <= 0 or args.seconds <= 0 or not 0 < args.share <= 1 or args.every < 16:
        raise ConfigError("--rate and --seconds must be above 0, --share in (0, 1] and --every at least 16")
    torch.set_num_threads(1)
    ckpt = args.checkpoint or reference_checkpoint(args.data_dir)
    model = checkpoint.load(ckpt).select(TASKS).eval()
    scenes = synthetic_scenes(64, 7, model.input_size, cache_dir=scenes_cache(args.data_dir))
    images = (scenes.tensors["image"] * DIM).numpy().astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        meta = plain_meta(model, ckpt.stem)
        export_onnx(model, meta, work / "model.onnx")
        export_statistics_model(model, work / "stats.onnx")
        serving = load_model(work / "model.onnx", "a" * 64, threads=1)
        stats = StatisticsModel(work / "stats.onnx", "s" * 64, meta.input.shape)
        costs = []
        for i in range(5):
            batch = images[16 * (i % 4) : 16 * (i % 4) + 16]
            c0 = time.thread_time()
            outputs = stats.run(batch)
            costs.append(time.thread_time() - c0)
        acc = Accumulator()
        acc.add(outputs, 16)
        summary = to_proto(acc.layers(), "device-0001", "a" * 64, 256, 1, int(time.time() * 1000))
        layers = acc.layers()
        channels = sum(m.size for m, _ in layers.values())
        cases = [(args.rate, False), (args.rate, True)]
        cases += [(args.stress_rate, True)] if args.stress_rate > 0 else []
        runs = [_drive(serving, stats, images, args, r, on, work / f"state-{r}-{on}") for r, on in cases]
    per_batch = statistics.median(costs)
    body = _table(
        runs, args, per_batch, summary.ByteSize(), len(layers), channels, ort.__version__, model.input_size
    )
    _publish(args.out, SECTION, body + f"\n\nRerun: `{_command('adapt-agent')}`.")
    return 0


def _table(
    runs: list[Run],
    args: argparse.Namespace,
    per_batch: float,
    size: int,
    layers: int,
    channels: int,
    ort_v: str,
    size_px: int,
) -> str:
    rows = [
        "| requests/s | adapt | requests | wall s | statistics CPU share | process CPU share | measured "
        "| skipped | summaries |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        rows.append(
            f"| {r.rate:g} | {'on' if r.adapt else 'off'} | {r.requests} | {r.wall_s:.0f} | "
            f"{100 * r.stats_cpu_s / r.wall_s:.2f} % | {100 * r.process_cpu_s / r.wall_s:.2f} % | "
            f"{r.measured} | {r.skipped} | {r.summaries} |"
        )
    natural = per_batch * args.rate / 16
    stress = ""
    if args.stress_rate > 0:
        last = runs[-1]
        stress = (
            f" At {args.stress_rate:g} requests/s measuring every input would take "
            f"{100 * per_batch * args.stress_rate / 16:.1f} %: "
            + (
                "the last row shows the governor skipping to stay within its share."
                if last.skipped
                else f"sampling 16 of every {args.every} took {100 * last.stats_cpu_s / last.wall_s:.2f} % "
                "there, within the share without skipping."
            )
        )
    return "\n".join(
        [
            f"The reference model with {'+'.join(TASKS)} ({size_px} px) serving dim synthetic scenes "
            f"(x{DIM}), one image a request, for {args.seconds:g} s per run on one onnxruntime {ort_v} "
            f"thread, through the agent's `Adapter` (a batch of 16 sampled from every {args.every} inputs, "
            f"governor at {100 * args.share:g} % of one core). *Statistics CPU share* is the statistics "
            "thread's CPU time per wall second (what the governor pays); *process CPU share* is the whole "
            "process's (serving included).",
            "",
            *rows,
            "",
            f"One statistics run over 16 inputs takes {1e3 * per_batch:.0f} ms of CPU (median of 5), so "
            f"measuring every input at {args.rate:g} requests/s would take {100 * natural:.2f} % of one core "
            f"(goal: at most 5 %), and 16 of every {args.every} a {16 / args.every:.2g} share of that."
            f"{stress} A summary of this model is **{size} bytes** ({layers} layers incl. the input, "
            f"{channels} channels, float16 mean and variance each).",
            "",
            f"Machine: {platform.machine()}, {cpu_name()}, 2 cores shared with other "
            "jobs (the statistics' CPU time is measured per thread, so the load of others does not count).",
        ]
    )
