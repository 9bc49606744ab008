"""CUDA paths: kernels on the GPU against the CPU oracle (skipped without a GPU). The
FlexAttention block mask used there is also checked on CPU, in test_flex_window.py."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from sparse_core import AttentionSpec, attend, reference_attend
from sparse_core._flex_window import compiled_flex_attention, flex_sliding_window
from tests.sparse_core.helpers import (
    SIZES,
    TOLERANCE,
    assert_close_on_valid_rows,
    clear_choice_rows,
    make_lengths,
    make_qkv,
)
from tests.sparse_core.test_flex_window import MIXED, WARM_UP

SPECS = [
    AttentionSpec("block", block_size=16),
    AttentionSpec("sliding_window", window=64),
    AttentionSpec("sliding_window", window=2),
    AttentionSpec("topk", top_k=16),
    AttentionSpec("dense"),
]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lengths_kind", ["none", "ragged"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_cuda_kernel_matches_reference(spec, n, lengths_kind, dtype):
    q, k, v = make_qkv(n, dtype, device="cuda")
    lengths = make_lengths(n, lengths_kind, device="cuda")
    out = attend(q, k, v, spec, lengths)
    assert out.device.type == "cuda"
    expected = reference_attend(
        q.cpu(), k.cpu(), v.cpu(), spec, None if lengths is None else lengths.cpu()
    )
    atol = TOLERANCE[dtype] if dtype != torch.float32 else 2e-4  # TF32-free, but other reductions
    if spec.mode == "topk":
        rows = clear_choice_rows(
            q.cpu(), k.cpu(), spec.top_k, None if lengths is None else lengths.cpu()
        )
        assert_close_on_valid_rows(out.cpu(), expected, lengths, atol, rows=rows)
    else:
        assert_close_on_valid_rows(out.cpu(), expected, lengths, atol)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("window", [2, 64, 512])
def test_cuda_flex_window_at_a_long_length_with_two_lengths(window, dtype):
    """n = 4099 (33 FlexAttention blocks, the last short): the block lists are narrower than the
    row of blocks, and the compiled kernel skips what they leave out."""
    n = 4099
    q, k, v = make_qkv(n, dtype, device="cuda")
    lengths = make_lengths(n, "ragged", device="cuda")
    spec = AttentionSpec("sliding_window", window=window)
    out = attend(q, k, v, spec, lengths)
    expected = reference_attend(q.cpu(), k.cpu(), v.cpu(), spec, lengths.cpu())
    assert_close_on_valid_rows(out.cpu(), expected, lengths.cpu(), TOLERANCE[dtype])


@pytest.mark.cuda
@cuda
def test_cuda_mixed_shapes_and_windows_reuse_the_compiled_graphs():
    """The CPU test's sequence, compiled by inductor: one graph for batch 1, one for larger."""
    counter = CompileCounterWithBackend("inductor")
    flex = compiled_flex_attention(counter)
    for seed, (batch, n, window) in enumerate(WARM_UP + MIXED):
        generator = torch.Generator().manual_seed(seed)
        q, k, v = (
            torch.randn(batch, 4, n, 16, generator=generator).to("cuda", torch.float16)
            for _ in range(3)
        )
        lengths = torch.randint(1, n + 1, (batch,), generator=generator)
        lengths[0] = n
        out = flex_sliding_window(q, k, v, window // 2, lengths.cuda(), flex=flex)
        spec = AttentionSpec("sliding_window", window=window)
        expected = reference_attend(q.cpu(), k.cpu(), v.cpu(), spec, lengths)
        assert_close_on_valid_rows(out.cpu(), expected, lengths, TOLERANCE[torch.float16])
    assert counter.frame_count == 2, "a new length or window recompiled flex_attention"


@pytest.mark.cuda
@cuda
def test_cuda_sliding_window_with_heads_smaller_than_flex_supports():
    """head_dim 8: inductor's flex kernel needs 16, so the tiled path runs."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 1000, 8, generator=generator) for _ in range(3))
    lengths = torch.tensor([1000, 333])
    spec = AttentionSpec("sliding_window", window=64)
    out = attend(q.cuda(), k.cuda(), v.cuda(), spec, lengths.cuda())
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out.cpu(), expected, lengths, 2e-4)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_block_size_one_beyond_the_grid_limit(dtype):
    """block_size 1 at n = 8192 with 12 heads: 98304 SDPA heads, over CUDA's 65535 grid cap.
    Each query attends to itself alone, so the output is v on every valid row."""
    n, heads = 8192, 12
    generator = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, heads, n, 32, generator=generator).to("cuda", dtype) for _ in range(3)
    )
    lengths = torch.tensor([n, 5000], device="cuda")
    out = attend(q, k, v, AttentionSpec("block", block_size=1), lengths)
    assert_close_on_valid_rows(out, v, lengths, TOLERANCE[dtype])
