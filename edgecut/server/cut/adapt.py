"""Adapting a tailored model to one device from its statistics summary alone (issue 31): the server never
sees the device's images, only the per-layer mean and variance its statistics model measured on them
(edgecut/norm_stats.py, `Layers`).

Three methods (`AdaptOptions.method`):
- "adabn": install the summary as the model's BatchNorm statistics (statistics.install_statistics).
  The issue's probe: it recovers 82-98 % of what a single shift costs, but only 56 % of the combined one.
- "restyle": find the camera that would have produced the summary, then teach the model to see
  through it. A small differentiable corruption family (per-channel gain and offset, Gaussian blur
  sigma, additive noise sigma: `Restyle`) is fitted so that the statistics model, run on the server's
  calibration images passed through it, reports statistics matching the summary at every layer (not the
  input's alone: blur and noise show in the deeper layers). Then the tailored model is distilled from
  its teacher, the teacher seeing each clean calibration image and the student the same image restyled
  (fresh noise every step). By default (`batchnorm="device"`) its BatchNorm keeps the summary's statistics
  throughout (it starts from AdaBN's model and learns its weights under the device's own normalisation);
  `batchnorm="restyled"` normalises by each restyled batch and re-estimates on restyled images at the end
  (measured worse where noise is involved: the fitted camera's statistics are only an approximation).
- "auto" (the default) decides per device from what the server sees, never a label, by how far the
  summary is from the statistics of the server's own calibration images, measured exactly as a device
  measures (the statistics model in batches of 16, merged by `Accumulator`; `distance`):
  - within `min_shift`: no shift. The model stays as it is (method "none": nothing to ship);
    installing a device's statistics that differ only by sampling measured a 2-point loss unshifted;
  - beyond it: the camera search runs, and restyle follows when the fitted camera explains the summary
    (statistics distance at most `max_fit`), else AdaBN alone. `restyle_shift` (default 0: none) can
    make shifts below it AdaBN alone without a search. It was 0.045 while the camera had no narrower
    view: a zoom was fitted as a blur, and distilling through that wrong camera measured worse than
    AdaBN alone. With the view in the camera, the search finds a zoom's crop (0.8 for a 0.75 crop) and
    a blur's sigma (0.98 for 1.0), and restyle measured better than AdaBN alone on both (seg+depth at
    macs 0.3, 3 seeds: zoom -39.2 against -42.0 % Δm, blur -22.9 against -32.1 %). docs/benchmarks.md
    (*Adapting to a device's images*) has the measurements.

A narrower view moves the labels with the image, so the teacher cannot answer for the student from the
clean image: it sees the clean image through the camera's view (`Restyle.framed`), its BatchNorm
re-estimated on such views, while the student sees the whole camera (view, colour, blur, noise).

The search starts from the best point of a small grid of views, blur and noise sigmas (each with the
affine map that gives the restyled images the summary's input mean and variance), then refines all but
the view by Adam: started
near no blur and no noise, a few dozen Adam steps on the softplus-parametrised sigmas could not reach a
sigma-0.08 sensor noise, and the gain absorbed the noise's variance instead.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from edgecut.norm_stats import INPUT, Accumulator, Layers, StatsError
from edgecut.server.cut.objective import recovery_loss
from edgecut.server.cut.recover import recalibrate_batchnorm
from edgecut.server.cut.statistics import StatisticsModel, install_statistics
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, TensorSamples, batches
from edgecut.server.mtl.shifts import centre_zoom
from edgecut.server.spec import ProgressFn

logger = logging.getLogger(__name__)

Method = Literal["auto", "adabn", "restyle", "none"]
METHODS = ("auto", "adabn", "restyle")  # what may be asked; "auto" may answer "none"
_EPS = 1e-5
_BLUR_SIZE = 7  # room for a blur sigma up to ~2 px
DEVICE_BATCH = 16  # the agent's statistics batches (edgecut/agent/settings.py adapt_batch)
# where the camera search starts from: the best of these (view, blur sigma px, noise sigma) triples
BLUR_GRID = (0.3, 0.6, 1.0, 1.5)
NOISE_GRID = (0.0, 0.02, 0.05, 0.08, 0.12)
CROP_GRID = (1.0, 0.9, 0.8, 0.7, 0.6)  # the share of the side a narrower view keeps


@dataclass(frozen=True)
class AdaptOptions:
    """How a tailored model is adapted to a summary: the method, then the restyle search (`search_steps`
    of Adam on `search_images` calibration images) and the distillation (`steps` at `lr`)."""

    method: Method = "auto"
    # "auto" (module docstring): the summary's distance to the calibration images' statistics below
    # `min_shift` is no shift, below `restyle_shift` AdaBN alone (0: never without a search); restyle
    # needs a camera fitted within `max_fit`. Measured with the reference seg+depth model
    # (docs/benchmarks.md)
    min_shift: float = 0.004
    restyle_shift: float = 0.0
    max_fit: float = 0.02
    shift_images: int = 256  # calibration images the server measures for that comparison
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
        if self.method not in METHODS:
            raise ValueError(f"unknown adaptation method {self.method!r}: choose {', '.join(METHODS)}")
        for name in ("search_steps", "search_images", "steps", "batch_size", "bn_batches", "shift_images"):
            if getattr(self, name) < 0 or (
                name in ("search_images", "batch_size", "shift_images") and not getattr(self, name)
            ):
                raise ValueError(f"AdaptOptions.{name} must be positive, got {getattr(self, name)}")


@dataclass
class AdaptReport:
    """The adapted `model` (a copy, eval mode), the method that made it and why, the camera the search
    found, and how well it matched."""

    model: MultiTaskModel
    # what made `model`: "adabn" or "restyle", or "none" (an unchanged copy: "auto" saw no shift, so a
    # fleet job has nothing to ship)
    method: Method
    why: str = ""  # why "auto" chose it
    shift: float = float("nan")  # "auto": the summary's distance to the calibration images' statistics
    camera: dict[str, float] = field(default_factory=dict)  # the fitted Restyle's parameters
    match_before: float = float("nan")  # the statistics distance of clean calibration images
    match_after: float = float("nan")  # ... and of restyled ones (lower: closer to the device)
    distill_loss: tuple[float, float] = (float("nan"), float("nan"))  # first and last step


def _softplus_inverse(y: float) -> float:
    return math.log(math.expm1(y))


class Restyle(nn.Module):
    """A camera in a few parameters: a narrower view (a centre crop of `crop` of the side, chosen from a
    grid, not learned), then per-channel gain and offset, a Gaussian blur, and noise."""

    def __init__(self) -> None:
        super().__init__()
        self.crop = 1.0
        self.log_gain = nn.Parameter(torch.zeros(3))
        self.offset = nn.Parameter(torch.zeros(3))
        # softplus keeps both sigmas positive with a gradient everywhere (|x| has none at 0, where they start)
        self.blur = nn.Parameter(torch.tensor(-3.0))  # blur sigma = 0.25 + softplus(blur) px: ~0.3, none
        self.noise = nn.Parameter(torch.tensor(-5.0))  # noise sigma = softplus(noise): ~0.007

    @torch.no_grad()
    def start_from(
        self,
        images: torch.Tensor,
        mean: torch.Tensor,
        var: torch.Tensor,
        blur: float = 0.3,
        noise: float = 0.0,
        crop: float = 1.0,
    ) -> None:
        """Start at view `crop`, blur and noise sigmas `blur`, `noise` and the per-channel affine map that,
        with them, gives `images` the input statistics `mean`, `var` (the noise adds its variance; clipping
        ignored)."""
        self.crop = crop
        self.blur.fill_(_softplus_inverse(max(blur - 0.25, 1e-3)))
        self.noise.fill_(_softplus_inverse(max(noise, 1e-3)))
        blurred = self.blurred(self.framed(images))
        dims = [0, 2, 3]
        m, v = blurred.mean(dim=dims), blurred.var(dim=dims, unbiased=False)
        signal = (var - noise**2).clamp(min=0.05 * var)  # the variance the gain must give the image
        gain = torch.sqrt((signal + _EPS) / (v + _EPS)).clamp(0.05, 20.0)
        self.log_gain.copy_(gain.log())
        self.offset.copy_(mean - gain * m)

    def blur_sigma(self) -> torch.Tensor:
        return 0.25 + F.softplus(self.blur)

    def noise_sigma(self) -> torch.Tensor:
        return F.softplus(self.noise)

    def blurred(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.arange(_BLUR_SIZE, dtype=x.dtype) - (_BLUR_SIZE - 1) / 2
        k1 = torch.exp(-(r**2) / (2 * self.blur_sigma() ** 2))
        k1 = k1 / k1.sum()
        kernel = (k1[:, None] * k1[None, :]).expand(3, 1, _BLUR_SIZE, _BLUR_SIZE)
        pad = _BLUR_SIZE // 2
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), kernel, groups=3)

    def framed(self, x: torch.Tensor) -> torch.Tensor:
        """What this camera's view shows of clean `x`: the geometry alone, no photometric change."""
        return centre_zoom(x, self.crop)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        # gain and offset commute with the (normalised) blur: applied after it, as start_from assumes
        y = self.blurred(self.framed(x)) * self.log_gain.exp().view(1, 3, 1, 1) + self.offset.view(1, 3, 1, 1)
        return (y + self.noise_sigma() * eps).clamp(0.0, 1.0)

    def describe(self) -> dict[str, float]:
        gain = self.log_gain.detach().exp().tolist()
        offset = self.offset.detach().tolist()
        return {
            "crop": self.crop,
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
        return AdaptReport(adapted, "adabn", "asked for")
    torch.manual_seed(options.seed)
    target = _tensors(layers, stats.layers)
    shift = float("nan")
    if options.method == "auto":
        shift = float(distance(_tensors(_summary(stats, calib, options.shift_images), stats.layers), target))
        if shift < options.min_shift:
            why = f"no shift: the summary is {shift:.4f} < {options.min_shift:g} from the calibration images'"
            logger.info("adaptation: %s", why)
            return AdaptReport(copy.deepcopy(model).eval(), "none", why, shift=shift)
        if shift < options.restyle_shift:
            why = f"a mild shift ({shift:.3f} < {options.restyle_shift:g}): AdaBN alone"
            logger.info("adaptation: %s", why)
            return AdaptReport(adapted, "adabn", why, shift=shift)
    images = _images(calib, options.search_images)
    camera = Restyle()
    before, after = _fit(stats, camera, images, target, options, say)
    camera.requires_grad_(False)
    report = AdaptReport(adapted, "restyle", "asked for", shift, camera.describe(), before, after)
    logger.info("adaptation: camera %s, statistics distance %.3f -> %.3f", report.camera, before, after)
    if options.method == "auto":
        if after > options.max_fit:
            report.method = "adabn"
            report.why = (
                f"no camera explains the summary (statistics distance {after:.3f} > {options.max_fit:g}): "
                "AdaBN alone"
            )
            logger.info("adaptation: %s", report.why)
            return report
        report.why = f"the fitted camera explains the summary (distance {after:.3f} <= {options.max_fit:g})"
    if camera.crop < 1.0:  # the teacher sees the narrower view too: its BatchNorm measured on it
        teacher = copy.deepcopy(teacher)
        recalibrate_batchnorm(
            teacher, _framed(calib, camera, options), options.bn_batches, options.batch_size
        )
    report.distill_loss = _distil(adapted, teacher, camera, calib, options, say)
    if options.batchnorm == "restyled":
        say("adapting", 0.95, "re-estimating BatchNorm on restyled images")
        restyled = _restyled(calib, camera, options)
        recalibrate_batchnorm(adapted, restyled, options.bn_batches, options.batch_size)
    adapted.eval()
    return report


def _tensors(layers: Layers, names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        n: (torch.as_tensor(m, dtype=torch.float32), torch.as_tensor(v, dtype=torch.float32))
        for n, (m, v) in layers.items()
        if n in names
    }


@torch.no_grad()
def _summary(stats: StatisticsModel, calib: Dataset[Batch], n: int) -> Layers:
    """What a device seeing `n` of the calibration images would send: the statistics model over batches
    of 16, merged as the agent merges them (the same estimator as the summary's)."""
    acc = Accumulator()
    for batch in batches(calib, DEVICE_BATCH):
        x = batch["image"][: n - acc.images]
        acc.add({k: t.numpy() for k, t in zip(stats.output_names, stats(x), strict=True)}, len(x))
        if acc.images >= n:
            break
    return acc.layers()


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
        starts = []
        for crop in CROP_GRID:
            for blur in BLUR_GRID:
                for noise in NOISE_GRID:
                    camera.start_from(images, *target[INPUT], blur=blur, noise=noise, crop=crop)
                    found = float(distance(_measure(stats, camera(images, eps)), target))
                    starts.append((found, blur, noise, crop))
        _, blur, noise, crop = min(starts)
        camera.start_from(images, *target[INPUT], blur=blur, noise=noise, crop=crop)
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
    """Teacher on the clean image in the camera's view, student on it restyled: the student learns the
    teacher's answers through the device's camera (a narrower view shows both the same part of the scene,
    so the teacher's maps are the right answers for what the student sees)."""
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
                target = {f"teacher:{t}": y for t, y in teacher(camera.framed(x)).items()}
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
def _seen(
    calib: Dataset[Batch], options: AdaptOptions, view: Callable[[torch.Tensor], torch.Tensor]
) -> TensorSamples:
    """The first `bn_batches` batches of `calib` as `view` shows them: the images BatchNorm is measured on."""
    out = []
    for i, batch in enumerate(batches(calib, options.batch_size)):
        if i >= options.bn_batches:
            break
        out.append(view(batch["image"]))
    return TensorSamples({"image": torch.cat(out)})


def _restyled(calib: Dataset[Batch], camera: Restyle, options: AdaptOptions) -> TensorSamples:
    g = torch.Generator().manual_seed(options.seed + 2)
    return _seen(calib, options, lambda x: camera(x, torch.randn(x.shape, generator=g)))


def _framed(calib: Dataset[Batch], camera: Restyle, options: AdaptOptions) -> TensorSamples:
    return _seen(calib, options, camera.framed)
