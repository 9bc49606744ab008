"""CUDA paths: kernels on the GPU against the CPU oracle (skipped without a GPU). The
FlexAttention block masks used there are also checked on CPU, in test_flex.py."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from sparse_core import AttentionSpec, attend, reference_attend
from sparse_core.flex import compiled_flex_attention, flex_pattern
from sparse_core.patterns import Band
from tests.sparse_core.helpers import (
    SIZES,
    TOLERANCE,
    assert_close_on_valid_rows,
    clear_choice_rows,
    clear_threshold_rows,
    make_lengths,
    make_qkv,
)
from tests.sparse_core.test_flex import MIXED, WARM_UP

SPECS = [
    AttentionSpec("block", block_size=16),
    AttentionSpec("sliding_window", window=64),
    AttentionSpec("sliding_window", window=2),
    AttentionSpec("topk", top_k=16),
    AttentionSpec("dense"),
    AttentionSpec("global_window", window=64, global_tokens=3),
    AttentionSpec("dilated", window=16, dilation=3),
    AttentionSpec("strided", stride=30),
    AttentionSpec("fixed", block_size=50, summary=5),
    AttentionSpec("bigbird", block_size=32),
    AttentionSpec("routing", block_size=64, blocks=2),
    AttentionSpec("threshold", threshold=0.05),
    AttentionSpec("performer", features=64),
    AttentionSpec("nystrom", landmarks=16),
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
    cpu_lengths = None if lengths is None else lengths.cpu()
    rows = None
    if spec.mode == "topk":
        rows = clear_choice_rows(q.cpu(), k.cpu(), spec.top_k, cpu_lengths)
    elif spec.mode == "threshold":
        rows = clear_threshold_rows(q.cpu(), k.cpu(), spec.threshold, cpu_lengths)
    if spec.mode == "performer" and dtype == torch.float32:
        atol = 1e-3  # TF32-free float32 GEMMs still sum m·L products in another order
    assert_close_on_valid_rows(out.cpu(), expected, lengths, atol, rows=rows)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "spec",
    [
        AttentionSpec("sliding_window", window=2),
        AttentionSpec("sliding_window", window=512),
        AttentionSpec("global_window", window=512),
        AttentionSpec("bigbird", block_size=64),
        AttentionSpec("routing", block_size=128, blocks=3),
        AttentionSpec("dilated", window=128, dilation=2),
    ],
    ids=repr,
)
def test_cuda_flex_at_a_long_length_with_two_lengths(spec, dtype):
    """n = 4099 (33 FlexAttention blocks, the last short): the block lists are narrower than the
    row of blocks, and the compiled kernel skips what they leave out."""
    n = 4099
    q, k, v = make_qkv(n, dtype, device="cuda")
    lengths = make_lengths(n, "ragged", device="cuda")
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
        pattern = Band(1, window // 2, q.device)
        out = flex_pattern(q, k, v, pattern, lengths.cuda(), flex=flex)
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
