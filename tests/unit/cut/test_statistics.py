"""Issue 31: one pass of the statistics model over a device's images, accumulated in batches as the agent
does and installed on the server, gives the model BatchNorm re-estimation on those images would."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgecut.norm_stats import INPUT, Accumulator, StatsError, from_proto, to_proto
from edgecut.server.cut.recover import recalibrate_batchnorm
from edgecut.server.cut.statistics import StatisticsModel, export_statistics_model, install_statistics
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut.server.mtl.data import TensorSamples


def _dim(images: torch.Tensor) -> torch.Tensor:
    return images * 0.4  # a dim garage: the covariate shift the device sees


def test_statistics_accumulated_on_the_device_match_server_side_reestimation(
    trained_small: MultiTaskModel, scenes: TensorSamples, tmp_path: Path
) -> None:
    images = _dim(torch.stack([scenes[i]["image"] for i in range(len(scenes))]))
    path = export_statistics_model(trained_small, tmp_path / "stats.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    acc = Accumulator()
    for batch in images.split(16):  # the agent's batches: a third of what re-estimation sees at once
        outputs = dict(zip(names, session.run(None, {"image": batch.numpy()}), strict=True))
        acc.add(outputs, len(batch))
    # sent as float16 and read back by the server, as over the wire
    layers = from_proto(to_proto(acc.layers(), "dev-1", "a" * 64, acc.images, 1, 0))
    assert INPUT in layers and acc.images == len(images)

    adapted = copy.deepcopy(trained_small)
    assert install_statistics(adapted, layers) == len(StatisticsModel(trained_small).layers) - 1
    server = copy.deepcopy(trained_small)
    recalibrate_batchnorm(server, TensorSamples({"image": images}), n_batches=1, batch_size=len(images))
    with torch.no_grad():
        want, got, before = server(images), adapted(images), trained_small(images)
    for task in want:
        gap_after = float((got[task] - want[task]).abs().mean())
        gap_before = float((before[task] - want[task]).abs().mean())
        assert gap_after < 0.05 * gap_before, task  # the device's statistics did what re-estimation does


def test_statistics_of_another_model_are_refused(
    trained_small: MultiTaskModel, small_resnet: MultiTaskModel
) -> None:
    layers = {
        name: (np.zeros(3), np.ones(3))
        for name, m in trained_small.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    }
    with pytest.raises(StatsError, match="channels"):
        install_statistics(small_resnet, layers)


def test_a_malformed_summary_is_refused_in_one_sentence() -> None:
    acc = Accumulator()
    acc.add({"input.mean": np.zeros(3), "input.var": np.ones(3)}, 4)
    msg = to_proto(acc.layers(), "dev-1", "a" * 64, 4, 1, 0)
    msg.layers[0].var = msg.layers[0].var[:2]
    with pytest.raises(StatsError, match="one length"):
        from_proto(msg)
    with pytest.raises(StatsError, match="variance"):
        acc.add({"x.mean": np.zeros(3)}, 1)
