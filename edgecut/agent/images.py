"""Pictures in and out of `edgecut agent infer`: load an image as the model's input, render outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgecut.model_meta import ModelMeta, OutputSpec

from .errors import BadInput

# A fixed palette (class i -> colour) so the same class has the same colour in every picture.
_PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
    ],
    dtype=np.uint8,
)


def load_image(path: Path, meta: ModelMeta) -> np.ndarray:
    """1 x 3 x H x W float32 scaled to the model's value range (the model normalises itself)."""
    _, _, h, w = meta.input.shape
    if h is None or w is None:
        raise BadInput(f"model input {meta.input.shape} has no fixed size")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    except OSError as exc:
        raise BadInput(f"cannot read image {path}: {exc}") from exc
    lo, hi = meta.input.value_range
    arr = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    return (lo + arr * (hi - lo)).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return np.asarray(e / e.sum())


def describe(task: str, spec: OutputSpec, out: np.ndarray) -> str:
    """One line per task: the class for classification, statistics for dense outputs."""
    y = out[0]
    if spec.kind == "classification":
        p = _softmax(y)
        k = int(p.argmax())
        name = spec.classes[k] if k < len(spec.classes) else str(k)
        return f"{task}: class {name} (p={p[k]:.2f})"
    if spec.kind == "segmentation":
        labels = y.argmax(0)
        counts = np.bincount(labels.ravel(), minlength=y.shape[0]) / labels.size
        top = np.argsort(counts)[::-1][:3]
        names = [spec.classes[i] if i < len(spec.classes) else str(i) for i in top]
        return f"{task}: " + ", ".join(f"{n} {counts[i]:.0%}" for n, i in zip(names, top, strict=True))
    return f"{task}: {spec.kind} {list(y.shape)} min {y.min():.3f} mean {y.mean():.3f} max {y.max():.3f}"


def render(spec: OutputSpec, out: np.ndarray) -> Image.Image | None:
    """Segmentation as a palette PNG, depth/edges/regression as normalised grey, normals as RGB; else None."""
    y = out[0]
    if spec.kind == "segmentation":
        return Image.fromarray(_PALETTE[y.argmax(0) % len(_PALETTE)])
    if spec.kind in ("depth", "edges", "regression"):  # a regression's first channel
        d = y[0]
        span = float(d.max() - d.min()) or 1.0
        return Image.fromarray(((d - d.min()) / span * 255).astype(np.uint8))
    if spec.kind == "normals":
        n = y / (np.linalg.norm(y, axis=0, keepdims=True) + 1e-6)
        return Image.fromarray(((n.transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8))
    return None
