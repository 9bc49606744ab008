"""CUDA paths: kernels on the GPU against the CPU oracle (skipped without a GPU), and the
FlexAttention block mask used there, checked on CPU through eager flex_attention."""

from __future__ import annotations

import warnings

import pytest
import torch

from sparse_core import AttentionSpec, attend, reference_attend
from sparse_core._flex_window import flex_sliding_window
from tests.sparse_core.helpers import (
    SIZES,
    TOLERANCE,
    assert_close_on_valid_rows,
    clear_choice_rows,
    make_lengths,
    make_qkv,
)

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


@pytest.mark.parametrize("lengths_kind", ["none", "ragged"])
@pytest.mark.parametrize("n", [1, 97, 300])
@pytest.mark.parametrize("window", [2, 64, 1024])
def test_flex_block_mask_matches_reference_on_cpu(window, n, lengths_kind):
    """The BlockMask's kv-block lists plus mask_mod give exactly the sliding-window pattern."""
    q, k, v = make_qkv(n, torch.float32)
    lengths = make_lengths(n, lengths_kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex_attention warns that it is not compiled
        out = flex_sliding_window(q, k, v, window // 2, lengths, compiled=False)
    spec = AttentionSpec("sliding_window", window=window)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])
