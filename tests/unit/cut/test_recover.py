"""The CUT authors' fine-tuning recipe: the selected tasks' labelled losses, weighted as ESCM weights them."""

from __future__ import annotations

import copy

import pytest
import torch

from edgecut.server.cut.recover import ESCM_TASK_WEIGHTS, RecoveryOptions, mirrored, recover
from edgecut.server.mtl.data import batches
from edgecut.server.mtl.losses import label_loss


def test_cut_paper_fine_tune_weights_the_task_losses_like_escm() -> None:
    opts = RecoveryOptions.cut_paper()
    assert dict(opts.task_weights) == {"seg": 1.0, "normals": 20.0, "depth": 3.0}
    assert opts.task_weights == ESCM_TASK_WEIGHTS
    assert (opts.optimizer, opts.lr, opts.weight_decay, opts.target) == ("adam", 1e-5, 1e-4, "labels")


def test_recovery_minimises_the_weighted_sum_of_task_losses(small_resnet, scenes) -> None:
    model = small_resnet.select(["seg", "depth"])
    opts = RecoveryOptions(steps=1, lr=0.0, batch_size=16, target="labels", task_weights=(("depth", 3.0),))
    first = next(iter(batches(scenes, 16, shuffle=True, seed=opts.seed)))
    probe = copy.deepcopy(model).train()
    with torch.no_grad():
        out = probe(first["image"])
        expected = label_loss(model.task_specs["seg"], out["seg"], first["seg"]) + 3.0 * label_loss(
            model.task_specs["depth"], out["depth"], first["depth"]
        )
    report = recover(model, None, scenes, opts)
    assert report.first_loss == pytest.approx(float(expected), rel=1e-5)


def test_a_build_past_its_deadline_stops_recovering_after_its_minimum(small_resnet, scenes) -> None:
    """The quick build's time goal: however long scoring and pruning took, recovery stops at the
    deadline (but still gets MIN_RECOVERY_S), instead of running all its steps."""
    from edgecut.server.cut.tailor import MIN_RECOVERY_S, TailorOptions, tailor
    from edgecut.server.spec import Budget

    endless = RecoveryOptions(steps=100_000, batch_size=16)
    opts = TailorOptions(recovery=endless, calib_batches=1, batch_size=16, bn_batches=1, deadline_s=0.0)
    report = tailor(small_resnet, ["seg", "depth"], Budget(macs_fraction=0.5), scenes, opts)
    assert report.recovery is not None
    assert 0 < report.recovery.steps < 100_000
    assert report.recovery.seconds >= MIN_RECOVERY_S


def test_flip_augmentation_distils_the_teacher_on_the_mirrored_images(small_resnet, scenes) -> None:
    """Issue 27, tight budgets: with `augment="flip"` the student is matched to the original model on
    mirrored images (a first step's loss is the distillation loss on the mirrored half, not the plain one)."""
    from edgecut.server.cut.objective import recovery_loss, with_teacher

    student = small_resnet.select(["seg", "count"])
    teacher = copy.deepcopy(student)
    with torch.no_grad():  # a student that differs from its teacher, so the loss depends on the images
        for p in student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    opts = RecoveryOptions(steps=1, lr=0.0, batch_size=16, augment="flip")
    first = next(iter(batches(scenes, 16, shuffle=True, seed=opts.seed)))
    flipped = mirrored(first, torch.Generator().manual_seed(opts.seed))
    changed = (flipped["image"] != first["image"]).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 16  # some images mirrored, not all
    assert torch.equal(flipped["image"][changed], first["image"][changed].flip(-1))
    probe = copy.deepcopy(student).train()
    with torch.no_grad():
        expected = recovery_loss(
            student.task_specs, probe(flipped["image"]), with_teacher(flipped, teacher), "distill"
        )
        plain = recovery_loss(
            student.task_specs, probe(first["image"]), with_teacher(first, teacher), "distill"
        )
    report = recover(student, teacher, scenes, opts)
    assert report.first_loss == pytest.approx(float(expected), rel=1e-5)
    assert report.first_loss != pytest.approx(float(plain), rel=1e-5)


def test_flip_augmentation_with_labelled_recovery_is_refused_in_one_sentence() -> None:
    with pytest.raises(ValueError, match="needs the distillation target"):
        RecoveryOptions(target="labels", augment="flip")
