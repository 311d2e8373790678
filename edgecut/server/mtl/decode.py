"""How one file of a labelled folder becomes an array: the image, and each dense task kind's labels.

Every decoder returns C x H x W and fails with a DatasetError naming the file, never silently:

- image: uint8 (png, jpg, npy) is divided by 255, 16-bit by 65535; a float image must already lie in
  [0, 1] unless an explicit `image_scale` is given (it is divided by that), and may not hold NaN.
- segmentation: integer ids; 255 in a png, a negative id in an npy marks an unlabelled pixel.
- depth: metres (npy) or a 16-bit png in millimetres; the raw value `missing` (default 0), negative
  and non-finite values mark "no measurement" (stored as 0, as in data.py).
- regression: any real values, every one a measurement (0 included); npy as saved, a png's integers
  times `scale`; NaN or Inf is an error.
- normals: unit vectors; npy in [-1, 1], RGB png mapping [-1, 1] to [0, 255]; all-zero (npy) or too
  short / too long (png: black, white) = no measurement.
- edges: png > 127 or npy > 0.5 is an edge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from edgecut.server.errors import DatasetError
from edgecut.server.mtl.data import IGNORE_INDEX

MIN_NORMAL_LENGTH = 0.5  # a decoded normal shorter than this marks "no measurement"
MAX_PNG_NORMAL_LENGTH = 1.5  # and, in a png, one longer than this (black, white)
IMAGE_TOLERANCE = 1e-3  # float images may overshoot [0, 1] by rounding, not more
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L")

# Per-task options a tasks.json entry may carry, by the decoder that reads them.
Options = dict[str, Any]


def load(path: Path) -> np.ndarray | Image.Image:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def hw(arr: np.ndarray, channels: int | None, path: Path) -> np.ndarray:
    """`arr` as C x H x W, from H x W, H x W x C or C x H x W (`channels` None: any, H x W x C preferred)."""
    if arr.ndim == 2 and channels in (None, 1):
        return arr[None]
    if arr.ndim == 3 and channels is None:
        return np.moveaxis(arr, -1, 0) if arr.shape[-1] <= arr.shape[0] else arr
    if arr.ndim == 3 and arr.shape[-1] == channels:
        return np.moveaxis(arr, -1, 0)
    if arr.ndim == 3 and arr.shape[0] == channels:
        return arr
    raise DatasetError(f"{path} has shape {arr.shape}: expected H x W x {channels or 'C'}")


def image(path: Path, scale: float | None = None) -> np.ndarray:
    """3 x H x W float32 in [0, 1] (see the module docstring for what is accepted)."""
    data = load(path)
    if isinstance(data, Image.Image):
        if data.mode in SIXTEEN_BIT:
            arr = np.asarray(data).astype(np.float32)[None].repeat(3, 0) / 65535.0
        elif data.mode in ("I", "F"):
            arr = np.asarray(data).astype(np.float32)[None].repeat(3, 0)
            return _float_image(arr, path, scale)
        else:
            arr = np.moveaxis(np.asarray(data.convert("RGB"), np.float32) / 255.0, -1, 0)
        return np.ascontiguousarray(arr)
    arr = hw(data, 3, path)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DatasetError(f"{path} holds {arr.dtype} values: save images as uint8 or as floats in [0, 1]")
    return _float_image(arr.astype(np.float32), path, scale)


def _float_image(arr: np.ndarray, path: Path, scale: float | None) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise DatasetError(f"{path} holds NaN or infinite values: an image must be finite")
    if scale is not None:
        arr = arr / scale
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < -IMAGE_TOLERANCE or hi > 1.0 + IMAGE_TOLERANCE:
        scaled = f" after dividing by --image-scale {scale:g}" if scale is not None else ""
        raise DatasetError(
            f"{path} holds values from {lo:.4g} to {hi:.4g}{scaled}, outside [0, 1]: save float images "
            "in [0, 1] (or as uint8), or give the scale they use with --image-scale (e.g. 255)"
        )
    return np.clip(arr, 0.0, 1.0)


def _seg(path: Path, _opts: Options) -> np.ndarray:
    data = load(path)
    if isinstance(data, Image.Image):
        if data.mode not in ("L", "P", "I", *SIXTEEN_BIT):
            raise DatasetError(f"{path} is a {data.mode} png: save seg labels as 8-bit single-channel ids")
        return np.asarray(data).astype(np.int64)[None]
    arr = hw(data, 1, path).astype(np.float64)
    out = np.where(np.isfinite(arr) & (arr >= 0), np.round(np.nan_to_num(arr)), IGNORE_INDEX)
    return out.astype(np.int64)


def _depth(path: Path, opts: Options) -> np.ndarray:
    data = load(path)
    missing = opts.get("missing", 0)
    if isinstance(data, Image.Image):
        if data.mode not in ("I", *SIXTEEN_BIT):
            raise DatasetError(
                f"{path} is a {data.mode} png: save depth as a 16-bit png in millimetres "
                "or as a float .npy in metres"
            )
        raw = np.asarray(data).astype(np.float64)[None]
        arr = raw / 1000.0
    else:
        raw = hw(data, 1, path).astype(np.float64)
        arr = raw
    valid = np.isfinite(raw) & (arr > 0)
    if missing is not None:
        valid &= raw != missing
    return np.where(valid, arr, 0.0).astype(np.float32)


def _regression(path: Path, opts: Options) -> np.ndarray:
    data = load(path)
    if isinstance(data, Image.Image):
        if data.mode not in ("L", "I", "F", *SIXTEEN_BIT):
            raise DatasetError(
                f"{path} is a {data.mode} png: save a regression as single-channel values or .npy"
            )
        arr = np.asarray(data).astype(np.float32)[None] * float(opts.get("scale", 1.0))
    else:
        arr = hw(data, opts.get("channels"), path).astype(np.float32) * float(opts.get("scale", 1.0))
    if not np.isfinite(arr).all():
        raise DatasetError(
            f"{path} holds NaN or infinite values: every value of a regression is a measurement"
        )
    return arr


def _normals(path: Path, _opts: Options) -> np.ndarray:
    data = load(path)
    if isinstance(data, Image.Image):
        arr = np.moveaxis(np.asarray(data.convert("RGB"), np.float32), -1, 0) / 255.0 * 2.0 - 1.0
        longest = MAX_PNG_NORMAL_LENGTH  # black (-1, -1, -1) and white are not normals
    else:
        arr = np.nan_to_num(hw(data, 3, path).astype(np.float32))
        longest = np.inf
    norm = np.linalg.norm(arr, axis=0, keepdims=True)
    valid = (norm >= MIN_NORMAL_LENGTH) & (norm <= longest)
    return np.where(valid, arr / np.maximum(norm, 1e-8), 0.0).astype(np.float32)


def _edges(path: Path, _opts: Options) -> np.ndarray:
    data = load(path)
    if isinstance(data, Image.Image):
        return (np.asarray(data.convert("L")) > 127).astype(np.float32)[None]
    return (hw(data, 1, path) > 0.5).astype(np.float32)


# How each dense task kind is read from one file, as a C x H x W array.
DECODERS: dict[str, Callable[[Path, Options], np.ndarray]] = {
    "segmentation": _seg,
    "depth": _depth,
    "regression": _regression,
    "normals": _normals,
    "edges": _edges,
}


def resize_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x[None].float(), size=(size, size), mode="nearest-exact")[0].to(x.dtype)


def resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def _resize_valid(x: torch.Tensor, valid: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear over the `valid` (H x W) pixels only (normalised convolution); the mask goes nearest."""
    v = valid.float()[None]  # 1 x H x W
    num = resize_bilinear(x * v, size)
    den = resize_bilinear(v, size)
    keep = (resize_nearest(v, size) > 0.5) & (den > 1e-6)
    return torch.where(keep, num / den.clamp_min(1e-6), torch.zeros(())), keep


def resize(kind: str, x: torch.Tensor, size: int) -> torch.Tensor:
    """Labels of `kind` at size x size: nearest for classes, valid-only bilinear for measurements."""
    if kind in ("segmentation", "edges"):
        return resize_nearest(x, size)
    if kind == "regression":
        return resize_bilinear(x, size)
    if kind == "depth":
        return _resize_valid(x, x[0] > 0, size)[0]
    # normals: re-normalise, since averaging unit vectors shortens them
    y, keep = _resize_valid(x, x.abs().sum(0) > 0, size)
    return torch.where(keep, F.normalize(y, dim=0), torch.zeros(()))
