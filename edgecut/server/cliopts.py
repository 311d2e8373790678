"""Command-line options that several server commands share: the model class, data sources, image scale.

argparse only (no torch): every command registers its options without importing the engine.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from edgecut.errors import ConfigError
from edgecut.server.spec import MIN_DELTA_M

MODEL_HELP = (
    "the model class: a registered name, an `edgecut.models` entry point, or module:Class imported "
    "from the current folder or PYTHONPATH (default: the one the checkpoint records)"
)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_model(p: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    p.add_argument("--model", metavar="NAME|module:Class", help=help)


VAL_HELP = (
    "labelled folder to report quality on (default: the calibration folder's val split, else synthetic "
    "scenes when calibrating on them and they label every task)"
)


def add_data(p: argparse.ArgumentParser, calib: bool = True, val_help: str = VAL_HELP) -> None:
    if calib:
        p.add_argument(
            "--calib-data",
            metavar="FOLDER",
            help="images to calibrate on (BatchNorm statistics, channel scores, recovery): a folder, or "
            "'synthetic' for edgecut's scenes (default: the data the checkpoint was trained on, else "
            "--val-data's images; a model with neither is refused)",
        )
    p.add_argument("--val-data", metavar="FOLDER", help=val_help)
    p.add_argument(
        "--image-scale",
        type=positive_float,
        metavar="S",
        help="divide float images by S (for folders whose float images are not in [0, 1], e.g. 255)",
    )


def floor_value(text: str) -> float:
    """`--min-delta-m`: a Δm in % (e.g. -30), or 'off' (-inf: no floor)."""
    if text.strip().lower() == "off":
        return -math.inf
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a Δm in % such as -30, or off; got {text!r}")
    return value


def add_floor(p: argparse.ArgumentParser, default: float | None = MIN_DELTA_M) -> None:
    p.add_argument(
        "--min-delta-m",
        type=floor_value,
        default=default,
        metavar="PCT|off",
        help=f"fail a build whose Δm against the full model falls below PCT %% (default {MIN_DELTA_M:g}; "
        "off = ship whatever it measures)",
    )


def model_config(text: str | None) -> dict[str, Any]:
    """`--model-config` JSON: the keyword arguments of the model class."""
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--model-config is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise ConfigError("--model-config must be a JSON object of keyword arguments, e.g. '{\"width\": 32}'")
    if {"tasks", "input_size"} & set(doc):
        raise ConfigError(
            "--model-config must not set tasks or input_size: they come from the data and --image-size"
        )
    return doc
