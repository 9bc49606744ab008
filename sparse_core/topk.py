"""`topk` (top_k=k): each query attends to its k highest-scoring valid keys (exact)."""

from __future__ import annotations

import torch

from sparse_core.mode import Mode, Param
from sparse_core.spec import AttentionSpec


def topk_attention(q, k, v, spec: AttentionSpec, lengths: torch.Tensor | None = None):
    raise NotImplementedError  # kernel: see issue "sparse_core"


def topk_reference_mask(
    spec: AttentionSpec, scores: torch.Tensor, key_valid: torch.Tensor
) -> torch.Tensor:
    # `scores` already holds -inf at padded keys, so they rank last; k >= valid keys means dense.
    n = scores.shape[-1]
    if spec.top_k >= n:
        return torch.ones((), dtype=torch.bool, device=scores.device)
    chosen = scores.topk(spec.top_k, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, chosen, True)


MODE = Mode(
    name="topk",
    params=(Param("top_k", minimum=1, help="keys kept per query, by score"),),
    kernel=topk_attention,
    reference_mask=topk_reference_mask,
    description="each query keeps its top_k keys by score; O(n²) scores in chunks, O(chunk·n) memory",
)
