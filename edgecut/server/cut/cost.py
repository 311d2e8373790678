"""What a channel costs: the multiply-accumulates (MACs) and parameters that leave with it.

Removing root channel c of a group removes, in every layer of the group, one output channel (a
producer's filter: its MACs are the output positions times the filter size) or one input channel
(a consumer's slice of every filter). `Costs.of_group` adds these up per root channel; ranking by
importance per unit of this cost lets a MACs budget be met by removing the channels that buy the
most compute for the least loss, instead of the least important channels whatever they cost.

Spatial sizes are measured once by running the model (pruning channels never changes them).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch_pruning as tp
from torch import nn

CostKind = Literal["macs", "params"]
_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm)
_MEASURED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.MultiheadAttention, *_NORMS)


class Costs:
    def __init__(self, model: nn.Module, size: int) -> None:
        self.positions: dict[nn.Module, int] = {}

        def hook(m: nn.Module, _i: object, out: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
            if isinstance(out, tuple):  # attention: (output, weights); its positions are its tokens
                out = out[0]
            last = isinstance(m, nn.Linear | nn.LayerNorm | nn.MultiheadAttention)
            channels = out.shape[-1] if last else out.shape[1]
            # one image in: every other element is a position, whichever dim holds the batch (an
            # attention layer is sequence-first, L x N x E, unless batch_first)
            self.positions[m] = max(1, out.numel() // max(1, channels))

        hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _MEASURED)]
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()

    def channel(self, m: object, out_dim: bool, kind: CostKind) -> float:
        """The cost of one channel of layer `m`, along its output (`out_dim`) or input dimension."""
        if not isinstance(m, nn.Module) or m not in self.positions:
            return 0.0
        pos = self.positions[m]
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            k = int(torch.tensor(m.kernel_size).prod())
            depthwise = m.groups > 1 and m.groups == m.out_channels == m.in_channels
            if out_dim:
                per_filter = (m.in_channels // m.groups) * k
                return float(pos * per_filter if kind == "macs" else per_filter + (m.bias is not None))
            if depthwise:
                return 0.0  # its output item already counts the channel
            per_input = (m.out_channels // m.groups) * k
            return float(pos * per_input if kind == "macs" else per_input)
        if isinstance(m, nn.MultiheadAttention):
            # one embedding channel: 3 in-projection rows and a column, an out-projection row and a
            # column (pos x embed each), and its term in the logits and in the weighted values (pos x pos)
            e = m.embed_dim
            return float(pos * (8 * e + 2 * pos) if kind == "macs" else 8 * e + 4)
        if isinstance(m, nn.Linear):
            n = m.in_features if out_dim else m.out_features
            return float(pos * n if kind == "macs" else n + (out_dim and m.bias is not None))
        return float(2 * pos if kind == "macs" else 2)  # a norm's scale and shift

    def of_group(self, group: tp.dependency.Group, graph: tp.DependencyGraph, kind: CostKind) -> torch.Tensor:
        """Per root channel of `group`: the cost that leaves with it, summed over the group's layers."""
        out = torch.zeros(len(group[0].idxs), dtype=torch.float64)
        for item in group:
            c = self.channel(item.dep.target.module, graph.is_out_channel_pruning_fn(item.dep.handler), kind)
            if c:
                for r in item.root_idxs:
                    if r is not None:
                        out[int(r)] += c
        return out


def layer_costs(model: nn.Module, size: int) -> list[tuple[str, int, int]]:
    """(name, MACs, params) of every leaf layer with a cost, most MACs first."""
    was_training = model.training
    model.eval()
    try:
        _, _, flops, params = tp.utils.count_ops_and_params(
            model, torch.rand(1, 3, size, size), layer_wise=True
        )
    finally:
        model.train(was_training)
    rows = [
        (name, int(flops.get(m) or 0), int(params.get(m) or 0))
        for name, m in model.named_modules()
        if not list(m.children()) and (flops.get(m) or params.get(m))
    ]
    return sorted(rows, key=lambda r: (-r[1], -r[2]))
