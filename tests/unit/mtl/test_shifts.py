"""The shift suite: each shift is what its name says, seeded, in range, and moves labels only when the
view moves."""

from __future__ import annotations

import pytest
import torch

from edgecut.server.mtl.data import TensorSamples, synthetic_scenes
from edgecut.server.mtl.shifts import DARK_GAIN, NOISE_SIGMA, SHIFTS, shift, shifted


@pytest.fixture(scope="module")
def scenes() -> TensorSamples:
    return synthetic_scenes(8, 3, 32, show_progress=False)


def _images(data: TensorSamples) -> torch.Tensor:
    return data.tensors["image"].float() / 255.0


def test_every_shift_keeps_images_in_range_and_changes_them(scenes: TensorSamples) -> None:
    clean = _images(scenes)
    for name in SHIFTS:
        out = shifted(scenes, name, seed=1)
        x = out.tensors["image"]
        assert x.dtype == torch.float32 and x.shape == clean.shape, name
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0, name
        assert float((x - clean).abs().mean()) > 0.005, name


def test_photometric_shifts_are_what_they_say(scenes: TensorSamples) -> None:
    clean = _images(scenes)
    assert torch.allclose(shifted(scenes, "dark").tensors["image"], clean * DARK_GAIN)
    residual = shifted(scenes, "noise").tensors["image"] - clean
    inside = (clean > 0.2) & (clean < 0.8)  # away from the clip, the noise is sigma 0.08
    assert float(residual[inside].std()) == pytest.approx(NOISE_SIGMA, rel=0.1)
    cast = shifted(scenes, "cast").tensors["image"]
    assert float(cast[:, 0].mean()) > float(clean[:, 0].mean())
    assert float(cast[:, 2].mean()) < float(clean[:, 2].mean())
    blurred = shifted(scenes, "blur").tensors["image"]
    # blur removes high frequencies: neighbouring pixels differ less; the mean is kept
    assert float(blurred.diff(dim=-1).abs().mean()) < 0.6 * float(clean.diff(dim=-1).abs().mean())
    assert float(blurred.mean()) == pytest.approx(float(clean.mean()), abs=0.01)


def test_shifts_are_seeded(scenes: TensorSamples) -> None:
    a, b, c = (shifted(scenes, "all", seed=s).tensors["image"] for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_photometric_shifts_keep_labels_and_the_narrower_view_moves_them(scenes: TensorSamples) -> None:
    dark = shifted(scenes, "dark")
    assert all(torch.equal(dark.tensors[k], scenes.tensors[k]) for k in ("seg", "depth", "count"))
    zoom = shifted(scenes, "zoom")
    seg, before = zoom.tensors["seg"], scenes.tensors["seg"]
    assert seg.dtype == before.dtype and seg.shape == before.shape
    assert not torch.equal(seg, before)
    # the zoomed view's centre pixel is the original's centre pixel; its classes are ones it had
    assert torch.equal(seg[:, 16, 16], before[:, 16, 16])
    assert set(seg.unique().tolist()) <= set(before.unique().tolist())
    assert torch.equal(zoom.tensors["count"], scenes.tensors["count"])


def test_an_unknown_shift_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of dark, noise"):
        shift("fog")
