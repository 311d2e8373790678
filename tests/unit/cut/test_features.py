"""Feature distillation: adapters map the pruned student's trunk outputs onto the original's, start
from the least-squares fit, train beside the student and never become part of it."""

from __future__ import annotations

import copy

import torch

from edgecut.server.cut.export import export_onnx
from edgecut.server.cut.features import FeatureAdapters, trunk_outputs
from edgecut.server.cut.recover import RecoveryOptions, recover
from edgecut.server.cut.tailor import TailorOptions, tailor
from edgecut.server.mtl.data import TensorSamples, batches
from edgecut.server.spec import Budget
from tests.support.tailored import report_meta


def _pruned(trained_small, scenes):
    return tailor(
        trained_small,
        ["seg", "depth"],
        Budget(macs_fraction=0.4),
        scenes,
        TailorOptions(calib_batches=1, batch_size=16, bn_batches=2),
    )


def test_adapters_start_at_the_least_squares_fit_of_the_kept_channels(trained_small, scenes) -> None:
    rep = _pruned(trained_small, scenes)
    x = next(iter(batches(scenes, 16)))["image"]
    with trunk_outputs(rep.model) as s, trunk_outputs(rep.teacher) as t, torch.no_grad():
        rep.model(x)
        rep.teacher(x)
    widths = [(a.shape[1], b.shape[1]) for a, b in zip(s[0], t[0], strict=True)]
    assert any(ws < wt for ws, wt in widths)  # pruning narrowed a trunk output
    adapters = FeatureAdapters(s[0], t[0])
    assert set(adapters.maps) == {str(i) for i, (ws, wt) in enumerate(widths) if ws != wt}
    # the fit explains much of the teacher's features (predicting their mean would score 1.0)
    assert float(adapters.loss(s[0], t[0]).detach()) < 0.5


def test_feature_distillation_trains_the_student_only_and_exports_like_torch(
    trained_small, scenes: TensorSamples, tmp_path
) -> None:
    rep = _pruned(trained_small, scenes)
    before = {k: v.clone() for k, v in rep.model.state_dict().items()}
    plain = copy.deepcopy(rep.model)
    opts = RecoveryOptions(steps=6, batch_size=16, features=1.0)
    recover(rep.model, rep.teacher, scenes, opts)
    recover(plain, rep.teacher, scenes, RecoveryOptions(steps=6, batch_size=16))
    after = rep.model.state_dict()
    assert set(after) == set(before)  # no adapter joined the student
    assert all(after[k].shape == before[k].shape for k in before)
    trunk = [k for k in after if k.startswith("trunk.") and after[k].is_floating_point()]
    # the feature term changes what the trunk learns (against outputs-only recovery)
    assert any(not torch.allclose(after[k], plain.state_dict()[k]) for k in trunk)
    assert export_onnx(rep.model, report_meta(rep), tmp_path / "m.onnx") < 1e-4


def test_token_outputs_get_an_adapter_on_their_channel_axis() -> None:
    """Issue 27: a trunk returning N x tokens x C is distilled too (it used to be left out), with a
    Linear on the last axis fitted by least squares."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(4, 16, 12, generator=g)
    student = teacher[..., :8] + 0.01 * torch.randn(4, 16, 8, generator=g)  # 8 of 12 channels kept
    adapters = FeatureAdapters((student,), (teacher,))
    assert adapters.used == [0] and isinstance(adapters.maps["0"], torch.nn.Linear)
    assert adapters.maps["0"].in_features == 8 and adapters.maps["0"].out_features == 12
    # the kept channels are reproduced; the 4 dropped ones (independent noise) are predicted by their mean
    assert 0.2 < float(adapters.loss((student,), (teacher,)).detach()) < 0.5
