"""Issue 27: importance finds each layer's channel axis from the layer (a Linear on N x tokens x C
scores its C channels, not the tokens), and multi-head attention loses channels head by head."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

from edgecut.server.cut.attention import rescale_queries
from edgecut.server.cut.groups import Rules, layout
from edgecut.server.cut.importance import CRITERIA, ScoreInputs, out_channels, score
from edgecut.server.cut.objective import Objective
from edgecut.server.cut.tailor import TailorOptions, tailor
from edgecut.server.errors import BuildError
from edgecut.server.mtl import MultiTaskModel, build_model
from edgecut.server.mtl.data import Batch, TensorSamples
from edgecut.server.spec import Budget
from examples import GALLERY
from tests.unit.cut.test_gallery import CASES, LARGEST, MOOD, SIZE, gallery_model


def _batch() -> list[Batch]:
    return [{"image": torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))}]


@pytest.mark.parametrize("arch", sorted(CASES))
@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_every_layer_gets_one_score_per_output_channel(arch: str, criterion: str) -> None:
    model = gallery_model(arch)
    scores = score(criterion, ScoreInputs(model, _batch(), Objective(model.task_specs, "distill")))
    names = {m: n for n, m in model.named_modules()}
    for task, per in scores.items():
        for m, s in per.items():
            assert s.shape == (out_channels(m),), f"{arch} {criterion} {task}: {names[m]} {tuple(s.shape)}"


def test_a_token_linear_as_wide_as_the_token_count_is_scored_per_channel() -> None:
    """64 tokens of width 64: per-token scores have the right length, so only their meaning can show it.
    Permuting the Linear's output channels (and the next layer's inputs: the same function) must
    permute its scores the same way."""
    model = gallery_model("token-heads")
    fc1, fc2 = model.trunk.layer.mlp[0], model.trunk.layer.mlp[2]
    assert fc1.out_features == (SIZE // 4) ** 2  # the silent case: as many channels as tokens
    perm = torch.randperm(fc1.out_features, generator=torch.Generator().manual_seed(0))
    permuted = copy.deepcopy(model)
    with torch.no_grad():
        p1, p2 = permuted.trunk.layer.mlp[0], permuted.trunk.layer.mlp[2]
        p1.weight.copy_(fc1.weight[perm])
        p1.bias.copy_(fc1.bias[perm])
        p2.weight.copy_(fc2.weight[:, perm])
    x = _batch()[0]["image"]
    torch.testing.assert_close(permuted(x)["edges"], model(x)["edges"], atol=1e-5, rtol=1e-4)
    for criterion in ("taylor", "garg-taylor"):
        before = score(criterion, ScoreInputs(model, _batch(), Objective(model.task_specs, "distill")))
        after = score(criterion, ScoreInputs(permuted, _batch(), Objective(permuted.task_specs, "distill")))
        torch.testing.assert_close(after["edges"][p1], before["edges"][fc1][perm], rtol=1e-3, atol=1e-9)


def _attention_model() -> MultiTaskModel:
    torch.manual_seed(0)
    config, specs = CASES["mobilevit"]
    return build_model(GALLERY["mobilevit"], tasks=specs, input_size=SIZE, **config).eval()


def test_attention_heads_lose_the_same_positions() -> None:
    model = _attention_model()
    graph = tp.DependencyGraph().build_dependency(
        model, torch.rand(1, 3, SIZE, SIZE), output_transform=lambda o: list(o.values())
    )
    attn = model.trunk.vit.layers[0].attn
    head_dim = attn.head_dim
    group = graph.get_pruning_group(attn, tp.prune_multihead_attention_out_channels, [0])
    full = graph.get_pruning_group(
        attn, tp.prune_multihead_attention_out_channels, list(range(attn.embed_dim))
    )
    lay = layout(full, graph, {}, Rules())
    assert lay.units, "the embedding is prunable"
    for unit in lay.units:
        assert len(unit) == attn.num_heads
        assert {r % head_dim for r in unit} == {unit[0] % head_dim}  # one position, in every head
    assert len(group) > 1


def test_pruning_dead_embedding_positions_leaves_attention_unchanged() -> None:
    """Positions whose query / key / value / output weights are zero carry nothing: removing them (one
    per head) must not change the attention's output, which needs the query rescale."""
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    dead = [3, 7]  # position 3 of each 4-wide head
    with torch.no_grad():
        for block in range(3):
            attn.in_proj_weight[[block * 8 + d for d in dead]] = 0
            attn.in_proj_bias[[block * 8 + d for d in dead]] = 0
        attn.in_proj_weight[:, dead] = 0
        attn.out_proj.weight[:, dead] = 0
        attn.out_proj.weight[dead] = 0
        attn.out_proj.bias[dead] = 0
    x = torch.randn(2, 5, 8)
    want = attn(x, x, x, need_weights=False)[0]
    pruned = copy.deepcopy(attn)
    tp.prune_multihead_attention_out_channels(pruned, dead)
    rescale_queries({pruned: attn.head_dim})
    keep = [i for i in range(8) if i not in dead]
    got = pruned(x[..., keep], x[..., keep], x[..., keep], need_weights=False)[0]
    torch.testing.assert_close(got, want[..., keep], atol=1e-6, rtol=1e-5)


class _FunctionalTrunk(nn.Module):
    """A projection held as a bare parameter and applied with F.linear, which torch-pruning cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.proj = nn.Parameter(torch.randn(48, 32) * 0.1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        return (nn.functional.linear(tokens, self.proj).mean(1),)


class _PooledLinear(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(48, 32)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(feats[0])))


class _Functional(MultiTaskModel):
    def __init__(self) -> None:
        super().__init__([MOOD, LARGEST], SIZE)
        self.trunk = _FunctionalTrunk()
        self.heads = nn.ModuleDict({t.name: _PooledLinear(t.channels) for t in (MOOD, LARGEST)})

    def config(self) -> dict[str, object]:
        return {}


def test_a_parameter_used_outside_a_layer_is_named_when_pruning_breaks_on_it() -> None:
    torch.manual_seed(0)
    model = _Functional().eval()
    calib = TensorSamples({"image": torch.rand(8, 3, SIZE, SIZE)})
    with pytest.raises(BuildError, match=r"cannot follow trunk\.proj .*F\.linear"):
        tailor(
            model,
            ["mood", "largest"],
            Budget(macs_fraction=0.5),
            calib,
            TailorOptions(calib_batches=1, batch_size=8),
        )


def test_an_attention_embedding_channel_costs_its_projections_and_attention_products() -> None:
    """The per-MAC ranking counted no compute for attention (its output is a tuple, its projections
    are not called as modules); one embedding channel costs 8 x tokens x embed + 2 x tokens^2 MACs."""
    from edgecut.server.cut.cost import Costs

    model = _attention_model()
    attn = model.trunk.vit.layers[0].attn
    tokens = (SIZE // 8) ** 2
    e = attn.embed_dim
    assert Costs(model, SIZE).channel(attn, True, "macs") == tokens * (8 * e + 2 * tokens)


def test_a_sequence_first_attention_costs_as_much_as_a_batch_first_one() -> None:
    """nn.MultiheadAttention defaults to L x N x E: its positions are its tokens, not the batch of one."""
    from edgecut.server.cut.cost import Costs

    class Tokens(nn.Module):
        def __init__(self, batch_first: bool) -> None:
            super().__init__()
            self.batch_first = batch_first
            self.attn = nn.MultiheadAttention(16, 2, batch_first=batch_first)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.mean(1, keepdim=True).flatten(2).transpose(1, 2).expand(-1, -1, 16)  # N x L x E
            if not self.batch_first:
                t = t.transpose(0, 1)
            return self.attn(t, t, t)[0]

    first, seq = Tokens(True), Tokens(False)
    assert Costs(first, 8).positions[first.attn] == 64
    assert Costs(seq, 8).positions[seq.attn] == 64
