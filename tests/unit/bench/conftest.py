"""What the bench unit tests share: torch on one thread (the machine is shared), and 32 small scenes."""

from __future__ import annotations

import pytest
import torch

from edgecut.server.mtl.data import TensorSamples, synthetic_scenes


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def scenes() -> TensorSamples:
    return synthetic_scenes(32, 3, 32, show_progress=False)
