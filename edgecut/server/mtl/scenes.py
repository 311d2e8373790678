"""A deterministic synthetic multi-task scene generator (no download needed).

Each scene is a floor and a back wall seen by a pinhole camera, with 1-5 objects (sphere, box,
cylinder, cone) standing on the floor. Everything is rendered with a z-buffer so the labels agree:
semantic classes, metric depth, surface normals (camera frame, y down, z away from the camera),
occlusion edges and the number of visible objects. The tasks share their cues on purpose, as real
scenes do: Lambertian shading carries the normals, floor-texture frequency, object size and haze carry
depth, silhouettes carry classes, edges and count. Object colours are random so a class must be
recognised by shape and shading, not hue.

Scene i of seed s is a pure function of (s, i, size): `render(s, i)` gives the same arrays on any
machine, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENERATOR_VERSION = 1
MIN_VISIBLE_PIXELS = 10  # an object hidden below this is not counted
FLOOR, WALL, SPHERE, BOX, CYLINDER, CONE = range(6)


@dataclass
class Scene:
    image: np.ndarray  # uint8 [3, H, W]
    seg: np.ndarray  # int64 [H, W]
    depth: np.ndarray  # float32 [1, H, W], metres
    normals: np.ndarray  # float32 [3, H, W], unit vectors
    edges: np.ndarray  # float32 [1, H, W], 0/1
    count: int  # visible objects - 1 (class index)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=0, keepdims=True), 1e-8)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def render(seed: int, index: int, size: int = 64) -> Scene:
    """Render scene `index` of `seed` at `size` x `size` pixels."""
    rng = np.random.default_rng([GENERATOR_VERSION, seed, index, size])
    h = w = size
    f = float(size)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5

    horizon = rng.uniform(0.28, 0.48) * h
    cam_height = rng.uniform(1.2, 1.8)
    wall_z = rng.uniform(7.0, 11.0)

    # Background: floor below the horizon until it reaches the wall's depth, wall elsewhere.
    below = ys - horizon
    floor_z = np.where(below > 0, f * cam_height / np.maximum(below, 1e-3), np.inf)
    is_floor = floor_z < wall_z
    depth = np.where(is_floor, floor_z, wall_z).astype(np.float32)
    normals = np.zeros((3, h, w), np.float32)
    normals[1][is_floor] = -1.0
    normals[2][~is_floor] = -1.0
    seg = np.where(is_floor, FLOOR, WALL).astype(np.int64)
    instance = seg.copy()

    # Floor texture: a checker fixed in world coordinates, so its frequency on screen encodes depth.
    period = rng.uniform(0.5, 1.1)
    world_x = (xs - w / 2) * depth / f
    checker = ((np.floor(world_x / period) + np.floor(depth / period)) % 2).astype(np.float32)
    floor_a = _hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.5), rng.uniform(0.45, 0.8))
    floor_b = floor_a * rng.uniform(0.55, 0.8)
    wall_col = _hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.4), rng.uniform(0.5, 0.9))
    stripes = 0.9 + 0.1 * np.sin(xs * rng.uniform(0.3, 0.9) + rng.uniform(0, 6.28))
    albedo = np.where(
        is_floor[None],
        floor_a[:, None, None] * (1 - checker) + floor_b[:, None, None] * checker,
        wall_col[:, None, None] * stripes[None],
    ).astype(np.float32)

    n_objects = int(rng.integers(1, 6))
    for k in range(n_objects):
        cls = int(rng.integers(SPHERE, CONE + 1))
        z = rng.uniform(2.4, wall_z - 1.0)
        s = rng.uniform(0.8, 1.6)  # world size
        cx = rng.uniform(0.08, 0.92) * w
        base = horizon + f * cam_height / z  # screen row where the object touches the floor
        r = f * s / 2 / z  # screen half-width
        height = r * (2.0 if cls == SPHERE else rng.uniform(1.4, 2.6))
        dx = (xs - cx) / r
        obj_n = np.zeros((3, h, w), np.float32)
        if cls == SPHERE:
            cy = base - r
            d2 = dx**2 + ((ys - cy) / r) ** 2
            mask = d2 < 1
            nz = np.sqrt(np.clip(1 - d2, 0, 1))
            obj_n[:] = np.stack([dx, (ys - cy) / r, -nz])
            obj_z = z - s / 2 * nz
        elif cls == BOX:
            top = base - height
            lid = r * 0.5  # top face seen from above the box
            front = (np.abs(dx) < 1) & (ys >= top) & (ys < base)
            lid_mask = (np.abs(dx) < 1) & (ys >= top - lid) & (ys < top)
            mask = front | lid_mask
            obj_n[2][front] = -1.0
            obj_n[1][lid_mask] = -1.0
            obj_z = np.where(lid_mask, z, z - s / 2).astype(np.float32)
        elif cls == CYLINDER:
            mask = (np.abs(dx) < 1) & (ys >= base - height) & (ys < base)
            nz = np.sqrt(np.clip(1 - dx**2, 0, 1))
            obj_n[:] = np.stack([dx, np.zeros_like(dx), -nz])
            obj_z = z - s / 2 * nz
        else:  # cone: the half-width grows linearly from the apex to the base
            apex = base - height
            frac = np.clip((ys - apex) / height, 0, 1)
            half = np.maximum(frac, 1e-3)
            u = dx / half
            mask = (np.abs(u) < 1) & (ys >= apex) & (ys < base)
            nz = np.sqrt(np.clip(1 - u**2, 0, 1))
            obj_n[:] = np.stack([u * 0.9, -0.45 * np.ones_like(u), -nz])
            obj_z = z - s / 2 * nz * frac
        visible = mask & (obj_z < depth)
        depth = np.where(visible, obj_z, depth).astype(np.float32)
        normals = np.where(visible[None], _unit(obj_n), normals)
        seg = np.where(visible, cls, seg)
        instance = np.where(visible, 2 + k, instance)
        colour = _hsv_to_rgb(rng.uniform(), rng.uniform(0.4, 1.0), rng.uniform(0.6, 1.0))
        albedo = np.where(visible[None], colour[:, None, None], albedo)

    # Lambertian shading with a random light from above and in front, plus haze with distance.
    light = _unit(np.array([rng.uniform(-0.6, 0.6), rng.uniform(-1.0, -0.4), rng.uniform(-1.0, -0.4)]))
    ambient = rng.uniform(0.25, 0.45)
    shade = ambient + (1 - ambient) * np.clip(np.tensordot(light, normals, axes=1), 0, 1)
    haze = 1 - np.exp(-depth / rng.uniform(12.0, 25.0))
    haze_col = rng.uniform(0.6, 0.9)
    img = albedo * shade[None] * (1 - haze[None]) + haze_col * haze[None]
    img = img * rng.uniform(0.8, 1.15) + rng.normal(0, 0.03, img.shape)
    image = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)

    edge = np.zeros((h, w), bool)
    diff_x = instance[:, 1:] != instance[:, :-1]
    diff_y = instance[1:, :] != instance[:-1, :]
    edge[:, 1:] |= diff_x
    edge[:, :-1] |= diff_x
    edge[1:, :] |= diff_y
    edge[:-1, :] |= diff_y

    counted = sum(int((instance == 2 + k).sum() >= MIN_VISIBLE_PIXELS) for k in range(n_objects))
    return Scene(
        image=image,
        seg=seg.astype(np.int64),
        depth=depth[None].astype(np.float32),
        normals=normals.astype(np.float32),
        edges=edge[None].astype(np.float32),
        count=max(counted, 1) - 1,
    )
