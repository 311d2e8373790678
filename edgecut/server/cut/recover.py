"""Short recovery training after pruning: its steps decide how long it trains.

A wall-clock limit (`RecoveryOptions.seconds`) is off unless asked for: a result that depends on the
machine's load is not reproducible (the same `edgecut prune` gave Δm -6.44 % with all 200 steps and
-11.22 % with the 116 a loaded machine fitted in 120 s). The fleet's quick build is the one place with a
deadline (a device's first model must arrive quickly); its report says the steps it reached.

Recipes (`RecoveryOptions.recipe`):
- distill (edgecut's default): match the original model's outputs on unlabelled images; with
  `features > 0`, also its trunk outputs through learned adapters (features.py), weighted by `features`.
- labels: the selected tasks' labelled losses (CUT's fine-tuning: Adam, lr 1e-5, ~1000 iterations,
  each task's loss weighted by ESCM's NYUv2 lambdas: seg 1, normals 20, depth 3).
- Garg et al.'s comparison: `reinit=True` re-initialises the pruned architecture and trains it from
  scratch for the same budget of steps.

`augment="flip"` (distillation only; off by default) mirrors a random half of each batch left-right
before the original model labels it, so student and teacher see the same image and the target stays
the teacher's own output ("function matching"). Why: an image-level task (a classification head on
pooled features) gets one target per image where a dense task gets one per pixel, and on a few hundred
calibration images its distillation overfits (on the reference at macs 0.3 after 300 steps, count's
loss 0.026 on the calibration images vs 0.24 held out; seg 0.023 vs 0.036). Measured (docs/benchmarks.md,
*Generality*): it helps the packaged reference at macs 0.3 (seg + count Δm -12.2 -> -11.0 %, normals +
count -23.6 -> -21.8 %, dense pairs within noise) but hurts the gallery's MobileViT (count + largest
-1.8 -> -4.1 %, slant + count -0.5 -> -3.8 %; neither model was trained on mirrored scenes, so why they
differ is open), so it stays off by default.

`quantise=True` trains quantisation-aware (fake_quant.py): weights and layer inputs rounded as the static
INT8 export will round them, BatchNorm frozen; the weights end on the int8 grid. The engine's last
distillation refinement is one (refine.py).
"""

from __future__ import annotations

import itertools
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import Dataset

from edgecut.server.cut.fake_quant import quantisation_aware
from edgecut.server.cut.features import FeatureAdapters, trunk_outputs
from edgecut.server.cut.objective import Target, recovery_loss, with_teacher
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import Batch, batches

# ESCM's config_nyuv2_3task.LAMBDAS (tasks seg, sn, depth) as its fine-tune's SceneNetLoss applies them.
ESCM_TASK_WEIGHTS: tuple[tuple[str, float], ...] = (("seg", 1.0), ("normals", 20.0), ("depth", 3.0))


@dataclass(frozen=True)
class RecoveryOptions:
    """How a pruned model recovers: `steps` of distillation from the original (or of its labelled losses,
    `target="labels"`); `features` weighs the trunk-feature term. `seconds` (off by default) stops it
    early: only where a deadline matters more than a reproducible result (the fleet's quick build)."""

    steps: int = 300
    seconds: float | None = None  # stop early when this much time has passed (None: the steps decide)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    target: Target = "distill"
    optimizer: Literal["adamw", "adam"] = "adamw"
    schedule: Literal["cosine", "constant"] = "cosine"
    reinit: bool = False
    seed: int = 0
    task_weights: tuple[tuple[str, float], ...] = ()  # (task, weight) pairs; a task not named weighs 1
    features: float = 0.0  # weight of the trunk-feature distillation term (0 = outputs only)
    augment: Literal["none", "flip"] = "none"  # mirror half of each distillation batch (see above)
    # quantisation-aware: train as the static INT8 export computes (cut/fake_quant.py); the weights end
    # on the int8 grid
    quantise: bool = False

    def __post_init__(self) -> None:
        if self.augment not in ("none", "flip"):
            raise ValueError(f"unknown augmentation {self.augment!r}: choose none or flip")
        if self.augment != "none" and self.target != "distill":
            raise ValueError(
                "augmentation needs the distillation target (the original model labels each mirrored "
                "image); labelled recovery would need mirrored labels"
            )

    @classmethod
    def cut_paper(cls, steps: int = 1000) -> RecoveryOptions:
        """The CUT authors' fine-tuning: Adam, lr 1e-5, weight decay 1e-4, labelled losses weighted by
        ESCM's lambdas."""
        return cls(
            steps=steps,
            lr=1e-5,
            weight_decay=1e-4,
            target="labels",
            optimizer="adam",
            schedule="constant",
            task_weights=ESCM_TASK_WEIGHTS,
        )


@dataclass
class RecoveryReport:
    """What a recovery did: the steps it ran (of the `asked` ones) in how many seconds, its loss at the
    first and last, and the time limit it ran under (None: none)."""

    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    asked: int = 0
    limit_s: float | None = None

    @property
    def cut_short(self) -> bool:
        """The time limit stopped it before its steps were done."""
        return self.steps < self.asked

    def describe(self, what: str = "recovery") -> str:
        """For people: "recovery: 200 steps", or "recovery: 37 of 60 steps (8 s time limit)"."""
        if not self.cut_short:
            return f"{what}: {self.steps} steps"
        limit = f" ({self.limit_s:.3g} s time limit)" if self.limit_s is not None else ""
        return f"{what}: {self.steps} of {self.asked} steps{limit}"


def recovery_extras(report: RecoveryReport) -> dict[str, float]:
    """A recovery's steps reached and asked (and its time limit, when one applied), for a build's extras."""
    out = {"recovery_steps": float(report.steps), "recovery_steps_asked": float(report.asked)}
    if report.limit_s is not None:
        out["recovery_limit_s"] = report.limit_s
    return out


def reinitialise(model: torch.nn.Module) -> None:
    for m in model.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset) and m is not model:
            reset()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


def mirrored(batch: Batch, generator: torch.Generator) -> Batch:
    """`batch` with a random half of its images flipped left-right (labels dropped: the teacher relabels)."""
    image = batch["image"]
    flip = torch.rand(image.shape[0], generator=generator) < 0.5
    return {"image": torch.where(flip.view(-1, *[1] * (image.dim() - 1)), image.flip(-1), image)}


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module, data: Dataset[Batch], n_batches: int = 8, batch_size: int = 32
) -> None:
    """Re-estimate every BatchNorm's running statistics on unlabelled images (no gradient step).

    Removing channels changes what the next layers see, so their stored statistics no longer match;
    a few forward passes fix most of the damage for the cost of inference (measured in
    docs/benchmarks.md: Δm at 70 % params removed went from -167 % to -31 % in 0.8 s).
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or n_batches <= 0:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for i, batch in enumerate(batches(data, batch_size)):
        if i >= n_batches:
            break
        model(batch["image"])
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    model.eval()


def range_images(data: Dataset[Batch], batch_size: int = 32, n: int = 128) -> torch.Tensor:
    """The first `n` images of `data`: what quantisation-aware recovery measures activation ranges on."""
    return torch.cat([b["image"] for b in itertools.islice(batches(data, batch_size), -(-n // batch_size))])[
        :n
    ]


def recover(
    student: MultiTaskModel,
    teacher: MultiTaskModel | None,
    data: Dataset[Batch],
    opts: RecoveryOptions,
    on_step: object = None,
) -> RecoveryReport:
    """Train `student` in place; `teacher` (the original, decomposed) is needed for distillation.

    Feature adapters, when used, are made on the first batch and discarded on return.
    """
    if opts.target == "distill" and teacher is None:
        raise ValueError("distillation recovery needs the original model")
    if opts.reinit:
        torch.manual_seed(opts.seed)
        reinitialise(student)
    params = [p for p in student.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if opts.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(params, lr=opts.lr, weight_decay=opts.weight_decay)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, opts.steps))
        if opts.schedule == "cosine"
        else None
    )
    use_features = opts.features > 0 and opts.target == "distill" and teacher is not None
    adapters: FeatureAdapters | None = None
    if teacher is not None:
        teacher.eval()
    student.train()
    flips = torch.Generator().manual_seed(opts.seed)
    t0 = time.perf_counter()
    step, first, last, epoch = 0, float("nan"), float("nan"), 0
    with ExitStack() as stack:
        if opts.quantise:
            stack.enter_context(quantisation_aware(student, range_images(data, opts.batch_size)))
        s_feats = stack.enter_context(trunk_outputs(student)) if use_features else []
        t_feats = stack.enter_context(trunk_outputs(teacher)) if use_features and teacher else []
        while step < opts.steps:
            for batch in batches(data, opts.batch_size, shuffle=True, seed=opts.seed + epoch):
                if teacher is not None and opts.target == "distill":
                    if opts.augment == "flip":
                        batch = mirrored(batch, flips)
                    batch = with_teacher(batch, teacher)
                pred = student(batch["image"])
                loss = recovery_loss(student.task_specs, pred, batch, opts.target, dict(opts.task_weights))
                if use_features:
                    if adapters is None:
                        adapters = FeatureAdapters(s_feats[-1], t_feats[-1])
                        opt.add_param_group({"params": list(adapters.parameters()), "weight_decay": 0.0})
                    loss = loss + opts.features * adapters.loss(s_feats[-1], t_feats[-1])
                    s_feats.clear()
                    t_feats.clear()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                last = float(loss.detach())
                first = last if step == 0 else first
                step += 1
                if callable(on_step):
                    on_step(step, last)
                if step >= opts.steps or (
                    opts.seconds is not None and time.perf_counter() - t0 > opts.seconds
                ):
                    student.eval()
                    return RecoveryReport(
                        step, time.perf_counter() - t0, first, last, opts.steps, opts.seconds
                    )
            epoch += 1
    student.eval()
    return RecoveryReport(step, time.perf_counter() - t0, first, last, opts.steps, opts.seconds)
