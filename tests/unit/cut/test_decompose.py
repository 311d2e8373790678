"""Decomposition keeps only the trunk the kept heads read: a classification-only device gets no decoder,
outputs unchanged; an untraceable trunk is kept whole and still prunes consistently."""

from __future__ import annotations

import copy
import threading

import torch
import torch.nn.functional as F
from torch import nn

from edgecut.server.cut.decompose import decompose, read_outputs
from edgecut.server.cut.prune import measure
from edgecut.server.cut.tailor import TailorOptions, tailor
from edgecut.server.mtl import MultiTaskModel, build_model
from edgecut.server.mtl.data import TensorSamples
from edgecut.server.spec import Budget

SIZE = 32


def _unet() -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model("examples.unet:DepthwiseUNet", input_size=SIZE, width=8, head_width=8).eval()


def _same(a: MultiTaskModel, b: MultiTaskModel) -> bool:
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return set(ya) == set(yb) and all(torch.equal(ya[t], yb[t]) for t in ya)


def test_image_level_tasks_only_drop_the_decoder_with_identical_outputs() -> None:
    base = _unet()
    assert read_outputs(base.select(["count"]))[0] == [1]  # the pooled head reads the bottleneck only
    whole, slim = base.select(["count"]), decompose(base, ["count"])
    assert _same(whole, slim)
    names = {n.split(".")[1] for n, _ in slim.named_parameters() if n.startswith("trunk.")}
    assert names == {"stem", "down1", "down2", "down3"}  # up1..up3 are gone, not just pruned
    assert measure(slim, SIZE).macs < 0.4 * measure(whole, SIZE).macs
    # a dense task reads the decoder: the user's own trunk module is kept as it is
    dense = decompose(base, ["seg", "count"])
    assert type(dense.trunk) is type(base.trunk) and _same(base.select(["seg", "count"]), dense)


class Untraceable(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it, so nothing can be cut off."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.deep = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.dec = nn.Sequential(nn.Conv2d(32 + 16, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.enc(x)
        d = self.deep(e)
        if float(d.detach().mean()) > -1e9:  # data-dependent branch
            up = F.interpolate(d, size=e.shape[-2:], mode="nearest")
        return self.dec(torch.cat([up, e], 1)), d


class Pooled(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(32, classes)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.fc(feats[1].mean(dim=(2, 3)))


class Dense(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out = nn.Conv2d(16, channels, 1)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return F.interpolate(self.out(feats[0]), size=(SIZE, SIZE), mode="bilinear")


class Branchy(MultiTaskModel):
    def __init__(self) -> None:
        from edgecut.server.mtl.tasks import SCENE_TASKS

        seg, count = SCENE_TASKS[0], SCENE_TASKS[4]
        super().__init__([seg, count], SIZE)
        self.trunk = Untraceable()
        self.heads = nn.ModuleDict({"seg": Dense(seg.channels), "count": Pooled(count.channels)})

    def config(self) -> dict[str, object]:
        return {}


def test_an_untraceable_trunk_is_kept_whole_and_its_unread_branch_prunes_in_step() -> None:
    torch.manual_seed(0)
    base = Branchy().eval()
    kept = decompose(base, ["count"])
    assert type(kept.trunk) is Untraceable and _same(base.select(["count"]), kept)
    calib = TensorSamples({"image": torch.rand(8, 3, SIZE, SIZE)})
    # the unread decoder must shrink with the encoder it reads, or the forward pass breaks (issue 16)
    rep = tailor(
        base, ["count"], Budget(macs_fraction=0.5), calib, TailorOptions(calib_batches=1, batch_size=8)
    )
    assert rep.pruned.macs <= 0.5 * rep.selected.macs
    assert rep.model(torch.rand(1, 3, SIZE, SIZE))["count"].shape == (1, 5)


def test_decomposing_beside_a_forward_pass_in_another_thread_breaks_neither() -> None:
    """A server runs a refinement beside a quick build: torch.fx tracing patches every module's call for
    the whole process, so a trace per build once failed the other thread's forward pass."""
    base = _unet()
    other = copy.deepcopy(base)
    x = torch.rand(1, 3, SIZE, SIZE)
    errors: list[BaseException] = []
    stop = threading.Event()

    def forward_passes() -> None:
        try:
            with torch.no_grad():
                while not stop.is_set():
                    other(x)
        except BaseException as exc:  # what the other build would have died of
            errors.append(exc)

    decompose(base, ["count"])  # the first trace of this structure (the engine does it at start)
    worker = threading.Thread(target=forward_passes)
    worker.start()
    try:
        for _ in range(30):
            slim = decompose(base, ["count"])
            assert _same(base.select(["count"]), slim)
    finally:
        stop.set()
        worker.join()
    assert errors == []
