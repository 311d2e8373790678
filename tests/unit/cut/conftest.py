from __future__ import annotations

import pytest
import torch

from edgecut.server.mtl import MultiTaskModel, build_model
from edgecut.server.mtl.data import TensorSamples, synthetic_scenes


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def scenes() -> TensorSamples:
    return synthetic_scenes(48, 3, 32, show_progress=False)


@pytest.fixture
def small_resnet() -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model("resnet-mtl", input_size=32, widths=[8, 8, 16, 16], head_width=8).eval()


@pytest.fixture
def small_densecat() -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model("densecat-mtl", input_size=32, width=8, growth=4, layers=2, head_width=8).eval()


@pytest.fixture(scope="session")
def trained_small(scenes: TensorSamples) -> MultiTaskModel:
    """A small model trained for a few steps, so pruning really costs it something."""
    from edgecut.server.mtl.data import batches
    from edgecut.server.mtl.losses import total_loss

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model("resnet-mtl", input_size=32, widths=[8, 8, 16, 16], head_width=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(8):
        for batch in batches(scenes, 16, shuffle=True, seed=epoch):
            loss, _ = total_loss(model.task_specs, model(batch["image"]), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
