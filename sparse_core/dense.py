"""`dense`: every query attends to every valid key. SDPA (FlashAttention-style where available)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_core.mode import Mode
from sparse_core.spec import AttentionSpec


def key_padding_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, 1, n) bool, True where the key is valid. O(B·n), never n²."""
    positions = torch.arange(n, device=lengths.device)
    return (positions < lengths[:, None])[:, None, None, :]


def sequence_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """SDPA on one sequence's (H, rows, D) tensors, given to it as a batch of one. On CPU,
    torch 2.13 runs 3-D inputs on a slower path than the same data in 4-D: in the tiled sliding
    window, whose edge pieces dominate short sequences, this took n=1,024, w=512 in bfloat16 from
    0.62× to 1.28× dense's speed (benchmarks/attention.py)."""
    return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)[0]


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Full softmax attention; padded keys (>= lengths[b]) are masked out."""
    n = k.shape[-2]
    if lengths is None or bool((lengths >= n).all()):
        return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_padding_mask(lengths, n))


def dense_reference_mask(
    spec: AttentionSpec, scores: torch.Tensor, key_valid: torch.Tensor
) -> torch.Tensor:
    return torch.ones((), dtype=torch.bool, device=scores.device)


MODE = Mode(
    name="dense",
    params=(),
    kernel=dense_attention,
    reference_mask=dense_reference_mask,
    description="every query attends to every key; O(n²)",
    pairwise=True,
)
