"""`edgecut agent ...` subcommands (light imports only: no torch).

run | config | tasks set/show | status | infer IMAGE | rollback | unpin. Every command but `run` talks to the
running agent's local API; `tasks set` falls back to editing tasks.json when no agent answers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from .errors import AgentUnavailable, ConfigError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/edgecut/agent.yaml")


def _settings(args: argparse.Namespace, **overrides: Any) -> Any:
    from .settings import load_settings

    path = (
        args.config
        or os.environ.get("EDGECUT_CONFIG")
        or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    )
    return load_settings(Path(path) if path else None, **overrides)


def _address(args: argparse.Namespace) -> str:
    if args.address:
        return str(args.address)
    settings = _settings(args)
    bound = settings.state_dir / "api_address"  # written by a running agent (port 0 resolves here)
    return bound.read_text().strip() if bound.exists() else str(settings.listen)


def _client(args: argparse.Namespace) -> Any:
    from .serve import AgentClient

    return AgentClient(_address(args))


def cmd_run(args: argparse.Namespace) -> int:
    from edgecut.sdnotify import Notifier

    from .agent import Agent

    settings = _settings(
        args,
        device_id=args.device_id,
        broker_url=args.broker,
        server_address=args.server,
        state_dir=args.state_dir,
        listen=args.listen,
        providers=args.providers,
        adapt=True if args.adapt else None,
    )
    agent = Agent(settings)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    if args.exit_on_stdin_eof:
        threading.Thread(target=_stop_at_eof, args=(done,), name="stdin-lifeline", daemon=True).start()
    agent.start()
    print(f"edgecut agent {settings.device_id}: local API on {agent.api_address}", flush=True)
    systemd = Notifier()  # a no-op unless run by systemd (Type=notify)
    systemd.ready(f"local API on {agent.api_address}")
    systemd.start_watchdog(agent.alive, done)
    done.wait()
    systemd.stopping()
    agent.stop()
    return 0


def _stop_at_eof(done: threading.Event) -> None:
    """Set `done` once stdin closes: the supervisor holding the pipe's other end exited, however it died."""
    import sys

    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    logger.info("stdin closed: the supervisor is gone, stopping")
    done.set()


def _timings_text(timings_json: str) -> str:
    """`  (timed here: fp32 <ms> ms, int8 <ms> ms)`: what each precision took when the agent chose."""
    import json

    timings = json.loads(timings_json or "[]")
    parts = [
        f"{t['precision']} {t['median_ms']:.2f} ms"
        if t.get("median_ms")
        else f"{t['precision']} {t.get('note', '')}"
        for t in timings
    ]
    return f"  (timed here: {', '.join(parts)})" if len(parts) > 1 else ""


def _print_status(st: Any) -> None:
    print(f"device      {st.device_id}")
    print(f"tasks       {','.join(st.tasks) or '-'}")
    print(f"model       {st.artifact_id[:16] or '-'}  tasks {','.join(st.model_tasks) or '-'}")
    print(f"previous    {st.previous_artifact_id[:16] or '-'}")
    if st.providers:
        note = f" ({st.provider_note})" if st.provider_note else ""
        print(f"runs on     {', '.join(st.providers)}{note}")
    if st.precision:
        print(f"precision   {st.precision}{_timings_text(st.timings_json)}")
    print(f"swaps       {st.swaps} ok, {st.failed_swaps} refused")
    print(f"inferences  {st.inference_count} ({st.failed_count} failed)")
    print(f"broker      {'connected' if st.broker_connected else 'disconnected'}")
    if st.state:
        import datetime

        since = datetime.datetime.fromtimestamp(st.state_since_unix_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
        print(f"state       {st.state} since {since}: {st.state_reason}")
    if st.illegal_transitions:
        print(f"BUG         {st.illegal_transitions} illegal life-cycle transitions refused (see the log)")
    if st.pinned_artifact_id:
        print(f"pinned      {st.pinned_artifact_id[:16]} (fleet offers wait: `edgecut agent unpin`)")
    if st.provenance_json:
        import json

        p = json.loads(st.provenance_json)
        n = int(p.get("refinement", 0))
        parent = str(p.get("parent_artifact_id", ""))[:16]
        print(f"version     {f'refinement {n} (refines {parent})' if n else 'quick model'}")
        print(
            f"provenance  signed by fleet key {p.get('verified_key_id', '?')} for {p.get('device_id', '?')}, "
            f"needs seq {p.get('needs_seq', 0)}, base {p.get('base_model', '?')}, "
            f"pipeline {p.get('pipeline_version', '?')}, build {str(p.get('build_key', ''))[:12]}"
        )
    if st.adapt:
        print(f"adapt       {_adapt_text(st.adapt_json)}")
    if st.last_error:
        print(f"last error  {st.last_error}")


def _adapt_text(adapt_json: str) -> str:
    """One line on the statistics path: what it measures, what it sent, the last proxy check."""
    import json

    a = json.loads(adapt_json or "{}")
    what = (
        f"on, companion {str(a.get('statistics'))[:12]}: {a.get('measured', 0)} inputs measured, "
        f"{a.get('skipped', 0)} skipped, {a.get('summaries', 0)} summaries sent (sequence "
        f"{a.get('sequence', 0)}), CPU share {100 * float(a.get('cpu_share', 0)):.1f} %"
        if a.get("statistics")
        else f"on, not measuring: {a.get('note', '')}"
    )
    p = a.get("proxy") or {}
    if p and not p.get("note"):
        what += (
            f"; last swap's proxy: agreement {p['agreement']:.0%}, entropy {p['entropy_old']:.2f} -> "
            f"{p['entropy_new']:.2f} on {p['images']} inputs"
        )
    return what


def cmd_tasks_set(args: argparse.Namespace) -> int:
    from .tasks import TaskStore, parse_tasks

    tasks = parse_tasks(args.tasks)
    try:
        with _client(args) as client:
            st = client.set_tasks(tasks)
        print(f"tasks set to {','.join(st.tasks)}; the agent asks the server for a matching model")
    except AgentUnavailable:
        if args.address:
            raise
        settings = _settings(args)
        TaskStore(settings.state_dir).set(tasks)
        print(f"agent not running: saved {','.join(tasks)} in {settings.state_dir}; sent at its next start")
    return 0


def cmd_tasks_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        st = client.status()
    print(",".join(st.tasks) or "(none)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_status(client.status())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        st = client.rollback()
    print(
        f"rolled back: now serving {st.artifact_id[:16]} (tasks {','.join(st.model_tasks)}), pinned until "
        "`edgecut agent unpin`"
    )
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    with _client(args) as client:
        st = client.unpin()
    print(f"pin lifted: serving {st.artifact_id[:16] or '-'}; the fleet's next offer applies")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from edgecut.model_meta import ModelMeta

    from .images import describe, load_image, render
    from .serve import from_tensor

    with _client(args) as client:
        st = client.status()
        if not st.model_meta_json:
            raise AgentUnavailable("the agent has no model loaded yet")
        meta = ModelMeta.from_json(st.model_meta_json)
        resp = client.infer(load_image(Path(args.image), meta))
    print(f"model {resp.artifact_id[:16]}  {resp.latency_ms:.1f} ms")
    out_dir = Path(args.out or Path(args.image).parent)
    for task in meta.tasks:
        if task not in resp.outputs:
            continue
        arr = from_tensor(resp.outputs[task])
        print("  " + describe(task, meta.outputs[task], arr))
        picture = render(meta.outputs[task], arr)
        if picture is not None:
            dest = out_dir / f"{Path(args.image).stem}.{task}.png"
            picture.save(dest)
            print(f"    saved {dest}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import sys

    import yaml

    from .provision import agent_config, read_fleet_key, write_private

    text = args.fleet_key.strip()
    key = text if text.startswith("ed25519:") or not text else read_fleet_key(Path(text))
    extra: dict[str, Any] = {}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        extra[name.strip()] = yaml.safe_load(value)
    settings = {
        "device_id": args.device_id,
        "broker_url": args.broker,
        "state_dir": args.state_dir,
        "tasks": [t.strip() for t in args.tasks.split(",") if t.strip()],
        **({"device_class": args.device_class} if args.device_class else {}),
        **extra,
    }
    text = yaml.safe_dump(agent_config(key, **settings), sort_keys=False)
    if args.out:
        try:
            write_private(Path(args.out), text)
        except OSError as exc:
            raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from exc
        print(f"wrote {args.out} (fleet key pinned)", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser("agent", help="run and control the on-device agent")
    agent.set_defaults(handler=lambda args: agent.print_help())
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", help=f"agent YAML config (default $EDGECUT_CONFIG or {DEFAULT_CONFIG})"
    )
    common.add_argument("--address", help="local API of the running agent (default: from the config)")
    asub = agent.add_subparsers(dest="agent_command", metavar="ACTION")

    run = asub.add_parser("run", parents=[common], help="run the agent until interrupted")
    run.add_argument("--device-id")
    run.add_argument("--broker", help="mqtt://host:port")
    run.add_argument("--server", help="fleet gRPC host:port")
    run.add_argument("--state-dir", type=Path)
    run.add_argument("--listen", help="local API: 127.0.0.1:PORT or unix:/path")
    run.add_argument(
        "--providers", help="onnxruntime execution providers, best first, e.g. tensorrt,cuda,cpu (or auto)"
    )
    run.add_argument(
        "--adapt",
        action="store_true",
        help="measure this device's normalisation statistics and send summaries (agent.yaml `adapt: on`)",
    )
    run.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (for a supervisor that holds the pipe, e.g. the demo)",
    )
    run.set_defaults(handler=cmd_run)

    config = asub.add_parser(
        "config",
        help="write an agent config with the fleet's public key pinned (validated as `run` reads it)",
    )
    config.add_argument("--device-id", required=True)
    config.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    config.add_argument(
        "--fleet-key",
        required=True,
        help="the server's STATE_DIR/fleet-signing.pub (a file), or its `ed25519:...` line",
    )
    config.add_argument("--tasks", default="", help="initial tasks, e.g. seg,depth")
    config.add_argument("--device-class", help="rpi4, jetson-nano, x86, ... (default: probed)")
    config.add_argument("--state-dir", type=Path, default=Path("/var/lib/edgecut"))
    config.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any other setting (repeatable), e.g. listen=127.0.0.1:0",
    )
    config.add_argument("--out", type=Path, help="the YAML file to write (default: print it)")
    config.set_defaults(handler=cmd_config)

    tasks = asub.add_parser("tasks", help="show or change the selected tasks")
    tsub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION")
    tset = tsub.add_parser("set", parents=[common], help="select tasks, e.g. `seg,depth`")
    tset.add_argument("tasks", nargs="+", help="task names, comma- or space-separated")
    tset.set_defaults(handler=cmd_tasks_set)
    tsub.add_parser("show", parents=[common], help="print the selected tasks").set_defaults(
        handler=cmd_tasks_show
    )
    tasks.set_defaults(handler=lambda args: tasks.print_help())

    asub.add_parser("status", parents=[common], help="what the agent serves").set_defaults(handler=cmd_status)
    asub.add_parser(
        "rollback", parents=[common], help="serve the previous model again and pin it until `unpin`"
    ).set_defaults(handler=cmd_rollback)
    asub.add_parser(
        "unpin", parents=[common], help="lift a rollback pin: fleet offers apply again"
    ).set_defaults(handler=cmd_unpin)
    infer = asub.add_parser("infer", parents=[common], help="run the model on an image (PNG/JPEG)")
    infer.add_argument("image")
    infer.add_argument("--out", help="directory for the seg/depth PNGs (default: beside the image)")
    infer.set_defaults(handler=cmd_infer)


def main(argv: list[str] | None = None) -> int:
    """`python -m edgecut.agent ...`: the agent's commands without loading the server's CLI."""
    from edgecut.dispatch import dispatch

    parser = argparse.ArgumentParser(prog="edgecut")
    parser.add_argument("-v", "--verbose", action="store_true")
    register(parser.add_subparsers(dest="command", required=True))
    return dispatch(parser, argv, quiet_level=logging.INFO)


__all__ = ["ConfigError", "main", "register"]
