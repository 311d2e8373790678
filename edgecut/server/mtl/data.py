"""Torch datasets of multi-task samples: a batch is a dict of tensors keyed by "image" and task names.

`image` is float32 N x 3 x H x W in [0, 1]; dense targets are N x C x H x W (segmentation N x H x W
int64, 255 = ignore); classification targets are N int64.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edgecut.server.mtl.scenes import GENERATOR_VERSION, render
from edgecut.server.progress import progress_bar

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
IGNORE_INDEX = 255


class TensorSamples(Dataset[Batch]):
    """Samples held in memory as stacked tensors (fast to index and to batch)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"all tensors need the same length, got {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> Batch:
        return {k: v[i] for k, v in self.tensors.items()}

    def image(self, i: int) -> torch.Tensor:
        return (
            self.tensors["image"][i].float() / 255.0
            if self.tensors["image"].dtype == torch.uint8
            else self.tensors["image"][i]
        )


def _as_float_images(batch: Batch) -> Batch:
    if batch["image"].dtype == torch.uint8:
        batch = dict(batch)
        batch["image"] = batch["image"].float() / 255.0
    return batch


def synthetic_scenes(
    n: int,
    seed: int = 0,
    size: int = 64,
    cache_dir: Path | None = None,
    show_progress: bool = True,
    start: int = 0,
) -> TensorSamples:
    """Scenes `start` .. `start + n - 1` of `seed`, cached under `cache_dir` as an .npz keyed by their
    parameters."""
    part = f"/{start}" if start else ""  # the first n scenes keep the key they always had
    key = hashlib.sha256(f"{GENERATOR_VERSION}/{n}/{seed}/{size}{part}".encode()).hexdigest()[:16]
    path = cache_dir / f"scenes-{n}-{seed}-{size}-{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        with np.load(path) as z:
            return TensorSamples({k: torch.from_numpy(z[k]) for k in z.files})
    arrays: dict[str, list[np.ndarray]] = {
        k: [] for k in ("image", "seg", "depth", "normals", "edges", "count")
    }
    with progress_bar(f"rendering {n} scenes", total=n, enabled=show_progress) as advance:
        for i in range(start, start + n):
            s = render(seed, i, size)
            arrays["image"].append(s.image)
            arrays["seg"].append(s.seg)
            arrays["depth"].append(s.depth)
            arrays["normals"].append(s.normals.astype(np.float16))
            arrays["edges"].append(s.edges.astype(np.uint8))
            arrays["count"].append(np.asarray(s.count, dtype=np.int64))
            advance(1)
    stacked = {k: np.stack(v) for k, v in arrays.items()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # two runs may share a cache
        np.savez(tmp, **stacked)  # type: ignore[arg-type]
        tmp.replace(path)
    return TensorSamples({k: torch.from_numpy(v) for k, v in stacked.items()})


def to_model_batch(batch: Batch) -> Batch:
    """Decode the compact storage dtypes into what models and losses take."""
    out = _as_float_images(batch)
    out = dict(out)
    for k in ("normals", "edges", "depth"):
        if k in out and out[k].dtype != torch.float32:
            out[k] = out[k].float()
    return out


def loader(ds: Dataset[Batch], batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader[Batch]:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=False)


def batches(ds: Dataset[Batch], batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
    for b in loader(ds, batch_size, shuffle, seed):
        yield to_model_batch(b)
