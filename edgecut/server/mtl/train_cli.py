"""`edgecut train`: train the reference multi-task model on synthetic scenes (resumable)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecut.errors import ConfigError
from edgecut.server.paths import DEFAULT_DATA_DIR, scenes_cache, trained_reference


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the reference multi-task model on synthetic scenes")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where scenes and models live")
    p.add_argument("--out", type=Path, help="checkpoint path (default DATA_DIR/models/reference.pt)")
    p.add_argument("--epochs", type=int, help="training epochs (default 8)")
    p.add_argument("--n-train", type=int, help="training scenes (default 6000)")
    p.add_argument("--quick", action="store_true", help="a tiny model in seconds (smoke tests)")
    p.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.console import Console

    from edgecut.server.mtl.report import metrics_table
    from edgecut.server.mtl.train import TrainConfig, train

    cfg = TrainConfig.quick() if args.quick else TrainConfig()
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
        cfg = replace(cfg, epochs=args.epochs)
    if args.n_train is not None:
        if args.n_train < cfg.batch_size:
            raise ConfigError(f"--n-train must be at least the batch size ({cfg.batch_size})")
        cfg = replace(cfg, n_train=args.n_train)
    out = args.out or trained_reference(args.data_dir)
    console = Console()
    if out.exists() and not args.force:
        console.print(f"{out} exists (use --force to retrain); metrics: {out.with_suffix('.metrics.json')}")
        return 0
    result = train(cfg, out=out, cache_dir=scenes_cache(args.data_dir))
    console.print(metrics_table(result.metrics, result.baseline, result.model.task_specs))
    console.print(f"trained in {result.seconds:.0f} s -> {out}")
    console.print(json.dumps({"checkpoint": str(out), "seconds": round(result.seconds, 1)}))
    return 0
