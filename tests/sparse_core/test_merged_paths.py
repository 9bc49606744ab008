"""The CPU paths that split a row's keys into disjoint sets and merge them by log-sum-exp
(global_window, strided, fixed) or run them on strided views (dilated), the merge itself, the
block-sparse executor on every pattern, and routing's top-k block choice."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_core import (
    MODES,
    AttentionSpec,
    attend,
    dilated,
    executor,
    fixed,
    global_window,
    reference_attend,
    strided,
)
from sparse_core._lse import merge_, sdpa_lse
from sparse_core.routing import best_columns
from tests.sparse_core.helpers import TOLERANCE, assert_close_on_valid_rows, make_qkv


def test_best_columns_is_a_stable_descending_sort_cut_short():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (3, 40, 50), generator=generator).double()  # many ties
    for count in (0, 1, 4, 49, 50):
        expected = scores.sort(dim=-1, descending=True, stable=True).indices[..., :count]
        assert torch.equal(best_columns(scores, count), expected), count


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merging_two_disjoint_key_sets_is_attention_over_their_union(dtype):
    q, k, v = make_qkv(37, dtype, batch=1)
    generator = torch.Generator().manual_seed(1)
    first = torch.rand(37, 37, generator=generator) < 0.3  # (rows, keys)
    second = ~first & (torch.rand(37, 37, generator=generator) < 0.5)
    first[0], second[1] = False, False  # a row empty in each part
    second[0, 5] = True
    first[2], second[2] = False, False  # and one empty in both
    out, lse = sdpa_lse(q, k, v, mask=first)
    part, part_lse = sdpa_lse(q, k, v, mask=second)
    assert bool((lse[..., 0] == -math.inf).all()) and bool((part_lse[..., 1] == -math.inf).all())
    merge_(out, lse, part, part_lse)
    union = first | second
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~union, -math.inf)
    expected = torch.softmax(scores, dim=-1).nan_to_num(0.0) @ v.double()
    torch.testing.assert_close(out.double(), expected, atol=TOLERANCE[dtype], rtol=0)
    torch.testing.assert_close(
        lse[union.any(-1).expand_as(lse)].double(),
        torch.logsumexp(scores, dim=-1)[union.any(-1).expand_as(lse)],
        atol=1e-4,
        rtol=0,
    )
    assert bool((lse[..., 2] == -math.inf).all()) and not out[..., 2, :].any()


@pytest.mark.parametrize(
    "spec",
    [
        AttentionSpec("global_window", window=8, global_tokens=30),
        AttentionSpec("global_window", window=40, global_tokens=7),
        AttentionSpec("strided", stride=3),
        AttentionSpec("strided", stride=17),
        AttentionSpec("fixed", block_size=16, summary=5),
        AttentionSpec("fixed", block_size=7, summary=1),
        AttentionSpec("dilated", window=6, dilation=4),
    ],
    ids=repr,
)
def test_merged_paths_in_small_chunks_match_the_reference(spec, monkeypatch):
    """Chunk sizes cut to a few rows, so that every loop of the CPU paths runs several times
    and the last piece is short."""
    monkeypatch.setattr(global_window, "MERGE_ROWS", 5)
    monkeypatch.setattr(global_window, "MASK_BUDGET", 60)
    monkeypatch.setattr(strided, "CLASS_ROWS", 6)
    monkeypatch.setattr(strided, "MASK_BUDGET", 40)
    monkeypatch.setattr(fixed, "CALL_ROWS", 40)
    monkeypatch.setattr(dilated, "COPY_BUDGET", 100)  # one head per call
    q, k, v = make_qkv(203, torch.float32)
    lengths = torch.tensor([203, 131])
    out = attend(q, k, v, spec, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


@pytest.mark.parametrize(
    "spec",
    [
        AttentionSpec("sliding_window", window=40),
        AttentionSpec("global_window", window=16, global_tokens=3),
        AttentionSpec("dilated", window=8, dilation=3),
        AttentionSpec("strided", stride=9),
        AttentionSpec("fixed", block_size=12, summary=2),
        AttentionSpec("bigbird", block_size=1, window_blocks=1, global_blocks=0, random_blocks=0),
    ],
    ids=repr,
)
@pytest.mark.parametrize("block", [None, 16])
def test_the_block_sparse_executor_runs_every_pattern(spec, block):
    """The CPU modes above run their own paths; the executor (bigbird and routing on CPU) must
    still run any pattern, partial blocks, band interiors as views and padding included."""
    q, k, v = make_qkv(203, torch.float32)
    lengths = torch.tensor([203, 131])
    pattern = MODES[spec.mode].pattern(spec, lengths, q, k)
    out = executor.run_pattern(q, k, v, pattern, lengths, block=block)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_scores_form_of_sdpa_lse_matches_the_cpu_flash_kernel(dtype):
    """Off CPU (CUDA, inputs FlexAttention does not take) sdpa_lse forms the scores itself: the
    CPU flash op it used everywhere does not exist there. Same output and ℓ, empty rows 0 and
    -inf, as the CPU kernel gives under the same mask."""
    from sparse_core._lse import _scores_lse

    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 9, 16, generator=generator).to(dtype) for _ in range(3))
    mask = torch.rand(2, 1, 9, 9, generator=generator) > 0.5
    mask[0, 0, 4] = False  # a row with no key
    expected, expected_lse = sdpa_lse(q, k, v, mask=mask)
    bias = torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))
    out, lse = _scores_lse(q, k, v, bias)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, expected, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(lse, expected_lse, atol=1e-4, rtol=1e-4)
    assert torch.equal(out[0, :, 4], torch.zeros_like(out[0, :, 4]))


@pytest.mark.parametrize("length", [256, 250])
def test_executor_blocks_of_the_models_layout_are_contiguous(length):
    """The model hands the kernels q, k and v as views of its packed rows ((n, H, D) in memory).
    Gathering blocks from such a view made index_select copy the whole sequence for every group
    (bigbird at 32k tokens: 4.2 s a call instead of 0.9); the executor's block view of a
    sequence must be one contiguous tensor whatever its input's layout, padded or not."""
    from sparse_core.executor import _blocks

    packed = torch.randn(256, 3, 16)  # (n, H, D), as the model's projections lay them out
    x = packed.transpose(0, 1)  # (H, n, D), a strided view
    blocks = _blocks(x, length, 64)
    assert blocks.is_contiguous()
    assert blocks.shape == (3, 4, 64, 16)
    torch.testing.assert_close(blocks.flatten(1, 2)[:, :length], x[:, :length])


@pytest.mark.parametrize("per_head", [False, True], ids=["shared", "per-head"])
@pytest.mark.parametrize("length", [200, 203], ids=["whole-blocks", "partial-block"])
def test_query_blocks_that_list_no_key_block_come_out_zero(per_head, length):
    """The executor does not zero-fill its output first: rows of a query block that lists no key
    block are zeroed explicitly (no mode lists none, but a pattern may), the padded rows too, and
    every other row is the softmax over its listed blocks."""
    from sparse_core.float64 import masked_softmax_attention
    from sparse_core.patterns import BlockTable

    size, blocks, heads = 8, 26, 3
    q, k, v = make_qkv(blocks * size, torch.float32, heads=heads)  # (2, 3, 208, D)
    lengths = torch.tensor([length, 131])
    generator = torch.Generator().manual_seed(5)
    table = torch.randint(0, blocks, (2, heads if per_head else 1, blocks, 3), generator=generator)
    table[..., 1:][torch.rand(table[..., 1:].shape, generator=generator) < 0.3] = -1
    empty = [3, 7, 20]
    table[:, :, empty] = -1
    table[1, :, 10] = -1  # one more, in the second sequence only
    torch.full_like(q, float("nan"))  # freed: likely the memory the output is given next
    out = executor.run_pattern(q, k, v, BlockTable(size, table), lengths)
    for b, valid in enumerate(lengths.tolist()):
        assert (out[b, :, valid:] == 0).all()
        lists = table[b].expand(heads, -1, -1)  # (H, nb, 3)
        listed = torch.zeros(heads, blocks, blocks + 1, dtype=torch.bool)
        listed.scatter_(-1, torch.where(lists >= 0, lists, blocks), True)
        allowed = listed[..., :blocks].repeat_interleave(size, 1).repeat_interleave(size, 2)
        allowed = allowed[:, :valid, :valid]  # (H, L, L)
        nothing = ~allowed.any(dim=-1)  # (H, L): rows of blocks listing no valid key
        assert nothing[
            :,
            [
                row
                for block in empty
                for row in range(block * size, block * size + size)
                if row < valid
            ],
        ].all()
        expected = masked_softmax_attention(
            *(t[b, :, :valid].double() for t in (q, k, v)), allowed
        ).nan_to_num(0.0)
        got = out[b, :, :valid]
        assert (got[nothing] == 0).all()
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
