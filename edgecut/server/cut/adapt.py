"""Adapting a tailored model to one device from its statistics summary alone (issue 31): the server never
sees the device's images, only the per-layer mean and variance its statistics model measured on them
(edgecut/norm_stats.py, `Layers`).

Two methods (`AdaptOptions.method`):
- "adabn": install the summary as the model's BatchNorm statistics (statistics.install_statistics).
  The issue's probe: it recovers 82-98 % of what a single shift costs, but only 56 % of the combined one.
- "restyle" (the default): find the camera that would have produced the summary, then teach the model
  to see through it. A small differentiable corruption family (per-channel gain and offset, Gaussian blur
  sigma, additive noise sigma: `Restyle`) is fitted so that the statistics model, run on the server's
  calibration images passed through it, reports statistics matching the summary at every layer (not the
  input's alone: blur and noise show in the deeper layers). Then the tailored model is distilled from
  its teacher, the teacher seeing each clean calibration image and the student the same image restyled
  (fresh noise every step). By default (`batchnorm="device"`) its BatchNorm keeps the summary's statistics
  throughout (it starts from AdaBN's model and learns its weights under the device's own normalisation);
  `batchnorm="restyled"` normalises by each restyled batch and re-estimates on restyled images at the end
  (measured worse where noise is involved: the fitted camera's statistics are only an approximation).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from edgecut.norm_stats import INPUT, Layers, StatsError
from edgecut.server.cut.objective import recovery_loss
from edgecut.server.cut.recover import recalibrate_batchnorm
from edgecut.server.cut.statistics import StatisticsModel, install_statistics
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, TensorSamples, batches
from edgecut.server.spec import ProgressFn

logger = logging.getLogger(__name__)

Method = Literal["adabn", "restyle"]
_EPS = 1e-5
_BLUR_SIZE = 7  # room for a blur sigma up to ~2 px


@dataclass(frozen=True)
class AdaptOptions:
    """How a tailored model is adapted to a summary: the method, then the restyle search (`search_steps`
    of Adam on `search_images` calibration images) and the distillation (`steps` at `lr`)."""

    method: Method = "restyle"
    search_steps: int = 30
    search_images: int = 16  # (each search step runs the statistics model forward and back on them)
    search_lr: float = 0.05
    steps: int = 60
    lr: float = 1e-3
    batch_size: int = 16
    # BatchNorm during and after the distillation: "device" keeps the summary's statistics installed
    # (frozen: the student learns its weights under the device's own normalisation); "restyled"
    # normalises each restyled batch by itself and re-estimates them on restyled images at the end
    batchnorm: Literal["device", "restyled"] = "device"
    bn_batches: int = 8  # batches of restyled images the final BatchNorm statistics are measured on
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batchnorm not in ("device", "restyled"):
            raise ValueError(f"unknown batchnorm {self.batchnorm!r}: choose device or restyled")
        if self.method not in ("adabn", "restyle"):
            raise ValueError(f"unknown adaptation method {self.method!r}: choose adabn or restyle")
        for name in ("search_steps", "search_images", "steps", "batch_size", "bn_batches"):
            if getattr(self, name) < 0 or (
                name in ("search_images", "batch_size") and not getattr(self, name)
            ):
                raise ValueError(f"AdaptOptions.{name} must be positive, got {getattr(self, name)}")


@dataclass
class AdaptReport:
    """The adapted `model` (a copy, eval mode), the camera the search found, and how well it matched."""

    model: MultiTaskModel
    method: Method
    camera: dict[str, float] = field(default_factory=dict)  # the fitted Restyle's parameters
    match_before: float = float("nan")  # the statistics distance of clean calibration images
    match_after: float = float("nan")  # ... and of restyled ones (lower: closer to the device)
    distill_loss: tuple[float, float] = (float("nan"), float("nan"))  # first and last step


class Restyle(nn.Module):
    """A camera in a few parameters: per-channel gain and offset, then a Gaussian blur, then noise."""

    def __init__(self) -> None:
        super().__init__()
        self.log_gain = nn.Parameter(torch.zeros(3))
        self.offset = nn.Parameter(torch.zeros(3))
        # softplus keeps both sigmas positive with a gradient everywhere (|x| has none at 0, where they start)
        self.blur = nn.Parameter(torch.tensor(-3.0))  # blur sigma = 0.25 + softplus(blur) px: ~0.3, none
        self.noise = nn.Parameter(torch.tensor(-5.0))  # noise sigma = softplus(noise): ~0.007

    @torch.no_grad()
    def start_from(self, images: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Start at the per-channel affine map that gives `images` the input statistics `mean`, `var`
        (the search then only refines it and finds the blur and the noise)."""
        dims = [0, 2, 3]
        m, v = images.mean(dim=dims), images.var(dim=dims, unbiased=False)
        gain = torch.sqrt((var + _EPS) / (v + _EPS)).clamp(0.05, 20.0)
        self.log_gain.copy_(gain.log())
        self.offset.copy_(mean - gain * m)

    def blur_sigma(self) -> torch.Tensor:
        return 0.25 + F.softplus(self.blur)

    def noise_sigma(self) -> torch.Tensor:
        return F.softplus(self.noise)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        y = x * self.log_gain.exp().view(1, 3, 1, 1) + self.offset.view(1, 3, 1, 1)
        r = torch.arange(_BLUR_SIZE, dtype=x.dtype) - (_BLUR_SIZE - 1) / 2
        k1 = torch.exp(-(r**2) / (2 * self.blur_sigma() ** 2))
        k1 = k1 / k1.sum()
        kernel = (k1[:, None] * k1[None, :]).expand(3, 1, _BLUR_SIZE, _BLUR_SIZE)
        pad = _BLUR_SIZE // 2
        y = F.conv2d(F.pad(y, (pad, pad, pad, pad), mode="replicate"), kernel, groups=3)
        return (y + self.noise_sigma() * eps).clamp(0.0, 1.0)

    def describe(self) -> dict[str, float]:
        gain = self.log_gain.detach().exp().tolist()
        offset = self.offset.detach().tolist()
        return {
            **{f"gain_{c}": round(g, 3) for c, g in zip("rgb", gain, strict=True)},
            **{f"offset_{c}": round(o, 3) for c, o in zip("rgb", offset, strict=True)},
            "blur_sigma": round(float(self.blur_sigma().detach()), 3),
            "noise_sigma": round(float(self.noise_sigma().detach()), 4),
        }


def adapt(
    model: MultiTaskModel,
    teacher: MultiTaskModel,
    layers: Layers,
    calib: Dataset[Batch],
    options: AdaptOptions = AdaptOptions(),
    progress: ProgressFn | None = None,
) -> AdaptReport:
    """`model` (left as it is) adapted to a device whose statistics model measured `layers`; `teacher` is
    the decomposed original it was tailored from, `calib` the server's (clean, unlabelled) images.

    Raises StatsError (one sentence) when the summary is not of this model's statistics model."""
    say = progress or (lambda stage, fraction, detail: None)
    stats = StatisticsModel(model)
    missing = [n for n in stats.layers if n not in layers]
    if missing:
        raise StatsError(
            f"the summary lacks layer {missing[0]!r} ({len(missing)} of {len(stats.layers)} missing): "
            "it is of another model"
        )
    adapted = copy.deepcopy(model).eval()
    install_statistics(adapted, layers)  # also checks every width against the model
    if options.method == "adabn":
        return AdaptReport(adapted, "adabn")
    torch.manual_seed(options.seed)
    images = _images(calib, options.search_images)
    target = {
        n: (torch.as_tensor(m, dtype=torch.float32), torch.as_tensor(v, dtype=torch.float32))
        for n, (m, v) in layers.items()
        if n in stats.layers
    }
    camera = Restyle()
    camera.start_from(images, *target[INPUT])
    before, after = _fit(stats, camera, images, target, options, say)
    camera.requires_grad_(False)
    report = AdaptReport(adapted, "restyle", camera.describe(), before, after)
    logger.info("adaptation: camera %s, statistics distance %.3f -> %.3f", report.camera, before, after)
    report.distill_loss = _distil(adapted, teacher, camera, calib, options, say)
    if options.batchnorm == "restyled":
        say("adapting", 0.95, "re-estimating BatchNorm on restyled images")
        restyled = _restyled(calib, camera, options)
        recalibrate_batchnorm(adapted, restyled, options.bn_batches, options.batch_size)
    adapted.eval()
    return report


def _images(calib: Dataset[Batch], n: int) -> torch.Tensor:
    out: list[torch.Tensor] = []
    for batch in batches(calib, min(n, 64)):
        out.append(batch["image"])
        if sum(len(x) for x in out) >= n:
            break
    if not out:
        raise StatsError("adaptation needs calibration images and there are none")
    return torch.cat(out)[:n]


def distance(
    found: dict[str, tuple[torch.Tensor, torch.Tensor]], target: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """How far statistics are from the device's: per layer, the mean over channels of the squared mean
    difference in units of the device's variance plus the squared log variance ratio; then the mean over
    layers (each layer counts once, however wide)."""
    parts = []
    for name, (tm, tv) in target.items():
        m, v = found[name]
        parts.append(((m - tm) ** 2 / (tv + _EPS) + (torch.log(v + _EPS) - torch.log(tv + _EPS)) ** 2).mean())
    return torch.stack(parts).mean()


def _measure(stats: StatisticsModel, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = stats(x)
    return {name: (out[2 * i], out[2 * i + 1]) for i, name in enumerate(stats.layers)}


def _fit(
    stats: StatisticsModel,
    camera: Restyle,
    images: torch.Tensor,
    target: dict[str, tuple[torch.Tensor, torch.Tensor]],
    options: AdaptOptions,
    say: ProgressFn,
) -> tuple[float, float]:
    """Fit `camera` so the statistics of restyled `images` match `target`; the distance before and after."""
    stats.requires_grad_(False)
    g = torch.Generator().manual_seed(options.seed)
    eps = torch.randn(images.shape, generator=g)
    with torch.no_grad():
        before = float(distance(_measure(stats, images), target))
    opt = torch.optim.Adam(camera.parameters(), lr=options.search_lr)
    best, best_state = math.inf, copy.deepcopy(camera.state_dict())
    for step in range(options.search_steps):
        loss = distance(_measure(stats, camera(images, eps)), target)
        if float(loss.detach()) < best:
            best, best_state = float(loss.detach()), copy.deepcopy(camera.state_dict())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            say(
                "adapting",
                0.4 * step / options.search_steps,
                f"matching statistics: distance {float(loss.detach()):.3f}",
            )
    with torch.no_grad():
        last = float(distance(_measure(stats, camera(images, eps)), target))
    if last > best:
        camera.load_state_dict(best_state)
    return before, min(best, last)


def _distil(
    student: MultiTaskModel,
    teacher: MultiTaskModel,
    camera: Restyle,
    calib: Dataset[Batch],
    options: AdaptOptions,
    say: ProgressFn,
) -> tuple[float, float]:
    """Teacher on the clean image, student on it restyled: the student learns the teacher's answers
    through the device's camera."""
    if options.steps <= 0:
        return float("nan"), float("nan")
    teacher.eval()
    opt = torch.optim.AdamW(
        [p for p in student.parameters() if p.requires_grad], lr=options.lr, weight_decay=1e-4
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, options.steps)
    g = torch.Generator().manual_seed(options.seed + 1)
    student.train()
    if options.batchnorm == "device":  # the device's statistics stay installed: BatchNorm in eval mode
        for m in student.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    step, first, last, epoch = 0, float("nan"), float("nan"), 0
    while step < options.steps:
        for batch in batches(calib, options.batch_size, shuffle=True, seed=options.seed + epoch):
            x = batch["image"]
            with torch.no_grad():
                target = {f"teacher:{t}": y for t, y in teacher(x).items()}
                seen = camera(x, torch.randn(x.shape, generator=g))
            loss = recovery_loss(student.task_specs, student(seen), target, "distill")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            last = float(loss.detach())
            first = last if step == 0 else first
            step += 1
            if step % 20 == 0 or step == options.steps:
                say(
                    "adapting",
                    0.4 + 0.55 * step / options.steps,
                    f"distilling step {step}/{options.steps} loss {last:.4f}",
                )
            if step >= options.steps:
                break
        epoch += 1
    student.eval()
    return first, last


@torch.no_grad()
def _restyled(calib: Dataset[Batch], camera: Restyle, options: AdaptOptions) -> TensorSamples:
    g = torch.Generator().manual_seed(options.seed + 2)
    out = []
    for i, batch in enumerate(batches(calib, options.batch_size)):
        if i >= options.bn_batches:
            break
        x = batch["image"]
        out.append(camera(x, torch.randn(x.shape, generator=g)))
    return TensorSamples({"image": torch.cat(out)})
