"""Multi-head attention under channel pruning: which embeddings may shrink, and how to keep the rest
of the layer computing what it did.

torch-pruning removes any embedding channels of an `nn.MultiheadAttention` (the same rows of its
query, key and value projections and the out projection's rows and columns) and then re-splits the
embedding into `num_heads` equal heads. Unless every head loses the same positions, channels silently
move into another head. So groups.py treats the heads like GroupNorm's groups (position p of every
head leaves together), and after a removal `rescale_queries` multiplies the queries by
sqrt(new head_dim / old head_dim): attention divides its logits by sqrt(head_dim), and without this
every logit of a narrowed head would grow although the kept channels did not change.

A layer whose key / value widths differ from the query's (torch-pruning would shrink the query
projection's rows but not its inputs) is kept whole, with a log line.
"""

from __future__ import annotations

import logging
import math
import weakref

import torch
from torch import nn

logger = logging.getLogger(__name__)
# weak: an id() would be reused by a later module, which would then never be logged
_warned: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def prunable(m: nn.MultiheadAttention) -> bool:
    """Whether torch-pruning shrinks this layer's embedding consistently; logs once when it does not."""
    if m._qkv_same_embed_dim:
        return True
    if m not in _warned:
        _warned.add(m)
        logger.info(
            "keeping a MultiheadAttention whole (embed_dim %d, kdim %d, vdim %d): only layers whose key "
            "and value widths equal the embedding are pruned",
            m.embed_dim,
            m.kdim,
            m.vdim,
        )
    return False


def head_dims(modules: list[nn.Module]) -> dict[nn.MultiheadAttention, int]:
    return {m: m.head_dim for m in modules if isinstance(m, nn.MultiheadAttention)}


@torch.no_grad()
def rescale_queries(before: dict[nn.MultiheadAttention, int]) -> None:
    """Keep each narrowed layer's attention logits: q * sqrt(new head_dim / old head_dim)."""
    for m, old in before.items():
        if m.head_dim == old or m.in_proj_weight is None:
            continue
        factor = math.sqrt(m.head_dim / old)
        m.in_proj_weight[: m.embed_dim] *= factor
        if m.in_proj_bias is not None:
            m.in_proj_bias[: m.embed_dim] *= factor
