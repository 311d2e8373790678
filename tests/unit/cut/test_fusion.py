"""Fusion rules on hand-checkable score matrices."""

from __future__ import annotations

import pytest
import torch

from edgecut.server.cut.fusion import fuse, percentiles

# Three tasks' scores over 6 channels.
S = torch.tensor(
    [
        [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
        [1.0, 6.0, 5.0, 2.0, 4.0, 3.0],
        [6.0, 1.0, 5.0, 4.0, 2.0, 3.0],
    ]
)


def keeps(fused: torch.Tensor, k: int) -> set[int]:
    return set(torch.argsort(fused, descending=True, stable=True)[:k].tolist())


def top(row: torch.Tensor, k: int) -> set[int]:
    return set(torch.argsort(row, descending=True, stable=True)[:k].tolist())


def test_percentiles_rank_within_each_task() -> None:
    p = percentiles(torch.tensor([[3.0, 1.0, 2.0]]))
    assert p.tolist() == [[1.0, pytest.approx(1 / 3), pytest.approx(2 / 3)]]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_vote_with_two_tasks_is_the_intersection_of_top_k(k: int) -> None:
    fused = fuse("vote", S[:2])
    kept = {c for c in range(6) if fused[c] > 1 - k / 6 + 1e-9}
    assert kept == top(S[0], k) & top(S[1], k)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_vote_with_three_tasks_is_the_majority_of_top_k(k: int) -> None:
    fused = fuse("vote", S)
    kept = {c for c in range(6) if fused[c] > 1 - k / 6 + 1e-9}
    tops = [top(S[t], k) for t in range(3)]
    assert kept == {c for c in range(6) if sum(c in t for t in tops) >= 2}


@pytest.mark.parametrize("k", [2, 3])
def test_union_keeps_what_any_task_keeps(k: int) -> None:
    fused = fuse("union", S)
    kept = {c for c in range(6) if fused[c] > 1 - k / 6 + 1e-9}
    assert kept == top(S[0], k) | top(S[1], k) | top(S[2], k)


def test_single_task_vote_keeps_its_own_ranking() -> None:
    # The guard: with one task the vote threshold is 1, so the trunk is ranked, never emptied.
    fused = fuse("vote", S[:1])
    assert torch.argsort(fused, descending=True).tolist() == [0, 1, 2, 3, 4, 5]


def test_normalisation_stops_a_large_loss_scale_dominating() -> None:
    scaled = torch.stack([S[0] * 1000.0, S[1]])
    assert torch.allclose(fuse("mean", scaled), fuse("mean", torch.stack([S[0], S[1]])))


def test_priorities_weight_the_mean() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert fuse("mean", a, torch.tensor([3.0, 1.0])).argmax() == 0
    assert fuse("mean", a, torch.tensor([1.0, 3.0])).argmax() == 1


def test_owned_channels_ranked_by_their_task_alone() -> None:
    # Channel 0 belongs to task 1's head: task 0 gives it nothing, the intersection must not kill it.
    s = torch.tensor([[0.0, 2.0, 1.0], [9.0, 1.0, 2.0]])
    fused = fuse("intersection", s, owner=[1, None, None])
    assert fused[0] == percentiles(s)[1, 0] == 1.0


def test_unknown_rule_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown fusion 'nope'"):
        fuse("nope", S)
