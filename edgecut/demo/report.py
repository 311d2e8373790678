"""The end of a demo run: the table, a summary, the verdict (exit code), JSON and the benchmarks section."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from rich.console import Console

from edgecut.doc_sections import write_section

from .run import DemoOptions
from .table import INTERRUPTED, DemoResult, render

SECTION = "Demo"


def shutdown_line(result: DemoResult) -> str:
    return (
        f"shutdown: {len(result.pids)} agent processes stopped ({len(result.pids_alive_after)} left), "
        f"{len(result.ports)} ports released ({len(result.ports_open_after)} still open), {result.broker} stopped"
    )


def summary(result: DemoResult) -> list[str]:
    lines = []
    hits = sum(d.cache_hits for d in result.devices)
    seconds = sum(b.seconds for b in result.builds)
    built = (
        f"{seconds:.0f} s of building, one at a time" if result.builds else "every model came from the cache"
    )
    lines.append(f"builds this run: {len(result.builds)} ({built}); cache hits: {hits} (no build needed)")
    c = result.change
    if c is not None and c.new_model_after_s is not None:
        lines.append(
            f"task change on {c.device_id}: {','.join(c.old)} -> {','.join(c.new)}; the new model answered "
            f"{c.new_model_after_s:.1f} s later; {c.requests_during} requests served meanwhile, "
            f"{c.failed_during} failed"
        )
    if result.refinements:
        refined = [d for d in result.devices if d.version.startswith("refinement")]
        lines.append(
            f"refinements: {len(result.refinements)} run in the background "
            f"({sum(r.seconds for r in result.refinements):.0f} s); {len(refined)} of {len(result.devices)} "
            "devices hot-swapped from their quick model to a refined one: "
            + (", ".join(f"{d.device_id} ({d.version})" for d in refined) or "none")
        )
    if result.adaptation is not None:
        lines.append(f"{result.adaptation.device_id}: {result.adaptation.describe()}")
    lines += [
        f"trade-off on {d.device_id} ({d.version or 'its model'}): {d.meta.trade_off}"
        for d in result.devices
        if d.meta is not None and d.meta.trade_off
    ]
    requests = sum(d.requests for d in result.devices)
    failed = sum(d.failed + d.agent_failed for d in result.devices)
    api = sorted(d.round_trip_p50_ms for d in result.devices)
    api_text = f"; Infer through the local gRPC API p50 {api[len(api) // 2]:.1f} ms" if api else ""
    lines.append(f"requests: {requests}, failed: {failed}{api_text} (the table's latency is the model's run)")
    swaps = sum(d.swaps for d in result.devices)
    lines.append(
        f"fleet server's registry (over MQTT via {result.broker}): {sum(d.server_swaps for d in result.devices)} "
        f"of {swaps} swaps recorded, telemetry from {sum(d.server_telemetry for d in result.devices)} "
        f"of {len(result.devices)} devices"
    )
    lines.append(shutdown_line(result))
    return lines


def bench_body(result: DemoResult, opts: DemoOptions) -> str:
    t = result.timings_s
    machine = f"{os.cpu_count()}-core {platform.machine()}, {platform.system()} {platform.release()}"
    rows = [
        ("reference model", f"trained in {t['train']:.0f} s" if "train" in t else result.model_source),
        ("broker start", f"{t.get('broker', 0):.2f} s ({result.broker})"),
        ("engine + fleet server ready (incl. scoring the full model)", f"{t.get('server', 0):.1f} s"),
        ("first devices served (their builds run one at a time)", f"{t.get('first_models', 0):.1f} s"),
        (
            "late joiners served (cache hits)",
            f"{t.get('late_joiners', 0):.1f} s" if "late_joiners" in t else "-",
        ),
        ("task change -> answers from the new model", f"{t.get('task_change', 0):.1f} s"),
        (
            "then every device on its refined model (or told not better)",
            f"{t.get('refined_models', 0):.1f} s",
        ),
        ("whole run (start to all processes stopped)", f"{t.get('total', 0):.0f} s"),
    ]
    builds = (
        "\n".join(f"| {','.join(b.tasks)} | {b.budget} | {b.seconds:.1f} |" for b in result.builds)
        or "| (none: all from the build cache) | | |"
    )
    refinements = (
        "\n".join(f"| {','.join(b.tasks)} | {b.budget} | {b.seconds:.1f} |" for b in result.refinements)
        or "| (none) | | |"
    )
    versions = "\n".join(f"| {d.device_id} | {d.version} |" for d in result.devices)
    requests = sum(d.requests for d in result.devices)
    failed = sum(d.failed + d.agent_failed for d in result.devices)
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    command = f"edgecut demo --agents {opts.agents} --duration {opts.duration:g}" + (
        " --reuse-builds" if opts.reuse_builds else ""
    )
    return f"""Measured by `{command}` on a {machine} machine shared with other work: \
{opts.agents} agent processes (onnxruntime 1 thread each), {opts.rate:g} Infer requests/s per agent, \
{requests} requests in all, {failed} failed.

| step | time |
|---|---|
{table}

| build (tasks) | budget | seconds |
|---|---|---:|
{builds}

| refinement (tasks, background) | budget | seconds |
|---|---|---:|
{refinements}

| device | serves at the end |
|---|---|
{versions}
"""


def finish(
    result: DemoResult, opts: DemoOptions, console: Console, json_path: Path | None, bench_doc: Path | None
) -> int:
    problems = result.problems()
    if json_path is not None:
        result.write_json(json_path)
    console.print()
    if result.interrupted:  # no table: the run did not get to its end
        console.print(f"  {shutdown_line(result)}")
        others = [p for p in problems if p != INTERRUPTED]  # e.g. a port left open by the shutdown
        console.print("[bold red]demo interrupted[/]" + "".join(f"\n  - {p}" for p in others))
        return 130
    if result.devices:
        console.print(render(result))
    for line in summary(result):
        console.print(f"  {line}")
    if bench_doc is not None and not opts.quick and not problems:
        write_section(bench_doc, SECTION, bench_body(result, opts))
        console.print(f"  wrote the {SECTION} section of {bench_doc}")
    if problems:
        console.print("[bold red]demo failed:[/]")
        for p in problems:
            console.print(f"  - {p}")
        return 1
    console.print(
        "[bold green]demo passed[/]: every agent serves a model for its tasks (quick, then refined), "
        "0 failed requests, the task change took effect, everything stopped"
    )
    return 0
