"""The FlexAttention sliding-window path (CUDA's), checked on CPU: its BlockMask's block lists,
eager flex_attention with that mask against the oracle, and how many graphs dynamo compiles."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch.nn.attention.flex_attention import flex_attention

from sparse_core import AttentionSpec, reference_attend
from sparse_core._flex_window import (
    BLOCK,
    compiled_flex_attention,
    flex_sliding_window,
    window_block_mask,
)
from tests.sparse_core.helpers import (
    TOLERANCE,
    assert_close_on_valid_rows,
    make_lengths,
    make_qkv,
)


def listed_blocks(counts: torch.Tensor, indices: torch.Tensor, blocks: int) -> torch.Tensor:
    """(B, 1, nb) counts and (B, 1, nb, width) indices -> (B, nb, blocks): times each kv block is
    listed for each query block."""
    slots = torch.arange(indices.shape[-1]) < counts[..., None].long()  # (B, 1, nb, width)
    target = torch.where(slots, indices.long(), blocks)  # unlisted slots -> a spare column
    dense = torch.zeros(*indices.shape[:-1], blocks + 1, dtype=torch.int64)
    dense.scatter_add_(-1, target, torch.ones_like(target))
    return dense[:, 0, :, :blocks]


def block_truth(n: int, half: int, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, nb, nb) bool each: some allowed pair in the block pair; every pair allowed (rows past n
    do not exist and count as allowed), from the plain definition over all n² pairs."""
    blocks = -(-n // BLOCK)
    rows = torch.arange(blocks * BLOCK, dtype=torch.int32)[:, None]
    cols = torch.arange(blocks * BLOCK, dtype=torch.int32)[None, :]
    allowed = ((rows - cols).abs() <= half) & (cols < lengths[:, None, None]) & (rows < n)
    shape = (lengths.shape[0], blocks, BLOCK, blocks, BLOCK)
    some = allowed.view(shape).any(dim=4).any(dim=2)
    every = (allowed | (rows >= n)).view(shape).all(dim=4).all(dim=2)
    return some, every


@pytest.mark.parametrize("lengths_kind", ["none", "ragged"])
@pytest.mark.parametrize("window", [2, 64, 512, 8192])
@pytest.mark.parametrize("n", [1000, 4096, 4099])
def test_block_mask_lists_every_needed_block_and_stays_sparse(n, window, lengths_kind):
    half = window // 2
    lengths = torch.full((2,), n) if lengths_kind == "none" else make_lengths(n, lengths_kind)
    mask = window_block_mask(half, lengths, n)
    blocks = -(-n // BLOCK)
    partial = listed_blocks(mask.kv_num_blocks, mask.kv_indices, blocks)
    full = listed_blocks(mask.full_kv_num_blocks, mask.full_kv_indices, blocks)
    some, every = block_truth(n, half, lengths)

    assert (partial + full).max() <= 1, "a kv block listed twice, or both partial and full"
    listed = (partial + full).bool()
    assert not (some & ~listed).any(), "a block holding allowed pairs is not listed"
    assert not (full.bool() & ~every).any(), "a block listed as full holds disallowed pairs"
    if half >= 2 * BLOCK - 1:
        assert full.any(), "blocks wholly inside the window should skip mask_mod"

    bound = 1 + 2 * math.ceil(half / BLOCK)
    per_query_block = mask.kv_num_blocks + mask.full_kv_num_blocks  # (B, 1, nb)
    assert int(per_query_block.max()) <= bound
    assert mask.kv_indices.shape[-1] == mask.full_kv_indices.shape[-1] == min(blocks, bound)
    if blocks > bound:  # a long sequence: the lists are narrower than the row of blocks
        assert mask.kv_indices.shape[-1] < blocks


def run_eager(q, k, v, half, lengths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex_attention warns that it is not compiled
        return flex_sliding_window(q, k, v, half, lengths, flex=flex_attention)


@pytest.mark.parametrize("lengths_kind", ["none", "ragged"])
@pytest.mark.parametrize("n", [1, 97, 300, 1000])
@pytest.mark.parametrize("window", [2, 64, 512, 1024])
def test_eager_flex_with_the_block_mask_matches_reference(window, n, lengths_kind):
    """The BlockMask's mask_mod (eager flex evaluates it everywhere) is the sliding window."""
    q, k, v = make_qkv(n, torch.float32)
    lengths = make_lengths(n, lengths_kind)
    out = run_eager(q, k, v, window // 2, lengths)
    spec = AttentionSpec("sliding_window", window=window)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


@pytest.mark.parametrize("window", [2, 64, 512])
def test_eager_flex_at_a_long_length_with_two_lengths(window):
    """n = 4099 (33 blocks, the last one short), batch 2 of lengths n and n/3."""
    n = 4099
    q, k, v = make_qkv(n, torch.float32)
    lengths = make_lengths(n, "ragged")
    out = run_eager(q, k, v, window // 2, lengths)
    spec = AttentionSpec("sliding_window", window=window)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


# (batch, n, window): mixed batch sizes, lengths (multiples of 128 or not) and windows.
WARM_UP = [(2, 1000, 64), (1, 1000, 512)]  # one batch > 1, one batch of 1: no size coincidences
MIXED = [
    (3, 517, 2),
    (4, 260, 30),
    (5, 700, 256),
    (1, 129, 6),
    (2, 384, 100),
    (6, 200, 2),
    (1, 900, 1024),
    (2, 129, 4000),
    (3, 640, 300),
]


def test_mixed_shapes_and_windows_reuse_the_compiled_graphs():
    """Dynamo compiles one graph for batch 1 and one for larger batches (it specializes size 1),
    then no more for new lengths or windows: half-width and lengths reach the kernel as tensors
    and sizes are dynamic. Recompiling per shape would, after torch's recompile limit, fall back to
    the unfused implementation that materializes n² scores. The eager backend stands in for
    inductor on CPU; the CUDA test runs inductor."""
    counter = CompileCounter()
    flex = compiled_flex_attention(counter)
    heads = 4
    for seed, (batch, n, window) in enumerate(WARM_UP + MIXED):
        generator = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(batch, heads, n, 16, generator=generator) for _ in range(3))
        lengths = torch.randint(1, n + 1, (batch,), generator=generator)
        lengths[0] = n
        out = flex_sliding_window(q, k, v, window // 2, lengths, flex=flex)
        spec = AttentionSpec("sliding_window", window=window)
        expected = reference_attend(q, k, v, spec, lengths)
        assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])
        if seed == len(WARM_UP) - 1:
            assert counter.frame_count == 2
    assert counter.frame_count == 2, "a new length or window recompiled flex_attention"
