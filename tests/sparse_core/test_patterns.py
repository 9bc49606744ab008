"""Block lists against the predicate they come from: every block holding an allowed pair is
listed, blocks listed as full hold only allowed pairs, nothing twice, and the lists stay sparse.
Checked for every mask mode at several block sizes (the CPU executor's and FlexAttention's)."""

from __future__ import annotations

import pytest
import torch

from sparse_core import MODES, AttentionSpec
from sparse_core.pattern import restrict_to_lengths
from tests.sparse_core.helpers import make_qkv

SPECS = [
    AttentionSpec("dense"),
    AttentionSpec("block", block_size=1),
    AttentionSpec("block", block_size=48),
    AttentionSpec("sliding_window", window=2),
    AttentionSpec("sliding_window", window=300),
    AttentionSpec("global_window", window=64, global_tokens=1),
    AttentionSpec("global_window", window=2, global_tokens=130),
    AttentionSpec("dilated", window=6, dilation=5),
    AttentionSpec("dilated", window=64, dilation=1),
    AttentionSpec("strided", stride=1),
    AttentionSpec("strided", stride=7),
    AttentionSpec("strided", stride=200),
    AttentionSpec("fixed", block_size=10, summary=3),
    AttentionSpec("fixed", block_size=200, summary=200),
    AttentionSpec("bigbird", block_size=16),
    AttentionSpec(
        "bigbird", block_size=5, window_blocks=1, global_blocks=0, random_blocks=7, seed=9
    ),
    AttentionSpec("bigbird", block_size=100, window_blocks=5, global_blocks=1, random_blocks=2),
    AttentionSpec("routing", block_size=16, blocks=3),
    AttentionSpec("routing", block_size=200, blocks=1),
]


def listed_matrix(indices: torch.Tensor, blocks: int) -> torch.Tensor:
    """(B, H, nq, width) lists -> (B, H, nq, blocks) times each key block is listed."""
    target = torch.where(indices >= 0, indices, blocks)  # unlisted slots -> a spare column
    counts = torch.zeros(*indices.shape[:-1], blocks + 1, dtype=torch.int64)
    counts.scatter_add_(-1, target, torch.ones_like(target))
    return counts[..., :blocks]


# (n, block size): the executor's 64, FlexAttention's 128, and 16 (finer than some patterns'
# own blocks, coarser than others')
SHAPES = [(97, 64), (700, 16), (700, 64), (700, 128)]


@pytest.mark.parametrize(("n", "size"), SHAPES)
@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_block_lists_cover_the_predicate_and_full_means_full(spec, n, size):
    q, k, _ = make_qkv(n, torch.float32)
    lengths = torch.tensor([n, max(1, n // 3)])
    pattern = MODES[spec.mode].pattern(spec, lengths, q, k)
    blocks = -(-n // size)
    lists = restrict_to_lengths(pattern.key_blocks(size, blocks), lengths)
    listed = listed_matrix(lists.indices, blocks)  # (B, H', nq, nk)
    full = listed_matrix(torch.where(lists.full, lists.indices, -1), blocks).bool()
    assert listed.max() <= 1, "a key block listed twice"

    padded = blocks * size
    rows = torch.arange(padded)
    allowed = pattern.mask_mod()(
        torch.arange(2)[:, None, None, None],
        torch.arange(q.shape[1])[None, :, None, None],
        rows[None, None, :, None],
        rows[None, None, None, :],
    ).expand(2, q.shape[1], padded, padded)
    valid = rows[None, :] < lengths[:, None]  # (B, padded)
    shape = (2, q.shape[1], blocks, size, blocks, size)
    needed = (allowed & valid[:, None, :, None] & valid[:, None, None, :]).view(shape)
    some = needed.any(dim=5).any(dim=3)  # (B, H, nq, nk)
    beyond = rows >= n  # rows and keys that do not exist count as allowed
    every = (allowed | beyond[:, None] | beyond[None, :]).view(shape).all(dim=5).all(dim=3)
    heads = listed.shape[1]
    assert not (some[:, :heads] & ~listed.bool()).any(), "a block holding allowed pairs is unlisted"
    assert not (full & ~every[:, :heads]).any(), "a block listed as full holds disallowed pairs"


@pytest.mark.parametrize(
    ("spec", "keys_per_query"),
    [
        (AttentionSpec("sliding_window", window=512), 512 + 2 * 64),
        (AttentionSpec("global_window", window=512, global_tokens=1), 512 + 3 * 64),
        (AttentionSpec("dilated", window=64, dilation=4), 256 + 2 * 64),
        (AttentionSpec("bigbird", block_size=64), 8 * 64),
        (AttentionSpec("routing", block_size=64, blocks=4), 5 * 64),
        (AttentionSpec("strided", stride=512), 2 * 512 + 2 * 64 + 2 * 64 * 8192 // 512 + 128),
    ],
)
def test_lists_stay_sparse_at_a_long_length(spec, keys_per_query):
    """n = 8192 at the executor's 64-blocks: the lists of non-global query blocks hold the keys
    the rule needs, rounded out to blocks, not the row of 128 blocks."""
    n, size = 8192, 64
    q, k, _ = make_qkv(n, torch.float32, batch=1, heads=1)
    lengths = torch.tensor([n])
    pattern = MODES[spec.mode].pattern(spec, lengths, q, k)
    lists = restrict_to_lengths(pattern.key_blocks(size, n // size), lengths)
    counts = lists.counts()[..., 2:]  # past BigBird's two global query blocks
    assert int(counts.max()) * size <= keys_per_query
