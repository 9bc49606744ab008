"""Every fast kernel against the float64 oracle: odd sizes, padding, batch 2, extreme params."""

from __future__ import annotations

import pytest
import torch

from sparse_core import AttentionSpec, attend, block, reference_attend, threshold, topk
from tests.sparse_core.helpers import (
    HEAD_DIM,
    HEADS,
    SIZES,
    TOLERANCE,
    assert_close_on_valid_rows,
    clear_choice_rows,
    make_lengths,
    make_qkv,
)

# Parameter values per mode, extremes included; see `resolve` for the relative ones.
EXTREMES = {
    "block": ("block_size", [1, 16, "n-1", "2n"]),
    "sliding_window": ("window", [2, 64, "2n"]),
}


def resolve(value: int | str, n: int) -> int:
    """A parameter value: an int, or "n", "n-1" (at least 1), "2n" relative to the length."""
    if isinstance(value, int):
        return value
    return {"n": n, "n-1": max(1, n - 1), "2n": 2 * n + 2}[value]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lengths_kind", ["none", "ragged"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    ("mode", "value"),
    [(mode, value) for mode, (_, values) in EXTREMES.items() for value in values],
)
def test_structured_kernel_matches_reference(mode, value, n, lengths_kind, dtype):
    name, _ = EXTREMES[mode]
    spec = AttentionSpec(mode, **{name: resolve(value, n)})
    q, k, v = make_qkv(n, dtype)
    lengths = make_lengths(n, lengths_kind)
    out = attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(
        out, reference_attend(q, k, v, spec, lengths), lengths, TOLERANCE[dtype]
    )


@pytest.mark.parametrize("lengths_kind", ["none", "ragged"])
@pytest.mark.parametrize("n", [97, 1000])
@pytest.mark.parametrize("block_size", [1, 16])
def test_block_split_into_calls_of_at_most_max_grid_rows(monkeypatch, block_size, n, lengths_kind):
    """CUDA caps SDPA's heads axis (H·n/b here) at 65535; a tiny cap splits the call at test size,
    mask included, with a short last piece."""
    monkeypatch.setattr(block, "MAX_GRID_ROWS", 7)
    spec = AttentionSpec("block", block_size=block_size)
    q, k, v = make_qkv(n, torch.float32)
    lengths = make_lengths(n, lengths_kind)
    out = attend(q, k, v, spec, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


# SCATTER_RATIO values that force each way of weighting the values (see sparse_core.topk).
TOPK_PATHS = {"gather": 0, "scatter": 1 << 40}


@pytest.mark.parametrize("path", list(TOPK_PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lengths_kind", ["none", "ragged"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("top_k", [1, 2, 16, "n-1", "n"])
def test_topk_matches_reference(monkeypatch, top_k, n, lengths_kind, dtype, path):
    monkeypatch.setattr(topk, "SCATTER_RATIO", TOPK_PATHS[path])
    top_k = resolve(top_k, n)
    spec = AttentionSpec("topk", top_k=top_k)
    q, k, v = make_qkv(n, dtype)
    lengths = make_lengths(n, lengths_kind)
    out = attend(q, k, v, spec, lengths)
    rows = clear_choice_rows(q, k, top_k, lengths)
    assert rows.float().mean() > 0.95, "too many near-tied rows for the test to mean anything"
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[dtype], rows=rows)


@pytest.mark.parametrize("path", list(TOPK_PATHS))
@pytest.mark.parametrize("top_k", [3, 200])
def test_topk_over_many_chunks(monkeypatch, top_k, path):
    """Budgets lowered so that a few dozen query rows make a chunk: every chunk boundary, the
    reused score buffer and the last short chunk are exercised on both paths."""
    monkeypatch.setattr(topk, "SCATTER_RATIO", TOPK_PATHS[path])
    monkeypatch.setattr(topk, "SCORE_BUDGET", HEADS * 1000 * 37)  # 37 rows of H·n scores
    monkeypatch.setattr(topk, "PICK_BUDGET", HEADS * top_k * HEAD_DIM * 23)  # 23 rows of k·D
    spec = AttentionSpec("topk", top_k=top_k)
    q, k, v = make_qkv(1000, torch.float32)
    lengths = torch.tensor([1000, 613])
    out = attend(q, k, v, spec, lengths)
    rows = clear_choice_rows(q, k, top_k, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32], rows=rows)


@pytest.mark.parametrize("path", list(TOPK_PATHS))
@pytest.mark.parametrize("length", [129, 167, 240])
def test_topk_sequence_alone_equals_it_in_a_padded_batch(monkeypatch, length, path):
    """Exactly, not just closely: a rounding difference between the two could swap near-tied
    keys, and an embedding would then depend on the batch its input came in."""
    monkeypatch.setattr(topk, "SCATTER_RATIO", TOPK_PATHS[path])
    spec = AttentionSpec("topk", top_k=16)
    q, k, v = make_qkv(241, torch.float32, batch=3)
    lengths = torch.tensor([241, length, 200])
    batched = attend(q, k, v, spec, lengths)[1, :, :length]
    alone = attend(q[1:2, :, :length], k[1:2, :, :length], v[1:2, :, :length], spec)[0]
    assert torch.equal(batched, alone)


@pytest.mark.parametrize("mode", ["block", "sliding_window", "topk"])
def test_non_contiguous_inputs(mode):
    """Inputs as a model produces them: (B, n, H, D) projections viewed as (B, H, n, D)."""
    spec = AttentionSpec(
        mode,
        **{"block": {"block_size": 8}, "sliding_window": {"window": 6}, "topk": {"top_k": 5}}[mode],
    )
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in make_qkv(97, torch.float32))
    assert not q.is_contiguous()
    lengths = torch.tensor([97, 40])
    out = attend(q, k, v, spec, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


def test_block_takes_sdpa_output_in_any_layout(monkeypatch):
    """CUDA's memory-efficient SDPA returns (B, H·blocks, b, D) with b outermost in memory; the
    block kernel's unfold must not assume the contiguous layout CPU's kernel returns."""
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def sdpa_with_cuda_layout(q, k, v, attn_mask=None):
        out = sdpa(q, k, v, attn_mask=attn_mask)
        return out.transpose(1, 2).contiguous().transpose(1, 2)  # same values, b outermost

    monkeypatch.setattr(block.F, "scaled_dot_product_attention", sdpa_with_cuda_layout)
    q, k, v = make_qkv(97, torch.float32)
    lengths = make_lengths(97, "ragged")
    spec = AttentionSpec("block", block_size=16)
    out = attend(q, k, v, spec, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


def test_threshold_with_several_heads_per_chunk(monkeypatch):
    """A budget that holds a whole sequence's scores for two heads (the 1,000-token one: groups
    of 2, 2 and 1 of 5 heads) or all five (the 613-token one), as CUDA's budget does for
    shorter inputs: the grouped GEMMs and the last short group against the oracle."""
    from tests.sparse_core.helpers import clear_threshold_rows

    monkeypatch.setattr(threshold, "SCORE_BUDGET", 2 * 1000 * 1000 + 1)
    spec = AttentionSpec("threshold", threshold=0.05)
    q, k, v = make_qkv(1000, torch.float32, heads=5)
    lengths = torch.tensor([1000, 613])
    out = attend(q, k, v, spec, lengths)
    rows = clear_threshold_rows(q, k, spec.threshold, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32], rows=rows)
