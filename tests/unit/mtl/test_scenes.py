"""The synthetic scene generator: deterministic, and its labels agree with each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgecut.server.mtl.data import synthetic_scenes
from edgecut.server.mtl.scenes import BOX, CONE, CYLINDER, FLOOR, SPHERE, WALL, Scene, render

FIELDS = ("image", "seg", "depth", "normals", "edges")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _same(a: Scene, b: Scene) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS) and a.count == b.count


def _differs_from_a_neighbour(a: np.ndarray, tol: float | None = None) -> np.ndarray:
    """Pixels with a 4-neighbour of another value (or, with `tol`, one more than `tol` away)."""

    def step(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return x != y if tol is None else np.abs(x - y) > tol

    out = np.zeros(a.shape, bool)
    dx, dy = step(a[:, 1:], a[:, :-1]), step(a[1:], a[:-1])
    out[:, 1:] |= dx
    out[:, :-1] |= dx
    out[1:] |= dy
    out[:-1] |= dy
    return out


def test_same_seed_and_index_give_identical_scenes_in_any_order() -> None:
    forward = [render(3, i, 32) for i in range(4)]
    backward = [render(3, i, 32) for i in reversed(range(4))][::-1]
    assert all(_same(a, b) for a, b in zip(forward, backward, strict=True))
    assert not _same(forward[0], forward[1])


def test_different_seeds_give_different_scenes() -> None:
    a, b = render(0, 0, 32), render(1, 0, 32)
    assert not np.array_equal(a.image, b.image) and not np.array_equal(a.depth, b.depth)


def test_synthetic_scenes_cache_gives_the_rendered_arrays(tmp_path: Path) -> None:
    fresh = synthetic_scenes(3, 5, 24, cache_dir=tmp_path, show_progress=False)
    assert len(list(tmp_path.glob("scenes-3-5-24-*.npz"))) == 1
    cached = synthetic_scenes(3, 5, 24, cache_dir=tmp_path, show_progress=False)
    for k, v in fresh.tensors.items():
        assert torch.equal(v, cached.tensors[k])
    s = render(5, 2, 24)
    assert np.array_equal(cached.tensors["image"][2].numpy(), s.image)
    assert np.array_equal(cached.tensors["seg"][2].numpy(), s.seg)
    assert int(cached.tensors["count"][2]) == s.count


def test_labels_are_consistent_with_each_other() -> None:
    class_pixels = np.zeros(6)
    counts = []
    for i in range(60):
        s = render(0, i, 48)
        assert s.image.shape == (3, 48, 48) and s.image.dtype == np.uint8 and s.image.std() > 5
        assert s.seg.shape == (48, 48) and s.seg.dtype == np.int64
        assert s.seg.min() >= FLOOR and s.seg.max() <= CONE
        assert s.depth.shape == (1, 48, 48) and (s.depth > 1.0).all() and (s.depth <= 11.0).all()
        norm = np.linalg.norm(s.normals, axis=0)
        assert np.allclose(norm, 1.0, atol=1e-5)
        floor = s.seg == FLOOR
        assert np.allclose(s.normals[:, floor].T, [0, -1, 0])  # the floor faces up (y is down)
        assert np.allclose(s.normals[:, s.seg == WALL].T, [0, 0, -1])  # the wall faces the camera
        edges = s.edges[0] > 0
        assert set(np.unique(s.edges)) <= {0.0, 1.0}
        # every class boundary is an edge; every edge separates classes or jumps in depth
        seg_boundary = _differs_from_a_neighbour(s.seg)
        assert not (seg_boundary & ~edges).any()
        depth_step = _differs_from_a_neighbour(s.depth[0], tol=0.01)
        assert not (edges & ~seg_boundary & ~depth_step).any()
        assert 0 <= s.count <= 4
        # each object class with many pixels needs an object of its own in the count (5 objects max)
        big_classes = [c for c in (SPHERE, BOX, CYLINDER, CONE) if (s.seg == c).sum() >= 50]
        assert len(big_classes) <= s.count + 1
        class_pixels += np.bincount(s.seg.ravel(), minlength=6)
        counts.append(s.count)
    share = class_pixels / class_pixels.sum()
    assert share[FLOOR] > 0.15 and share[WALL] > 0.15  # background dominates, as in real rooms
    assert (share[SPHERE:] > 0.01).all() and share[SPHERE:].sum() > 0.08  # every object class is seen
    assert len(set(counts)) >= 4  # counts are spread over the classes


def test_size_changes_resolution_not_the_contract() -> None:
    small, large = render(2, 1, 24), render(2, 1, 40)
    assert small.image.shape == (3, 24, 24) and large.image.shape == (3, 40, 40)
    assert large.edges.shape == (1, 40, 40) and large.normals.shape == (3, 40, 40)
