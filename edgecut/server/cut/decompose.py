"""Decomposition (step 1 of CUT): keep the selected tasks' heads, and only the trunk they read.

The trunk returns a tuple of feature maps and every head receives all of it, so which trunk parts a
head needs is not declared anywhere: it is traced. One backward pass from the kept heads' outputs to
the trunk's outputs tells which positions of the tuple they read; torch.fx then traces the trunk, the
unread outputs are replaced by zeros of the same shape (a head may still read their *shape*), and dead
code elimination drops every layer that only fed them. A device with image-level tasks only thus gets
no dense decoder at all.

The slimmed model must give exactly the outputs of the unslimmed one on a test batch; when the trunk
cannot be traced (data-dependent Python control flow) or the check fails, the trunk is kept whole and
the pruner keeps the unread branch consistent instead (see prune.py).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

from edgecut.server.errors import EmptyTasksError
from edgecut.server.mtl.contract import MultiTaskModel, check_contract

logger = logging.getLogger(__name__)


def decompose(base: MultiTaskModel, tasks: Sequence[str]) -> MultiTaskModel:
    """Keep only the selected tasks' heads and the trunk parts they read; raises on unknown or empty task sets."""
    check_contract(base)
    chosen = list(dict.fromkeys(t.strip() for t in tasks if t.strip()))
    if not chosen:
        raise EmptyTasksError(f"no task selected: choose from {', '.join(base.task_names)}")
    return slim_trunk(base.select(chosen).eval())


def read_outputs(model: MultiTaskModel) -> tuple[list[int], list[torch.Size]]:
    """(positions of the trunk's outputs the heads read, the shape of every output at batch 1)."""
    leaves: list[torch.Tensor] = []

    def swap(_m: nn.Module, _i: object, out: object) -> object:
        feats = out if isinstance(out, tuple | list) else (out,)
        leaves.extend(f.detach().requires_grad_(f.is_floating_point()) for f in feats)
        if isinstance(out, list):
            return list(leaves)
        return tuple(leaves) if isinstance(out, tuple) else leaves[0]

    hook = model.trunk.register_forward_hook(swap)
    try:
        with torch.enable_grad():
            outputs = model(torch.rand(1, 3, model.input_size, model.input_size))
            total = sum((y.float().sum() for y in outputs.values()), torch.zeros(()))
            wanted = [f for f in leaves if f.requires_grad]
            grads = torch.autograd.grad(total, wanted, allow_unused=True) if wanted else ()
    finally:
        hook.remove()
    by_leaf = dict(zip((id(f) for f in wanted), grads, strict=True))
    read = [i for i, f in enumerate(leaves) if not f.requires_grad or by_leaf.get(id(f)) is not None]
    return read, [f.shape for f in leaves]


def slim_trunk(model: MultiTaskModel) -> MultiTaskModel:
    """`model` with every trunk layer that no head reads removed (in place), if any can be."""
    read, shapes = read_outputs(model)
    if len(read) == len(shapes):
        return model
    try:
        traced = traced_trunk(model.trunk)
    except Exception as exc:  # fx raises many kinds on untraceable Python
        logger.info("trunk of %s is not traceable (%s): keeping it whole", type(model).__name__, exc)
        return model
    graph = traced.graph
    out_node = next(n for n in graph.nodes if n.op == "output")
    results = out_node.args[0]
    if not isinstance(results, tuple | list) or len(results) != len(shapes):
        return model
    image = next(n for n in graph.nodes if n.op == "placeholder")
    with graph.inserting_before(out_node):
        batch = graph.call_method("size", (image, 0))
        replaced = [
            r if i in read else graph.call_method("new_zeros", (image, (batch, *shapes[i][1:])))
            for i, r in enumerate(results)
        ]
    out_node.args = (type(results)(replaced),)
    graph.eliminate_dead_code()
    traced.recompile()
    traced.delete_all_unused_submodules()
    before, after = _tensors(model.trunk), _tensors(traced)
    if after >= before:
        return model  # every layer still needed: keep the user's own module
    slim = copy.copy(model)
    slim._modules = dict(model._modules)
    slim.trunk = traced
    if not _same_outputs(model, slim):
        logger.warning("slimming the trunk of %s changed its outputs: keeping it whole", type(model).__name__)
        return model
    logger.info("decomposition dropped %d trunk tensors no kept head reads", len(before - after))
    model.trunk = traced
    return model


# torch.fx traces by patching nn.Module.__call__ for the whole process: a forward pass in another thread
# (a refinement beside a quick build) during a trace fails with "module is not installed as a submodule".
# So each trunk structure is traced once, under a lock (the engine does it at start, before any worker
# runs), and every later decomposition works on a copy of that graph, which patches nothing.
_TRACE_LOCK = threading.Lock()
_GRAPHS: dict[tuple[object, ...], fx.Graph | Exception] = {}


def _structure(m: nn.Module) -> tuple[object, ...]:
    return (
        tuple((n, type(c).__module__, type(c).__qualname__) for n, c in m.named_modules()),
        tuple((n, tuple(t.shape)) for n, t in (*m.named_parameters(), *m.named_buffers())),
    )


def traced_trunk(trunk: nn.Module) -> fx.GraphModule:
    """`trunk` as an fx GraphModule of its own (a fresh graph each call); raises what tracing raised."""
    key = _structure(trunk)
    with _TRACE_LOCK:
        graph = _GRAPHS.get(key)
        if graph is None:
            try:
                graph = fx.symbolic_trace(trunk).graph
            except Exception as exc:  # remembered: an untraceable trunk is not traced again per build
                graph = exc
            _GRAPHS[key] = graph
    if isinstance(graph, Exception):
        raise graph
    return fx.GraphModule(trunk, copy.deepcopy(graph))


def _tensors(m: nn.Module) -> set[int]:
    return {id(t) for t in (*m.parameters(), *m.buffers())}


@torch.no_grad()
def _same_outputs(a: MultiTaskModel, b: MultiTaskModel) -> bool:
    x = torch.rand(2, 3, a.input_size, a.input_size, generator=torch.Generator().manual_seed(0))
    ya, yb = a.eval()(x), b.eval()(x)
    return all(torch.equal(ya[t], yb[t]) for t in ya)
