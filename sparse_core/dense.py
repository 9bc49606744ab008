"""`dense`: every query attends to every valid key. SDPA (FlashAttention-style where available)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_core.mode import Mode, quadratic_cost
from sparse_core.pattern import BlockLists, MaskMod, Pattern, normalized
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


class Everything(Pattern):
    """Every pair: dense attention as a pattern (the oracle's, and a union's identity)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def mask_mod(self) -> MaskMod:
        def everything(b, h, q_idx, kv_idx):
            return (q_idx >= 0) | (kv_idx >= 0)

        return everything

    def key_blocks(self, size: int, blocks: int) -> BlockLists:
        ids = torch.arange(blocks, device=self.device).expand(blocks, blocks)
        return normalized(size, ids[None, None], torch.ones_like(ids, dtype=torch.bool)[None, None])


def dense_pattern(spec: AttentionSpec, lengths, q, k) -> Pattern:
    return Everything(q.device)


MODE = Mode(
    name="dense",
    params=(),
    kernel=dense_attention,
    cost=quadratic_cost,
    pattern=dense_pattern,
    description="every query attends to every key; O(n²)",
    pairwise=True,
)
