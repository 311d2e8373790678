"""`edgecut train`: train a multi-task model (the reference, or a user's class) on synthetic scenes or on
a labelled folder (resumable)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut.errors import ConfigError
from edgecut.server.cliopts import add_data, add_model, model_config, positive_float, positive_int
from edgecut.server.paths import DEFAULT_DATA_DIR, scenes_cache, trained_reference

if TYPE_CHECKING:
    from edgecut.server.mtl.train import TrainConfig  # torch: imported when a command runs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a multi-task model: the reference, or yours (--model), on scenes or a folder (--data)",
        description="Train a multi-task model and save a checkpoint that `edgecut prune` and `edgecut server` "
        "tailor. With --data FOLDER the tasks and their kinds come from the folder (see docs/models.md).",
    )
    add_model(
        p, help="model class: a registered name, an entry point or module:Class (default: the reference)"
    )
    p.add_argument("--model-config", metavar="JSON", help="keyword arguments of the model class, as JSON")
    p.add_argument(
        "--data",
        metavar="FOLDER",
        help="labelled training folder (default: synthetic scenes); the checkpoint records it (path and "
        "digest), and prune and server calibrate on it by default",
    )
    add_data(
        p,
        calib=False,
        val_help="labelled validation folder (default: the --data folder's val/, else 10 %% of it)",
    )
    p.add_argument(
        "--tasks",
        metavar="T1,T2",
        help="train only these of the data's tasks (default: all), e.g. seg,depth",
    )
    p.add_argument("--image-size", type=positive_int, help="model input size in pixels (default 64)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where scenes and models live")
    p.add_argument(
        "--out", type=Path, help="checkpoint path (default DATA_DIR/models/reference.pt, or <Class>.pt)"
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        help="train exactly this many epochs (one-cycle rate); default: until validation stops improving "
        "(at most 80 epochs); with --patience it is that run's cap",
    )
    p.add_argument(
        "--patience",
        type=int,
        help="epochs without a better validation loss before stopping (default 6); 0 trains exactly "
        "--epochs with a one-cycle rate",
    )
    p.add_argument("--batch-size", type=positive_int, help="batch size (default 32)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default 2e-3)")
    p.add_argument(
        "--n-train", type=int, help="training scenes per epoch, synthetic data only (default 6000)"
    )
    p.add_argument(
        "--fixed-scenes",
        action="store_true",
        help="synthetic data: train every epoch on the same --n-train scenes (default: new ones each epoch)",
    )
    p.add_argument(
        "--balance-tasks",
        action="store_true",
        help="divide each task's loss by its loss before training, so a task whose loss is small in its own "
        "units (a regression in [-1, 1] beside depth in metres) weighs as much as the others; the "
        "validation loss that stops training is balanced alike",
    )
    p.add_argument("--quick", action="store_true", help="a tiny model in seconds (smoke tests)")
    p.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    p.set_defaults(handler=run)


def config(args: argparse.Namespace) -> TrainConfig:
    from dataclasses import replace

    from edgecut.server.mtl.train import TrainConfig

    cfg = TrainConfig.quick() if args.quick else TrainConfig()
    if args.model:
        # a user's class starts from its own defaults, not the reference's widths
        cfg = replace(cfg, arch=args.model, model=model_config(args.model_config))
    elif args.model_config:
        cfg = replace(cfg, model=model_config(args.model_config))
    if args.data:
        if args.n_train is not None:
            raise ConfigError("--n-train counts synthetic scenes: a folder (--data) trains on all its images")
        cfg = replace(
            cfg, data=str(args.data), val_data=str(args.val_data or ""), image_scale=args.image_scale
        )
    elif args.val_data:
        raise ConfigError("--val-data needs --data: synthetic scenes bring their own validation scenes")
    if args.patience is not None and args.patience < 0:
        raise ConfigError("--patience must be 0 (train every epoch) or a positive number of epochs")
    if args.epochs is not None and args.patience is None:
        cfg = replace(cfg, patience=0)  # a number of epochs asked for is a fixed budget, as it always was
    for name in ("epochs", "batch_size", "lr", "patience"):
        if getattr(args, name) is not None:
            cfg = replace(cfg, **{name: getattr(args, name)})
    if args.image_size is not None:
        cfg = replace(cfg, image_size=args.image_size)
    if args.tasks:
        tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
        if not tasks:
            raise ConfigError("--tasks names no task: give a comma-separated list such as seg,depth")
        cfg = replace(cfg, tasks=tasks)
    if args.n_train is not None:
        if args.n_train < cfg.batch_size:
            raise ConfigError(f"--n-train must be at least the batch size ({cfg.batch_size})")
        cfg = replace(cfg, n_train=args.n_train)
    if args.balance_tasks:
        cfg = replace(cfg, balance=True)
    if args.fixed_scenes:
        if args.data:
            raise ConfigError("--fixed-scenes is for synthetic scenes: a folder's images are always the same")
        cfg = replace(cfg, fresh_scenes=False)
    return cfg


def default_out(args: argparse.Namespace, arch: str, synthetic: bool) -> Path:
    if not args.model and synthetic:
        return trained_reference(args.data_dir)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", (args.model or arch).rpartition(":")[2]).strip("-.") or "model"
    return args.data_dir / "models" / f"{name}.pt"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgecut.server.mtl.report import metrics_table
    from edgecut.server.mtl.train import train

    cfg = config(args)
    out = args.out or default_out(args, cfg.arch, cfg.data == "synthetic")
    console = Console()
    if out.exists() and not args.force:
        console.print(f"{out} exists (use --force to retrain); metrics: {out.with_suffix('.metrics.json')}")
        return 0
    result = train(cfg, out=out, cache_dir=scenes_cache(args.data_dir))
    console.print(metrics_table(result.metrics, result.baseline, result.model.task_specs))
    console.print(
        f"trained in {result.seconds:.0f} s -> {out}" + (f" ({result.stopped})" if result.stopped else "")
    )
    console.print(json.dumps({"checkpoint": str(out), "seconds": round(result.seconds, 1)}))
    return 0
