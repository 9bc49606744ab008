"""The modes that are not fixed masks: BigBird's random blocks and routing's chosen blocks are
deterministic; performer and nystrom approach dense attention as features / landmarks grow."""

from __future__ import annotations

import pytest
import torch

from sparse_core import AttentionSpec, attend
from sparse_core.random_blocks import random_blocks
from sparse_core.routing import routed_blocks
from tests.sparse_core.helpers import make_qkv


@pytest.mark.parametrize(
    ("blocks", "reach", "global_blocks", "count"),
    [(1, 1, 2, 3), (10, 1, 2, 3), (64, 0, 0, 64), (300, 2, 5, 7), (9, 1, 1, 64)],
)
def test_random_blocks_are_distinct_new_and_as_many_as_there_are(
    blocks, reach, global_blocks, count
):
    table = random_blocks(11, blocks, reach, global_blocks, count, torch.device("cpu"))
    assert table.shape == (blocks, count)
    for t in range(blocks):
        drawn = [s for s in table[t].tolist() if s >= 0]
        allowed = {
            s
            for s in range(blocks)
            if abs(t - s) <= reach or t < global_blocks or s < global_blocks
        }
        candidates = set(range(blocks)) - allowed
        assert len(drawn) == len(set(drawn)) == min(count, len(candidates))
        assert set(drawn) <= candidates
        assert table[t].tolist()[: len(drawn)] == drawn  # used slots first


def test_random_blocks_are_a_pure_function_of_seed_block_and_block_count():
    first = random_blocks(5, 200, 1, 2, 3, torch.device("cpu"))
    assert torch.equal(first, random_blocks(5, 200, 1, 2, 3, torch.device("cpu")))
    assert not torch.equal(first, random_blocks(6, 200, 1, 2, 3, torch.device("cpu")))
    # spread over the candidates: over 200 blocks, most key blocks get drawn by someone
    assert len(first[first >= 0].unique()) > 150


@pytest.mark.parametrize(
    "spec",
    [
        AttentionSpec("bigbird", block_size=16, seed=3),
        AttentionSpec("routing", block_size=16, blocks=3),
    ],
    ids=repr,
)
def test_bigbird_and_routing_are_deterministic_across_calls_and_batches(spec):
    q, k, v = make_qkv(500, torch.float32, batch=3)
    lengths = torch.tensor([500, 321, 77])
    first = attend(q, k, v, spec, lengths)
    assert torch.equal(first, attend(q, k, v, spec, lengths))
    alone = attend(q[1:2, :, :321], k[1:2, :, :321], v[1:2, :, :321], spec)
    assert torch.equal(first[1, :, :321], alone[0])


def test_another_seed_draws_other_bigbird_blocks():
    q, k, v = make_qkv(1000, torch.float32)
    outs = [attend(q, k, v, AttentionSpec("bigbird", block_size=16, seed=seed)) for seed in (0, 1)]
    assert not torch.allclose(outs[0], outs[1])


def test_routing_picks_the_blocks_with_the_largest_mean_scores_ties_to_the_lower():
    heads, size = 1, 4
    q = torch.zeros(heads, 16, 2)
    k = torch.zeros(heads, 16, 2)
    q[0, 0:4] = torch.tensor([1.0, 0.0])  # block 0's queries point along x
    k[0, 4:8] = torch.tensor([0.5, 0.0])  # block 1's keys score 0.5
    k[0, 8:12] = torch.tensor([2.0, 0.0])  # block 2's keys score 2
    k[0, 12:16] = torch.tensor([0.5, 0.0])  # block 3 ties block 1
    chosen = routed_blocks(q, k, size, 2)
    assert chosen[0, 0].tolist() == [0, 2, 1]  # own block, best, then the lower of the tie
    assert routed_blocks(q, k, size, 100).shape == (1, 4, 4)  # at most nb - 1 others


def dense(q, k, v):
    return (
        torch.softmax(q.double() @ k.double().transpose(-2, -1) / q.shape[-1] ** 0.5, -1)
        @ v.double()
    )


def relative_error(out, expected):
    return float((out.double() - expected).norm() / expected.norm())


def test_performer_error_to_dense_shrinks_as_features_grow():
    """Averaged over seeds: FAVOR+ is an unbiased estimator whose variance falls like 1/m."""
    q, k, v = (t * 0.5 for t in make_qkv(128, torch.float32, batch=1))
    expected = dense(q, k, v)
    errors = {
        m: sum(
            relative_error(
                attend(q, k, v, AttentionSpec("performer", features=m, seed=s)), expected
            )
            for s in range(4)
        )
        / 4
        for m in (8, 64, 1024)
    }
    assert errors[64] < errors[8] and errors[1024] < 0.5 * errors[64], errors


def test_nystrom_error_to_dense_shrinks_as_landmarks_grow_and_is_exact_at_the_length():
    """Smooth inputs (a random walk), as the hidden states of text are: segment means then
    stand for their tokens and more of them approximate better."""
    generator = torch.Generator().manual_seed(0)
    walk = torch.randn(3, 1, 2, 256, 16, generator=generator).cumsum(dim=-2) / 16
    q, k, v = walk
    expected = dense(q, k, v)
    errors = {
        m: relative_error(attend(q, k, v, AttentionSpec("nystrom", landmarks=m)), expected)
        for m in (2, 16, 128, 256)
    }
    assert errors[16] < errors[2] and errors[128] < errors[16], errors
    assert errors[256] < 1e-6, errors


@pytest.mark.parametrize(
    ("length", "size"), [(64, 8), (61, 8), (5, 8), (200, 200), (200, 1000), (1, 1)]
)
def test_routing_block_sums_are_the_float64_sums_of_each_block(length, size):
    """Whole blocks, a short last block, one block larger than the input; from a view of packed
    (n, H, D) rows as the model passes q and k, not a contiguous tensor."""
    from sparse_core.routing import block_sums

    packed = torch.randn(length + 3, 4, 16, generator=torch.Generator().manual_seed(length))
    x = packed.transpose(0, 1)[:, :length]  # (H, L, D), heads not outermost in memory
    sums = block_sums(x, length, size)
    blocks = -(-length // size)
    expected = torch.stack(
        [x[:, b * size : (b + 1) * size].double().sum(dim=1) for b in range(blocks)], dim=1
    )
    assert sums.dtype == torch.float64 and sums.shape == (4, blocks, 16)
    torch.testing.assert_close(sums, expected, rtol=1e-12, atol=1e-12)
