"""Garg et al.'s iterative pruning and the re-initialise-and-retrain comparison, on a small model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgecut.server.cut.iterative import IterativeOptions, iterative_prune, retrain
from edgecut.server.cut.methods import METHODS
from edgecut.server.cut.prune import measure
from edgecut.server.mtl.evaluate import evaluate


def _head_widths(model) -> list[int]:
    """Output channels of every head layer (their inputs shrink with the trunk's outputs)."""
    return [m.weight.shape[0] for m in model.heads.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("criterion", ["garg-taylor", "cosprune"])
def test_iterative_pruning_removes_trunk_filters_on_schedule(criterion, trained_small, scenes) -> None:
    model = copy.deepcopy(trained_small.select(["seg", "depth"]))
    heads_before = _head_widths(model)
    opts = IterativeOptions(
        criterion=criterion, rounds=3, remove_per_round=4, every=2, record_every=1, batch_size=16
    )
    res = iterative_prune(model, scenes, scenes, opts)
    assert [p.round for p in res.points] == [0, 1, 2, 3]
    assert [p.steps for p in res.points] == [2, 4, 6, 8] and opts.steps == 8  # an interval after each cut
    assert [p.channels_removed for p in res.points] == [0, 4, 8, 12]
    # Coupled channels (residual adds) take a filter from each conv they couple.
    assert all(p.filters_removed >= p.channels_removed for p in res.points)
    params = [p.size.params for p in res.points]
    assert params == sorted(params, reverse=True) and params[-1] < params[0]
    assert _head_widths(model) == heads_before  # only trunk filters go
    assert set(res.points[-1].metrics) == {"seg", "depth"}
    # Each point keeps its own architecture, independent of the model pruned further afterwards.
    assert [measure(p.architecture, 32) for p in res.points] == [p.size for p in res.points]


def test_each_configuration_is_evaluated_after_its_training_interval(trained_small, scenes) -> None:
    """As Garg's code records it: cut, train for `every` iterations, evaluate just before the next cut."""
    model = copy.deepcopy(trained_small.select(["seg", "depth"]))
    just_cut: dict[int, dict[str, torch.Tensor]] = {}

    def after_cut(rnd: int, _size: object) -> None:
        just_cut[rnd] = {k: v.clone() for k, v in model.state_dict().items()}

    opts = IterativeOptions(rounds=2, remove_per_round=4, every=3, record_every=1, batch_size=16, lr=1e-3)
    res = iterative_prune(model, scenes, scenes, opts, on_round=after_cut)
    for p in res.points[1:]:
        recorded = p.architecture.state_dict()
        cut = just_cut[p.round]
        assert {k: v.shape for k, v in recorded.items()} == {k: v.shape for k, v in cut.items()}
        assert not torch.equal(recorded["trunk.stem.0.weight"], cut["trunk.stem.0.weight"])  # trained since
        assert p.metrics == evaluate(p.architecture, p.architecture.task_specs, scenes)


def test_every_trunk_layer_keeps_at_least_five_filters(trained_small, scenes) -> None:
    model = copy.deepcopy(trained_small.select(["seg", "depth"]))
    opts = IterativeOptions(
        criterion="cosprune", rounds=1, remove_per_round=10_000, every=1, record_every=1, batch_size=16
    )
    iterative_prune(model, scenes, scenes, opts)
    widths = [m.out_channels for m in model.trunk.modules() if isinstance(m, nn.Conv2d)]
    assert min(widths) == 5
    assert METHODS["cosprune"].min_channels == 5


def test_retrain_reinitialises_the_same_architecture(trained_small, scenes) -> None:
    arch = copy.deepcopy(trained_small.select(["depth"]))
    before = {k: v.clone() for k, v in arch.state_dict().items()}
    model, metrics = retrain(arch, scenes, scenes, steps=1, lr=1e-3, batch_size=16)
    assert set(metrics) == {"depth"}
    w_new, w_old = model.get_parameter("trunk.stem.0.weight"), arch.get_parameter("trunk.stem.0.weight")
    assert w_new.shape == w_old.shape
    assert not torch.allclose(w_new, w_old, atol=1e-2)  # re-initialised, not fine-tuned
    assert all(torch.equal(before[k], v) for k, v in arch.state_dict().items())  # the input is untouched


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown criterion"):
        IterativeOptions(criterion="nope")
    with pytest.raises(ValueError, match=">= 1"):
        IterativeOptions(every=0)
