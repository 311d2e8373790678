"""The shift suite (issue 31): named, seeded covariate shifts of multi-task batches, as a device in a dim
garage, behind a noisy sensor, a soft lens, a tinted window or a fixed, narrower view would see them.

Images are float N x 3 x H x W in [0, 1] (mtl/data.py); every shifted image is clipped back into it.
The photometric shifts change the image only (the labels stay true); "zoom" is the narrower viewpoint:
a fixed centre crop of 3/4 of the frame scaled back to the input size, applied to the labels too (seg
by nearest neighbour, depth and normals resampled the same way: a crop narrows the field of view, it
does not move the camera, so depth and camera-frame normals keep their values). "all" is the four
photometric shifts at once (dark, colour cast, blur, then noise, the order a camera applies them),
the combined shift the issue's probe measured. A shift's randomness (only the noise has any) comes
from its seed, so a shifted set is the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgecut.server.mtl.data import Batch, TensorSamples

DARK_GAIN = 0.4
NOISE_SIGMA = 0.08
BLUR_SIZE, BLUR_SIGMA = 5, 1.0
CAST_GAINS = (1.25, 1.0, 0.65)  # a warm (tungsten) cast: red up, blue down
ZOOM_CROP = 0.75  # the share of the frame's side the narrower view keeps

ImageFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def dark(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x * DARK_GAIN


def noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return (x + NOISE_SIGMA * torch.randn(x.shape, generator=g)).clamp(0.0, 1.0)


def _gaussian(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-(r**2) / (2 * sigma**2))
    return k / k.sum()


def blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A 5x5 Gaussian (sigma 1 pixel), edges replicated so the border does not darken."""
    k1 = _gaussian(BLUR_SIZE, BLUR_SIGMA)
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, BLUR_SIZE, BLUR_SIZE)
    pad = BLUR_SIZE // 2
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), kernel, groups=x.shape[1])


def cast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    gains = torch.tensor(CAST_GAINS, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * gains).clamp(0.0, 1.0)


def combined(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return noise(blur(cast(dark(x, g), g), g), g)


def centre_zoom(t: torch.Tensor, crop: float, mode: str = "bilinear") -> torch.Tensor:
    """Centre crop of `crop` of the side, scaled back to the side (t: N x C x H x W): a narrower view."""
    h, w = t.shape[-2:]
    ch, cw = round(h * crop), round(w * crop)
    if (ch, cw) == (h, w):
        return t
    top, left = (h - ch) // 2, (w - cw) // 2
    cropped = t[..., top : top + ch, left : left + cw]
    if mode == "nearest":
        return F.interpolate(cropped, size=(h, w), mode="nearest")
    return F.interpolate(cropped, size=(h, w), mode=mode, align_corners=False)


def _zoom(t: torch.Tensor, mode: str) -> torch.Tensor:
    return centre_zoom(t, ZOOM_CROP, mode)


@dataclass(frozen=True)
class Shift:
    """A named covariate shift: `images` transforms an image batch; `geometric` shifts move labels too."""

    name: str
    description: str
    images: ImageFn
    geometric: bool = False

    def apply(self, batch: Batch, seed: int = 0) -> Batch:
        """`batch` (float images in [0, 1]) as the shifted camera sees it, its labels moved alike."""
        g = torch.Generator().manual_seed(seed)
        image = batch["image"]
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        out = dict(batch)
        out["image"] = self.images(image.float(), g).clamp(0.0, 1.0)
        if self.geometric:
            for key, value in batch.items():
                if key != "image" and value.dim() >= 3:  # dense labels (seg N x H x W, others N x C x H x W)
                    out[key] = _zoom_label(value)
        return out


def _zoom_label(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 3:  # segmentation: class indices, nearest neighbour only
        return _zoom(t[:, None].float(), "nearest")[:, 0].to(t.dtype)
    return _zoom(t.float(), "nearest").to(t.dtype)


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("dark", f"dark (x{DARK_GAIN:g})", dark),
        Shift("noise", f"sensor noise (σ {NOISE_SIGMA:g})", noise),
        Shift("blur", f"blur ({BLUR_SIZE}x{BLUR_SIZE} Gaussian, σ {BLUR_SIGMA:g} px)", blur),
        Shift("cast", "colour cast (RGB gains " + ", ".join(f"{v:g}" for v in CAST_GAINS) + ")", cast),
        Shift(
            "zoom",
            f"narrower view (fixed centre crop of {ZOOM_CROP:.0%} of the side, zoomed back)",
            lambda x, g: _zoom(x, "bilinear"),
            geometric=True,
        ),
        Shift("all", "dark + colour cast + blur + noise at once", combined),
    )
}


def shift(name: str) -> Shift:
    """The shift called `name`; an unknown one raises ValueError naming the choices."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}: choose one of {', '.join(SHIFTS)}")
    return SHIFTS[name]


def shifted(data: TensorSamples, name: str, seed: int = 0) -> TensorSamples:
    """Every sample of `data` as shift `name` (seeded) renders it, as float images in [0, 1]."""
    return TensorSamples(shift(name).apply(dict(data.tensors), seed))
